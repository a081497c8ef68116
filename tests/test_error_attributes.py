"""Errors carry what callers need as attributes: the HTTP status, the available kernelspecs.

Real gateways on loopback; each test reads the attribute instead of parsing the message.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import httpx
import pytest

from kernelbox import (
    AuthenticationError,
    GatewayConnectionError,
    KernelClient,
    KernelDiedError,
    KernelGateway,
    KernelStartError,
)

pytestmark = pytest.mark.anyio


async def test_a_refused_token_carries_the_http_status(gateway: KernelGateway, tmp_path: Path) -> None:
    client = KernelClient(host=gateway.host, port=gateway.port, token="wrong", images_dir=tmp_path)
    with anyio.fail_after(10), pytest.raises(AuthenticationError) as info:
        await client.connect()
    assert info.value.status_code == 401
    assert info.value.url == client.base_url and info.value.kernel_id is None


async def test_an_unknown_kernelspec_lists_the_available_ones(gateway: KernelGateway, tmp_path: Path) -> None:
    client = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                          kernel_name="no-such-kernel", images_dir=tmp_path)
    with anyio.fail_after(30), pytest.raises(KernelStartError) as info:
        await client.connect()
    assert info.value.kernelspecs is not None and "python3" in info.value.kernelspecs
    assert info.value.kernelspecs == sorted(info.value.kernelspecs)
    assert info.value.status_code is not None and info.value.status_code >= 400
    assert not client.connected


async def test_the_kernel_limit_is_a_403_without_kernelspecs(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with KernelGateway(host="127.0.0.1", port=0, working_dir=tmp_path, max_kernels=1) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path):
                second = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path)
                with pytest.raises(KernelStartError, match="limit") as info:
                    await second.connect()
    assert info.value.status_code == 403
    assert info.value.kernelspecs is None


async def test_interrupting_a_deleted_kernel_carries_the_404(client: KernelClient) -> None:
    kernel_id = client.kernel_id
    headers = {"Authorization": f"token {client.token}"}
    with anyio.fail_after(30):
        async with httpx.AsyncClient(base_url=client.base_url, headers=headers, trust_env=False) as http:
            deleted = await http.delete(f"/api/kernels/{kernel_id}")
        assert deleted.status_code == 204  # the kernel is gone: only the gateway's answer is left
        with pytest.raises(KernelDiedError) as info:
            await client.interrupt()
    assert info.value.status_code == 404
    assert info.value.kernel_id == kernel_id


async def test_no_answer_at_all_has_no_status(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = KernelClient(host="127.0.0.1", port=port, images_dir=tmp_path)
    with anyio.fail_after(10), pytest.raises(GatewayConnectionError) as info:
        await client.connect(retries=0)
    assert info.value.status_code is None
    assert info.value.url == client.base_url


@pytest.mark.parametrize(
    ("arguments", "error"),
    [({"retries": -1}, ValueError), ({"retries": 1.5}, TypeError), ({"retry_interval": -0.5}, ValueError)],
)
async def test_bad_retry_arguments_are_refused_before_anything_is_sent(
    arguments: dict[str, float], error: type[Exception], tmp_path: Path
) -> None:
    client = KernelClient(host="127.0.0.1", port=9, images_dir=tmp_path)
    with anyio.fail_after(5), pytest.raises(error, match="retr"):
        await client.connect(**arguments)  # type: ignore[arg-type]
    assert not client.connected
