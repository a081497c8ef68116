"""kernelbox through its public API, unsandboxed or inside the OS sandbox."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import shutil
import tempfile
from contextlib import aclosing
from pathlib import Path
from typing import Any

from benchmarks._systems._base import ChunkCallback, Outcome, System, UnsupportedWorkload
from kernelbox import ExecutionResult, KernelClient, KernelGateway

HOST = "127.0.0.1"
STOP_TIMEOUT_SECONDS = 10.0
GATEWAY_LOGGER = "kernelbox.gateway"
# The pool's own log lines carry its ready count; both forms end in "(N ready)".
POOL_READY_PATTERN = re.compile(
    r"(?:Pooled kernel \S+ ready|Handed out pooled kernel \S+) \((\d+) ready\)"
)


class PoolWatcher(logging.Handler):
    """Follows the warm pool's ready count through the gateway's forwarded log lines.

    Pooled kernels are hidden from ``GET /api/kernels`` and kernelbox has no public "pool is
    full" signal yet, so the suite reads the gateway's own INFO lines ("Pooled kernel <id>
    ready (N ready)", "Handed out pooled kernel <id> (N ready)"). Used only between timed
    connects, never inside one; a ``KernelGateway.wait_pool_ready()`` would replace it.
    """

    def __init__(self, pool_size: int) -> None:
        super().__init__(logging.INFO)
        self.pool_size = pool_size
        self.ready = 0
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        match = POOL_READY_PATTERN.search(record.getMessage())
        if match:
            self.ready = int(match.group(1))
            self._changed.set()

    async def wait_full(self) -> None:
        while self.ready < self.pool_size:
            self._changed.clear()
            await self._changed.wait()


class Kernelbox(System):
    packages = (
        *System.packages,
        "kernelbox",
        "jupyter-kernel-gateway",
        "httpx",
        "httpx-ws",
        "anyio",
    )

    def __init__(self, sandbox: bool) -> None:
        self.sandbox = sandbox
        self.name = "kernelbox-sandbox" if sandbox else "kernelbox"  # type: ignore[misc]
        self._watchers: dict[int, PoolWatcher] = {}
        self._work_dirs: dict[int, Path] = {}

    async def start_gateway(self, scratch: Path, pool_size: int = 0) -> KernelGateway:
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": 0,
            "sandbox": self.sandbox,
            "working_dir": (work := self._working_dir()),
            # Not "WARNING": the gateway app refuses it (traitlets wants "WARN"). A pooled
            # gateway logs at INFO because the pool's log lines are its readiness signal.
            "log_level": "INFO" if pool_size else "ERROR",
        }
        if pool_size:
            kwargs["pool_size"] = pool_size
        try:
            gateway = KernelGateway(**kwargs)
        except TypeError as exc:
            if pool_size and "pool_size" in str(exc):
                raise UnsupportedWorkload(
                    "KernelGateway(pool_size=...) is not supported yet"
                ) from exc
            raise
        self._work_dirs[id(gateway)] = work
        if pool_size:
            self._watch_pool(gateway, pool_size)
        try:
            await gateway.start()
        except BaseException:
            self._unwatch_pool(gateway)
            raise
        return gateway

    def _working_dir(self) -> Path:
        """A fresh directory for the kernels' files, never the checkout (a sandboxed gateway
        refuses a directory holding code the host runs). As root the sandbox runs as the
        unprivileged sandbox user, which must be able to write it."""
        path = Path(tempfile.mkdtemp(prefix=f"kernelbox-bench-{self.name}-"))
        if self.sandbox:
            from kernelbox.sandbox.user import resolve_sandbox_user

            user = resolve_sandbox_user(None)
            if user is not None:
                os.chown(path, user.uid, user.gid)
        return path

    async def stop_gateway(self, gateway: KernelGateway) -> None:
        try:
            await gateway.stop(timeout=STOP_TIMEOUT_SECONDS)
        finally:
            self._unwatch_pool(gateway)
            work = self._work_dirs.pop(id(gateway), None)
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    async def open_kernel(self, gateway: KernelGateway, images_dir: Path) -> KernelClient:
        client = KernelClient(
            host=gateway.host, port=gateway.port, token=gateway.token, images_dir=images_dir
        )
        await client.connect()
        return client

    async def stream_with_cuts(
        self, gateway: KernelGateway, images_dir: Path, code: str, cut_after_lines: tuple[int, ...]
    ) -> tuple[str, int]:
        """`code` through a loopback proxy whose connections are cut after each count of lines."""
        from benchmarks._proxy import cuttable_proxy

        received: list[str] = []
        lines = cuts = 0
        async with cuttable_proxy(gateway.port) as proxy:
            async with KernelClient(host="127.0.0.1", port=proxy.port, token=gateway.token,
                                    images_dir=images_dir) as client:
                async with aclosing(client.stream(code)) as items:
                    async for item in items:
                        if not isinstance(item, str):
                            continue
                        received.append(item)
                        lines += item.count("\n")
                        if cuts < len(cut_after_lines) and lines >= cut_after_lines[cuts]:
                            cuts += proxy.cut() > 0
        return "".join(received), cuts

    async def close_kernel(self, kernel: KernelClient) -> None:
        await kernel.disconnect()

    async def execute(
        self,
        kernel: KernelClient,
        code: str,
        timeout_seconds: float,
        on_chunk: ChunkCallback | None = None,
    ) -> Outcome:
        if on_chunk is None:
            result = await kernel.execute(code, timeout=timeout_seconds)
            return Outcome(result.text or "", list(result.images))
        # Iterate to the end (never return at the result): the generator holds the client's
        # execution lock until it finishes, and an abandoned one releases it only when
        # garbage-collected. (stream() is an async generator annotated as AsyncIterator,
        # hence the type: ignore on aclosing.)
        outcome: Outcome | None = None
        async with aclosing(kernel.stream(code, timeout=timeout_seconds)) as items:  # type: ignore[type-var]
            async for item in items:
                if isinstance(item, ExecutionResult):
                    outcome = Outcome(item.text or "", list(item.images))
                else:
                    on_chunk(str(item))
        if outcome is None:
            raise RuntimeError("kernelbox's stream ended without a result")
        return outcome

    def gateway_pid(self, gateway: KernelGateway) -> int | None:
        return gateway.pid

    async def wait_pool_ready(self, gateway: KernelGateway, timeout_seconds: float) -> None:
        """Return when the pool is full: kernelbox's own signal if it has one, else its logs."""
        async with asyncio.timeout(timeout_seconds):
            hook = getattr(gateway, "wait_pool_ready", None)
            if hook is not None:
                outcome = hook(timeout_seconds) if _takes_argument(hook) else hook()
                if inspect.isawaitable(outcome):
                    await outcome
                return
            watcher = self._watchers.get(id(gateway))
            if watcher is None:
                raise UnsupportedWorkload("this gateway was not started with a pool")
            await watcher.wait_full()

    def _watch_pool(self, gateway: KernelGateway, pool_size: int) -> None:
        watcher = PoolWatcher(pool_size)
        logger = logging.getLogger(GATEWAY_LOGGER)
        logger.setLevel(logging.INFO)
        logger.addHandler(watcher)
        self._watchers[id(gateway)] = watcher

    def _unwatch_pool(self, gateway: KernelGateway) -> None:
        watcher = self._watchers.pop(id(gateway), None)
        if watcher is not None:
            logging.getLogger(GATEWAY_LOGGER).removeHandler(watcher)


def _takes_argument(function: Any) -> bool:
    try:
        return bool(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return False
