"""Shared fixtures: a real gateway on loopback per test module and backend, and clients on it.

Every test runs under asyncio and trio (the `anyio_backend` fixture). Every await that could
hang is bounded by `anyio.fail_after`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelbox import KernelClient, KernelGateway

# A secret in the test process's environment: kernels must never see it.
PARENT_SECRET_NAME = "KERNELBOX_TEST_PARENT_SECRET"
PARENT_SECRET_VALUE = "do-not-leak-4b1d"
INJECTED_ENV = {"KERNELBOX_INJECTED": "injected-value", "API_BASE": "http://127.0.0.1:9"}
START_TIMEOUT = 60


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
async def gateway(anyio_backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KernelGateway]:
    """One unsandboxed gateway on an ephemeral loopback port, shared by a module's tests."""
    os.environ[PARENT_SECRET_NAME] = PARENT_SECRET_VALUE
    working_dir = tmp_path_factory.mktemp("work")
    async with KernelGateway(host="127.0.0.1", port=0, env=INJECTED_ENV, working_dir=working_dir) as gw:
        yield gw


@pytest.fixture
async def client(gateway: KernelGateway, tmp_path: Path) -> AsyncIterator[KernelClient]:
    """A connected client with its own fresh kernel and images directory."""
    async with KernelClient(
        host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path / "images"
    ) as kc:
        yield kc
