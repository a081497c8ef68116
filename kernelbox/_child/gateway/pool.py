"""`PooledKernelManager`: the gateway's mapping kernel manager, with a warm pool of kernels.

Besides the pool (kernels started and primed ahead of demand, handed out once), it offers the
pre-launched first kernel to the first kernel start (`kernelbox._child.gateway.prelaunch`),
keeps kernels' activity on their iopub streams instead of a watcher socket of its own
(`kernelbox._child.gateway.activity`), adds the kernel process's state to the REST model,
and lets a restart under way finish before a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from jupyter_client.connect import LocalPortCache
from kernel_gateway.services.kernels.manager import SeedingMappingKernelManager
from tornado.ioloop import IOLoop
from traitlets import Float, Integer, default

from kernelbox._child.gateway._upstream import set_activity_stream, utcnow
from kernelbox._child.gateway.kernel_manager import (
    RESTART_SETTLE_SECONDS,
    RUNNING_STATES,
    discard_and_free_ports,
    process_state,
)
from kernelbox._child.gateway.kernel_output import KernelOutputPipes
from kernelbox._child.gateway.prelaunch import PrelaunchedKernel
from kernelbox._child.gateway.primed import prime_pooled_kernel
from kernelbox._child.gateway.registry import KernelRegistry

# A handed-out kernel's replacement starts once the client has its first reply (see
# `KernelRegistry.pool_refills`), or after this many seconds if no client ever connects.
POOL_REFILL_FALLBACK_SECONDS = 1.0


class PooledKernelManager(SeedingMappingKernelManager):
    """Kernel manager that keeps `pool_size` kernels started and ready ahead of demand.

    A request for the default kernelspec with no ``env`` and no ``path`` — the request every
    fresh kernel would get — takes the oldest pooled kernel, which has already answered
    ``kernel_info``, and a replacement starts in the background. Pooled kernels are started
    exactly like requested ones (same environment, same sandbox), each is handed out once, and
    until then they are hidden from listings, the ``max_kernels`` count and culling.
    (Kernel Gateway's own ``prespawn_count`` never hands its kernels to ``POST /api/kernels``
    in websocket mode.)
    """

    pool_size = Integer(0, config=True, help="Kernels kept started and ready ahead of demand.")
    pool_ready_timeout = Float(60.0, config=True, help="Seconds a pooled kernel may take to answer.")
    # Jupyter Server declares these as Integer, so 0.5 s would fail to load (or, truncated, turn
    # culling off). Its culler multiplies by 1000 for a PeriodicCallback, which takes floats.
    cull_idle_timeout = Float(0.0, config=True, help="Seconds a kernel may stay idle (0: never cull).")
    cull_interval = Float(300.0, config=True, help="Seconds between culling checks.")

    @default("kernel_manager_class")
    def _settling_kernel_manager_class(self) -> str:
        # A default, not a config value: Jupyter Server warns about any *configured* class
        # that is not a ServerKernelManager, and Kernel Gateway's own (the base) is not one.
        return "kernelbox._child.gateway.kernel_manager.SettlingKernelManager"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool: list[str] = []  # ready, oldest first
        self._pool_ids: set[str] = set()  # ready or still starting
        self._filling = 0
        self._fill_tasks: set[asyncio.Task[None]] = set()
        # What the pool and the kernels' WebSocket connections pass each other, by kernel id.
        self.registry = KernelRegistry()
        # Started before this process imported Jupyter (see `kernelbox._child.gateway.prelaunch`);
        # offered to the first kernel start only, then taken over or killed.
        self.prelaunched: PrelaunchedKernel | None = None
        self._taking_over: dict[str, PrelaunchedKernel] = {}
        # Every kernel process's stdout/stderr pipe (`kernelbox._child.gateway.kernel_output`), passed
        # on only when the gateway logs at DEBUG. The app's `log_level` decides that: traitlets
        # leaves its logger at DEBUG and sets the level on the handler.
        log_level = getattr(self.parent, "log_level", logging.INFO)
        self.kernel_output = KernelOutputPipes(forward=isinstance(log_level, int) and log_level <= logging.DEBUG)

    def _offer_prelaunched(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The first kernel start's arguments, naming the pre-launched kernel when it may take it.

        Only a poolable start (the default kernelspec, no ``env``, no ``path``) is started the
        way the pre-launched kernel was; any other first start kills it, so a request with its
        own environment never gets it.
        """
        prelaunched, self.prelaunched = self.prelaunched, None
        if prelaunched is None:
            return kwargs
        if not self._poolable(kwargs):
            self.log.info(
                "Stopping the pre-launched kernel [pid %d]: the first kernel start asks for its "
                "own kernelspec, env or path", prelaunched.process.pid,
            )
            discard_and_free_ports(prelaunched)
            return kwargs
        self._taking_over[prelaunched.kernel_id] = prelaunched
        return {**kwargs, "kernel_id": prelaunched.kernel_id}

    def hold_prelaunched(self, prelaunched: PrelaunchedKernel) -> None:
        """Keep `prelaunched` for the first kernel start; its ports count as taken meanwhile.

        Its output pipe is read from the event loop's start (this runs before it), as the
        output of the kernel id the process gets when it is taken over.
        """
        self.prelaunched = prelaunched
        LocalPortCache.instance().currently_used_ports.update(prelaunched.ports)
        if prelaunched.output_fd >= 0:
            IOLoop.current().add_callback(
                self.kernel_output.watch, prelaunched.kernel_id, prelaunched.output_fd, prelaunched.process
            )

    def take_prelaunched(self, kernel_id: str) -> PrelaunchedKernel | None:
        """The pre-launched kernel offered to the start of `kernel_id`, once; else None."""
        return self._taking_over.pop(kernel_id, None)

    def discard_prelaunched(self) -> None:
        """Kill the pre-launched kernel if no kernel start took it (at the gateway's stop)."""
        for prelaunched in [self.prelaunched, *self._taking_over.values()]:
            if prelaunched is not None:
                discard_and_free_ports(prelaunched)
        self.prelaunched = None
        self._taking_over.clear()

    def _poolable(self, kwargs: dict[str, Any]) -> bool:
        name = kwargs.get("kernel_name") or self.default_kernel_name
        return (
            name == self.default_kernel_name
            and not kwargs.get("env")
            and kwargs.get("path") is None
            and kwargs.get("kernel_id") is None
        )

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:
        if not args and self._pool and self._poolable(kwargs):
            kernel_id = self._pool.pop(0)
            self._pool_ids.discard(kernel_id)
            self.get_kernel(kernel_id).last_activity = utcnow()
            self.log.info("Handed out pooled kernel %s (%d ready)", kernel_id, len(self._pool))
            # Starting the replacement costs a fork and a second of CPU for its imports: on a
            # small machine it would slow this kernel's first round trips, so it waits for them.
            self.registry.pool_refills[kernel_id] = self.fill_pool
            asyncio.get_running_loop().call_later(POOL_REFILL_FALLBACK_SECONDS, self.fill_pool)
            return kernel_id
        if not args:
            kwargs = self._offer_prelaunched(kwargs)
        return await super().start_kernel(*args, **kwargs)

    def fill_pool(self) -> None:
        """Start kernels until `pool_size` are ready or starting (within ``max_kernels``)."""
        max_kernels = getattr(self.parent, "max_kernels", None)
        while len(self._pool) + self._filling < self.pool_size:
            if max_kernels is not None and len(self) >= max_kernels:
                return
            self._filling += 1
            task = asyncio.ensure_future(self._add_pooled_kernel())
            self._fill_tasks.add(task)
            task.add_done_callback(self._fill_tasks.discard)

    async def _add_pooled_kernel(self) -> None:
        kernel_id = None
        try:
            kwargs = self._offer_prelaunched({"kernel_name": self.default_kernel_name})
            kernel_id = await super().start_kernel(**kwargs)
            self._pool_ids.add(kernel_id)
            # Ready = answered kernel_info; the reply is cached and the channels are left
            # connected for the kernel's first WebSocket, which then waits for neither.
            manager = self.get_kernel(kernel_id)
            self.registry.primed[kernel_id] = await prime_pooled_kernel(
                manager, timeout=self.pool_ready_timeout,
                kernel_running=lambda: process_state(manager) in RUNNING_STATES,
            )
            self._pool.append(kernel_id)
            self.log.info("Pooled kernel %s ready (%d ready)", kernel_id, len(self._pool))
        except Exception:
            self.log.exception("Could not start a pooled kernel")
            if kernel_id is not None:
                self._pool_ids.discard(kernel_id)
                await self.shutdown_kernel(kernel_id, now=True)
        finally:
            self._filling -= 1

    def list_kernels(self) -> list[dict[str, Any]]:
        return [k for k in super().list_kernels() if k["id"] not in self._pool_ids]

    def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        """Jupyter Server's kernel model plus ``"process_state"`` (a kernelbox addition).

        ``"process_state"`` is the kernel process's scheduler state as psutil names it:
        ``"running"``, ``"sleeping"``, ``"disk-sleep"``, ``"stopped"`` (SIGSTOP/SIGTSTP: it runs
        nothing until SIGCONT), ``"zombie"``, ...; absent when the kernel has no process (e.g.
        mid-restart). `KernelClient` reads it to tell a stopped kernel from a busy one.
        """
        model: dict[str, Any] = super().kernel_model(kernel_id)
        state = process_state(self.get_kernel(kernel_id))
        if state is not None:
            model["process_state"] = state
        return model

    def start_watching_activity(self, kernel_id: str) -> None:
        """Jupyter Server's activity watcher, kept by the kernel's iopub streams instead.

        The watcher socket is subscribed only while no other iopub stream of the kernel is
        live (read by a WebSocket connection, or held by the offline buffer after one): see
        `kernelbox._child.gateway.activity`.
        """
        kernel = self.get_kernel(kernel_id)
        kernel.reason = ""
        kernel.last_activity = utcnow()
        stream = kernel.connect_iopub()
        kernel.activity.watch(stream)
        set_activity_stream(kernel, stream)

    def stop_watching_activity(self, kernel_id: str) -> None:
        self.get_kernel(kernel_id).activity.unwatch()
        super().stop_watching_activity(kernel_id)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id not in self._pool_ids:
            await super().cull_kernel_if_idle(kernel_id)

    async def shutdown_kernel(self, kernel_id: str, now: bool = False, restart: bool = False) -> None:
        # A kernel that died is restarted by its KernelRestarter. Shutting it down meanwhile
        # fails in jupyter_client with InvalidStateError ("Exception is not set": its
        # ``ready`` future is pending), an HTTP 500 for a client's reset(); or it interrupts
        # the new kernel while it imports. So wait (bounded) for the restart to finish.
        manager = self.get_kernel(kernel_id) if kernel_id in self else None
        self.registry.forget(kernel_id)  # closes a pooled kernel's channels if it never had a WebSocket
        restarted = getattr(manager, "restart_finished", None)
        if restarted is not None and not restarted.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(restarted.wait(), RESTART_SETTLE_SECONDS)
        await super().shutdown_kernel(kernel_id, now=now, restart=restart)

    def remove_kernel(self, kernel_id: str) -> Any:
        self.registry.forget(kernel_id)
        return super().remove_kernel(kernel_id)
