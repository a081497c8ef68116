"""The gateway process: Jupyter Kernel Gateway on an inherited socket.

Run by `KernelGateway` as ``python -m kernelbox._child.gateway_app CONFIG_JSON`` in its own session,
possibly inside the OS sandbox. It differs from ``jupyter kernelgateway`` in six ways:

- **Socket activation.** The listening socket arrives as standard input (the inetd convention;
  the sandbox passes stdio and nothing else) and is adopted with ``HTTPServer.add_socket``
  instead of binding. fd 0 is then pointed at ``/dev/null``. The port can never move.
- **A faster kernel WebSocket.** ``TCP_NODELAY`` (stock Kernel Gateway leaves Nagle on and
  every execution pays a ~40 ms delayed-ACK stall: 49 ms vs 9.5 ms for ``1+1``), both wire
  formats without re-encoding, loss-free reconnects: see `kernelbox._child.kernel_websocket`.
- **Explicit kernel environment.** This process's environment *is* the kernel environment
  (kernels inherit it); `KernelGateway` builds it. The same names are whitelisted for requests
  that carry their own ``env``, so both paths give kernels the same base.
- **Lean activity tracking and channels.** A kernel's ``last_activity``/``execution_state``
  (culling, the REST model) are kept by the iopub streams already open, and Jupyter Server's
  own watcher socket is unsubscribed meanwhile (`kernelbox._child.activity`); kernel channels
  send at once and read in batches (`kernelbox._child.streams`).
- **A pre-launched first kernel.** Before importing Jupyter Server this process starts one
  kernel (`kernelbox._child._prelaunch`), which imports ipykernel meanwhile; the first kernel
  start that would be served from the warm pool takes that process over
  (`PrelaunchedKernelProvisioner`) once it has checked that the process was started exactly as
  that start would start it. Any other first start, and the gateway's stop, kill it.
- **Kernel output on pipes of its own.** Kernels do not inherit this process's stdout/stderr
  (the supervisor reads them as the gateway's log): each kernel process writes to a pipe of
  its own, read here and passed on escaped, cut and rate-limited, as kernel output records
  that the supervisor never takes for the gateway's own (`kernelbox._child.kernel_output`).
- **Lifeline.** When the supervisor dies, the read end of our stdout/stderr pipe closes and
  ``poll()`` on our write end reports ``POLLERR``; we then shut down as on SIGTERM, so no
  gateway or kernel outlives a SIGKILLed supervisor.

The token comes in the environment (``KG_AUTH_TOKEN``), never on the command line; Kernel
Gateway removes it from kernel environments.

Isolation (see the README's threat model; `kernelbox._child._hardening`): before anything
else this process makes itself undumpable (kernels of the same uid cannot read its memory,
environment or descriptors) and joins a new session keyring (kernels cannot read the
supervisor's keys). Kernels get their connection info (ports, HMAC key, CurveZMQ keys) on a
pipe as their stdin, never in a file, and every ZMQ socket is CurveZMQ-encrypted
(``transport_encryption=required``): a kernel that finds a sibling's ports can neither send to
nor listen to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import select
import signal
import socket
import sys
import threading
from typing import Any

if __name__ == "__main__":
    # The gateway process itself (not a re-import by name). Before anything else, and so before
    # any kernel exists: undumpable, a new session keyring. Then the first kernel starts, so
    # that it imports ipykernel while this process imports Jupyter Server below
    # (`kernelbox._child._prelaunch`).
    import atexit

    from kernelbox._child._hardening import join_new_session_keyring, make_undumpable
    from kernelbox._child._prelaunch import PrelaunchedKernel, prelaunch_kernel, report_failure

    make_undumpable()
    join_new_session_keyring()
    _PRELAUNCHED: PrelaunchedKernel | None = None
    try:
        _PRELAUNCHED = prelaunch_kernel()
    except (LookupError, ValueError, OSError) as exc:  # reported; kernels then start as usual
        report_failure(exc)
    else:
        # Also when an import below fails: the process never outlives this one.
        atexit.register(_PRELAUNCHED.discard)

# jsonschema imports these, when installed, for optional format checks ("iri", "uri",
# "duration"): rfc3987_syntax builds a parser at import time (measured at 1.2 s of the
# gateway's ~2 s start), rfc3986_validator compiles its patterns (~30 ms), isoduration imports
# arrow (~15 ms). The gateway validates only Jupyter Server's own event schemas and events,
# whose one formatted field is each schema's "$id" URI, fixed in the package; so the imports
# are refused (jsonschema then skips those checks).
for _optional_format_module in ("rfc3987_syntax", "rfc3986_validator", "isoduration"):
    sys.modules.setdefault(_optional_format_module, None)  # type: ignore[arg-type]

import psutil
from jupyter_client.connect import LocalPortCache, port_names
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_core.paths import jupyter_path
from jupyter_server._tz import utcnow
from jupyter_server.log import log_request as jupyter_log_request
from kernel_gateway.gatewayapp import KernelGatewayApp
from kernel_gateway.services.kernels.manager import (
    KernelGatewayIOLoopKernelManager,
    SeedingMappingKernelManager,
)
from tornado import httpserver, web
from tornado.ioloop import IOLoop
from tornado.log import access_log
from traitlets import Float, Integer, default

from kernelbox._child._hardening import landlock_abi
from kernelbox._child._prelaunch import PrelaunchedKernel, connection_info_pipe
from kernelbox._child.activity import IOPubStream, KernelActivity
from kernelbox._child.kernel_output import KernelOutputPipes
from kernelbox._child.kernel_websocket import (
    POOL_REFILL_ATTRIBUTE,
    PRIMED_ATTRIBUTE,
    prime_pooled_kernel,
)
from kernelbox._child.streams import LeanStream

KERNEL_POLL_SECONDS = 0.5
# How long a shutdown request waits for a restart under way to finish.
RESTART_SETTLE_SECONDS = 10.0
# A handed-out kernel's replacement starts once the client has its first reply (see
# `POOL_REFILL_ATTRIBUTE`), or after this many seconds if no client ever connects.
POOL_REFILL_FALLBACK_SECONDS = 1.0

# Variables the gateway process needs but kernels must not see.
_PRIVATE_ENV = ("KG_AUTH_TOKEN",)


class PrivateConnectionKernelManager(KernelGatewayIOLoopKernelManager):
    """A kernel manager that never writes a connection file.

    The ports, the HMAC key and the CurveZMQ key pair stay in this process's memory and reach
    the kernel as one JSON line on its standard input, a pipe (read by
    `kernelbox._child.kernel_launcher`). A restart chooses nothing new: it sends the same
    information down a new pipe. jupyter_client's own ``stdin=PIPE`` cannot be used: its
    ``launch_kernel`` closes that pipe before returning.
    """

    _connection_file_written: bool

    def write_connection_file(self, **kwargs: Any) -> None:
        """Choose free ports for those still 0 (as jupyter_client would), and write nothing."""
        if self._connection_file_written:
            return
        self._record_random_port_names()
        held = []
        try:
            for name in port_names:
                if getattr(self, name) <= 0:
                    probe = socket.socket()
                    held.append(probe)
                    probe.bind((self.ip, 0))
                    setattr(self, name, probe.getsockname()[1])
        finally:
            for probe in held:
                probe.close()
        self._connection_file_written = True

    def cleanup_connection_file(self) -> None:
        self._connection_file_written = False

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        kernel_id = self.kernel_id or kw.get("kernel_id")
        take = getattr(self.parent, "take_prelaunched", None)
        prelaunched = take(kernel_id) if take is not None and kernel_id else None
        if prelaunched is not None:
            self._prepare_takeover(prelaunched)
        return await super()._async_pre_start_kernel(**kw)

    def _prepare_takeover(self, prelaunched: PrelaunchedKernel) -> None:
        """Give this kernel the pre-launched process's connection info and a provisioner
        that takes the process over (`PrelaunchedKernelProvisioner`).

        Only where jupyter_client would pick its local provisioner and the same transport,
        address and signature scheme; otherwise the process is killed here (and said so).
        """
        factory = KernelProvisionerFactory.instance(parent=self.parent)
        mismatch = [
            what for what, ok in (
                ("kernel provisioner", "kernel_provisioner" not in self.kernel_spec.metadata
                 and factory.default_provisioner_name == "local-provisioner"),
                ("transport", self.transport == prelaunched.connection_info["transport"]),
                ("ip", self.ip == prelaunched.connection_info["ip"]),
                ("signature scheme", self.session.signature_scheme == prelaunched.connection_info["signature_scheme"]),
            ) if not ok
        ]
        if mismatch:
            self.log.warning(
                "Not taking over the pre-launched kernel [pid %d] (%s differ): killing it",
                prelaunched.process.pid, ", ".join(mismatch),
            )
            _discard(prelaunched)
            return
        self.load_connection_info(prelaunched.connection_info)
        provisioner = PrelaunchedKernelProvisioner(
            kernel_id=prelaunched.kernel_id, kernel_spec=self.kernel_spec, parent=self
        )
        provisioner.prelaunched = prelaunched
        self.provisioner = provisioner

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Launch with the connection info on a pipe as stdin, and stdout and stderr on a pipe
        of the kernel's own, read by the kernel manager's `KernelOutputPipes`."""
        info = {
            name: value.decode("ascii") if isinstance(value, bytes) else value
            for name, value in self.get_connection_info().items()
        }
        # For kernels that are tenants of their own (`kernel_launcher --tenant`): their
        # directories are named by it. The launcher removes it before ipykernel sees the info.
        info["kernel_id"] = self.kernel_id
        pipes: KernelOutputPipes = self.parent.kernel_output
        output_read, output_write = pipes.open()
        try:
            read_end = connection_info_pipe(info)
            try:
                await super()._async_launch_kernel(
                    kernel_cmd, **{**kw, "stdin": read_end, "stdout": output_write, "stderr": output_write}
                )
            finally:
                os.close(read_end)
        except BaseException:
            os.close(output_read)
            raise
        finally:
            os.close(output_write)
        if getattr(self.provisioner, "took_over_prelaunched", False):
            # The pre-launched process keeps the pipe it was started with (already watched).
            os.close(output_read)
            return
        pipes.watch(self.kernel_id, output_read, getattr(self.provisioner, "process", None))


class PrelaunchedKernelProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner whose first launch takes over a pre-launched kernel.

    The process (`kernelbox._child._prelaunch`) is taken only when it was started with exactly
    what this launch would use: argv, environment, connection info, no other arguments (see
    `PrelaunchedKernel.differences`); otherwise it is killed and a new process launched, with a
    warning. The process is then recorded as `LocalProvisioner.launch_kernel` records one it
    spawned (``process``, ``pid``, ``pgid``, ``cwd``), so polling, signals to its process group,
    interrupts, shutdown and the restarter treat it the same. A restart launches a new process.
    """

    prelaunched: PrelaunchedKernel | None = None
    # Whether the last launch took the pre-launched process over (then the launch's own
    # stdout/stderr pipe is unused: the process writes to the one it was started with).
    took_over_prelaunched: bool = False

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        if self.prelaunched is not None:
            if getattr(self.parent, "cache_ports", False):
                # Its ports were entered in jupyter_client's port cache when the gateway
                # started (`PooledKernelManager.hold_prelaunched`): keep them, return them at
                # cleanup, as for ports the cache picked.
                self.ports_cached = True
            else:
                _release_ports(self.prelaunched)
        result: dict[str, Any] = await super().pre_launch(**kwargs)
        return result

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        prelaunched, self.prelaunched = self.prelaunched, None
        self.took_over_prelaunched = False
        if prelaunched is None:
            return await super().launch_kernel(cmd, **kwargs)
        scrubbed = LocalProvisioner._scrub_kwargs(kwargs)
        env = scrubbed.pop("env", None)
        scrubbed.pop("stdin", None)  # the same connection info line, checked below
        # A new output pipe (`PrivateConnectionKernelManager`): the process has one of its own.
        scrubbed.pop("stdout", None)
        scrubbed.pop("stderr", None)
        found = prelaunched.differences(cmd, env or {}, dict(self.connection_info), scrubbed)
        if env is None:
            found.append("env (none given)")
        if not found and prelaunched.process.poll() is not None:
            found.append(f"the process (it exited with status {prelaunched.process.returncode})")
        if found:
            self.log.warning(
                "Not taking over the pre-launched kernel [pid %d] (%s differ): starting a new one",
                prelaunched.process.pid, ", ".join(found),
            )
            # Its ports stay this kernel's (loaded above, in the port cache): the new process
            # binds them once the old one is gone, as after a restart.
            prelaunched.discard()
            return await super().launch_kernel(cmd, **kwargs)
        prelaunched.taken = True
        self.took_over_prelaunched = True
        self.process = prelaunched.process
        self.pid = self.process.pid
        try:
            self.pgid = os.getpgid(self.pid)
        except OSError:
            self.pgid = None  # as LocalProvisioner: signals then go to the process alone
        self.cwd = kwargs.get("cwd", pathlib.Path.cwd())
        self.log.info("Kernel %s is the pre-launched kernel process [pid %d]", self.kernel_id, self.pid)
        return self.connection_info


def _release_ports(prelaunched: PrelaunchedKernel) -> None:
    cache = LocalPortCache.instance()
    for port in prelaunched.ports:
        cache.return_port(port)


def _discard(prelaunched: PrelaunchedKernel) -> None:
    """Kill a pre-launched kernel no kernel manager took, and free its ports."""
    prelaunched.discard()
    _release_ports(prelaunched)


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
    def _kernel_manager_class_default(self) -> str:
        # A default, not a config value: Jupyter Server warns about any *configured* class
        # that is not a ServerKernelManager, and Kernel Gateway's own (the base) is not one.
        return "kernelbox._child.gateway_app.SettlingKernelManager"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool: list[str] = []  # ready, oldest first
        self._pool_ids: set[str] = set()  # ready or still starting
        self._filling = 0
        self._fill_tasks: set[asyncio.Task[None]] = set()
        # Started before this process imported Jupyter (see `kernelbox._child._prelaunch`);
        # offered to the first kernel start only, then taken over or killed.
        self.prelaunched: PrelaunchedKernel | None = None
        self._taking_over: dict[str, PrelaunchedKernel] = {}
        # Every kernel process's stdout/stderr pipe (`kernelbox._child.kernel_output`), passed
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
            _discard(prelaunched)
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
                _discard(prelaunched)
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
            setattr(self.get_kernel(kernel_id), POOL_REFILL_ATTRIBUTE, self.fill_pool)
            asyncio.get_running_loop().call_later(POOL_REFILL_FALLBACK_SECONDS, self.fill_pool)
            return kernel_id
        if not args:
            kwargs = self._offer_prelaunched(kwargs)
        return await super().start_kernel(*args, **kwargs)

    def fill_pool(self) -> None:
        """Start kernels until `pool_size` are ready or starting (within ``max_kernels``)."""
        max_kernels = getattr(self.parent, "max_kernels", None)
        while len(self._pool) + self._filling < self.pool_size:
            if max_kernels is not None and len(self._kernels) >= max_kernels:
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
            await prime_pooled_kernel(
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
        state = process_state(self._kernels[kernel_id])
        if state is not None:
            model["process_state"] = state
        return model

    def start_watching_activity(self, kernel_id: str) -> None:
        """Jupyter Server's activity watcher, kept by the kernel's iopub streams instead.

        The watcher socket is subscribed only while no other iopub stream of the kernel is
        live (read by a WebSocket connection, or held by the offline buffer after one): see
        `kernelbox._child.activity`.
        """
        kernel = self._kernels[kernel_id]
        kernel.reason = ""
        kernel.last_activity = utcnow()
        stream = kernel.connect_iopub()
        kernel.activity.watch(stream)
        kernel._activity_stream = stream

    def stop_watching_activity(self, kernel_id: str) -> None:
        self._kernels[kernel_id].activity.unwatch()
        super().stop_watching_activity(kernel_id)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id not in self._pool_ids:
            await super().cull_kernel_if_idle(kernel_id)

    async def shutdown_kernel(self, kernel_id: str, now: bool = False, restart: bool = False) -> None:
        # A kernel that died is restarted by its KernelRestarter. Shutting it down meanwhile
        # fails in jupyter_client with InvalidStateError ("Exception is not set": its
        # ``ready`` future is pending), an HTTP 500 for a client's reset(); or it interrupts
        # the new kernel while it imports. So wait (bounded) for the restart to finish.
        manager = self._kernels.get(kernel_id)
        primed = manager.__dict__.pop(PRIMED_ATTRIBUTE, None) if manager is not None else None
        if primed is not None:  # a pooled kernel that never had a WebSocket
            primed.close()
        restarted = getattr(manager, "restart_finished", None)
        if restarted is not None and not restarted.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(restarted.wait(), RESTART_SETTLE_SECONDS)
        await super().shutdown_kernel(kernel_id, now=now, restart=restart)


# psutil states of a process that will answer a request (not stopped, not exited).
RUNNING_STATES = frozenset({
    psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING, psutil.STATUS_DISK_SLEEP, psutil.STATUS_IDLE,
    psutil.STATUS_WAKING,
})


def process_state(manager: Any) -> str | None:
    """psutil's name for the scheduler state of `manager`'s kernel process, or None (no process)."""
    pid = getattr(getattr(manager, "provisioner", None), "pid", None)
    if not isinstance(pid, int):
        return None
    try:
        return str(psutil.Process(pid).status())
    except psutil.Error:
        return None


class SettlingKernelManager(PrivateConnectionKernelManager):
    """A kernel's manager that tells when a restart (automatic or requested) has finished.

    Finished means the new kernel answers ``kernel_info``: a shutdown sent earlier would
    interrupt it while it still imports, and it would die printing a traceback.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.restart_finished = asyncio.Event()
        self.restart_finished.set()
        # ``parent`` is the MappingKernelManager that created this manager.
        self.activity = KernelActivity(self, self.parent)

    def connect_iopub(self, identity: bytes | None = None) -> IOPubStream:
        """An iopub stream that keeps this kernel's activity record (`kernelbox._child.activity`)."""
        return IOPubStream.take_over(super().connect_iopub(identity=identity), self.activity)

    # The other channels: `LeanStream`s (sends at once, reads in batches).
    def connect_shell(self, identity: bytes | None = None) -> LeanStream:
        return LeanStream.take_over(super().connect_shell(identity=identity))

    def connect_control(self, identity: bytes | None = None) -> LeanStream:
        return LeanStream.take_over(super().connect_control(identity=identity))

    def connect_stdin(self, identity: bytes | None = None) -> LeanStream:
        return LeanStream.take_over(super().connect_stdin(identity=identity))

    def _stopped(self) -> bool:
        # A stopped process (SIGSTOP/SIGTSTP) cannot answer a shutdown_request: jupyter_client
        # would wait its whole shutdown_wait_time before killing it, longer than a client's
        # restart or DELETE request waits. SIGKILL ends a stopped process at once.
        return process_state(self) == psutil.STATUS_STOPPED

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        await super().shutdown_kernel(now=now or self._stopped(), restart=restart)

    async def restart_kernel(self, now: bool = False, newports: bool = False, **kw: Any) -> None:
        self.restart_finished.clear()
        try:
            await super().restart_kernel(now=now or self._stopped(), newports=newports, **kw)
            client = self.client()
            client.start_channels()
            try:
                with contextlib.suppress(RuntimeError):  # did not come up: the restarter acts
                    await client.wait_for_ready(timeout=RESTART_SETTLE_SECONDS)
            finally:
                client.stop_channels()
        finally:
            self.restart_finished.set()


class SocketActivatedGatewayApp(KernelGatewayApp):
    """`KernelGatewayApp` that serves on an already-listening socket instead of binding one."""

    listening_socket: socket.socket | None = None

    def init_webapp(self) -> None:
        super().init_webapp()
        self.web_app.settings["log_function"] = log_request

    def init_http_server(self) -> None:
        assert self.listening_socket is not None
        self.http_server = httpserver.HTTPServer(
            self.web_app, xheaders=self.trust_xheaders, ssl_options=self._build_ssl_options()
        )
        self.http_server.add_socket(self.listening_socket)
        self.port = self.listening_socket.getsockname()[1]

    async def _stop(self) -> None:
        self.kernel_manager.discard_prelaunched()
        try:
            await super()._stop()
        finally:
            self.kernel_manager.kernel_output.close_all()

    def init_signal(self) -> None:
        # SIGINT stops the gateway instead of asking "Shutdown this Jupyter server?" on a TTY.
        super().init_signal()
        signal.signal(signal.SIGINT, self._signal_stop)

    def _signal_stop(self, sig: int, frame: Any) -> None:
        # Only records: Kernel Gateway's handler logs, and a signal that lands while the main
        # thread writes a log line makes that a reentrant write to stderr, which raises
        # RuntimeError in the handler before it stops anything (the signal was lost).
        if getattr(self, "io_loop", None) is None:  # still initializing: nothing to stop yet
            raise SystemExit(128 + sig)
        self.io_loop.add_callback_from_signal(self._stop_on_signal, sig)

    def _stop_on_signal(self, sig: int) -> None:
        self.log.critical("received signal %s, stopping", sig)
        self.stop()


def log_request(handler: web.RequestHandler) -> None:
    """The access log: successes (and WebSocket upgrades) at DEBUG, failures as Jupyter Server logs them.

    Kernel Gateway leaves Tornado's default, one INFO line per request; taking a pooled kernel
    is two requests, and each line costs a write here and a read and a log record in the
    supervising process while the client waits. Jupyter Server logs successes at DEBUG too
    (``jupyter_server.log.log_request``), which still logs every 4xx (WARNING) and 5xx (ERROR).
    """
    status = handler.get_status()
    if status >= 400:
        jupyter_log_request(handler, record_prometheus_metrics=False)
    elif access_log.isEnabledFor(logging.DEBUG):
        request = handler.request  # the path only: a query may carry a token
        access_log.debug("%d %s %s %.2fms", status, request.method, request.path, 1000.0 * request.request_time())


class _ConnectionChatterFilter(logging.Filter):
    """Keep two INFO lines Jupyter Server writes for every kernel WebSocket out of the log.

    ``Connecting to kernel <id>.`` and ``Adapting from protocol version 5.3 ... to 5.4`` (a
    no-op within protocol 5) say nothing an operator acts on, and each costs the supervising
    process a read and a log record while the client waits for its connection; with the
    gateway at DEBUG they are kept.
    """

    PREFIXES = ("Connecting to kernel ", "Adapting from protocol version ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        return not record.msg.startswith(self.PREFIXES) or logging.getLogger().isEnabledFor(logging.DEBUG)


class _JupyterPingMismatchFilter(logging.Filter):
    """Drop Tornado's warning about jupyter_server's WebSocket ping settings.

    jupyter_server's ``WebSocketMixin`` defines ``ping_interval``/``ping_timeout`` in
    milliseconds (30000/90000) and pings on its own schedule; Tornado >= 6.5 reads the same
    property names as seconds and warns that the timeout exceeds the interval on the first
    connection. The warning is false here: Jupyter's own pinging is what runs, and Tornado's
    would only fire after 30000 seconds. Keeping the two equal instead makes Jupyter close
    healthy connections whose pong lands a little late.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "websocket_ping_timeout" not in record.getMessage()


def _adopt_stdin_socket() -> socket.socket:
    """Take the listening socket from fd 0 and point fd 0 at /dev/null."""
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError as exc:
        sys.exit(f"kernelbox gateway: standard input is not a listening socket ({exc})")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sock.setblocking(False)
    return sock


def _watch_lifeline(app: KernelGatewayApp) -> None:
    """Stop the gateway when the supervisor stops reading our stderr (it died)."""
    poller = select.poll()
    poller.register(sys.stderr.fileno(), 0)  # POLLERR and POLLHUP are always reported
    while True:
        for _fd, events in poller.poll():
            if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                app.io_loop.add_callback_from_signal(app.stop)
                return


def _ipython_kernel_dirs(environ: dict[str, str]) -> list[str]:
    """Where IPython's own directory could hold kernelspecs (``IPython.paths.get_ipython_dir``):
    ``$IPYTHONDIR/kernels``, else ``~/.ipython/kernels`` and the XDG ``ipython/kernels``."""
    if environ.get("IPYTHONDIR"):
        return [os.path.join(os.path.expanduser(environ["IPYTHONDIR"]), "kernels")]
    home = os.path.expanduser("~")
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [os.path.join(home, ".ipython", "kernels"), os.path.join(xdg, "ipython", "kernels")]


def _skip_empty_ipython_kernel_dir(kernel_spec_manager: Any) -> None:
    """Leave IPython's directory out of kernelspec lookup when it holds no kernelspecs.

    jupyter_client's default ``kernel_dirs`` is ``jupyter_path("kernels")`` plus IPython's
    directory, found by importing IPython (~35 ms, on the first request, so on every cold
    start). When none of the places that directory can be has a ``kernels`` subdirectory, it
    adds nothing to the lookup, and the same list without it is set instead (decided once,
    at start: kernelspecs put into IPython's directory later need a gateway restart).
    """
    if any(os.path.isdir(path) for path in _ipython_kernel_dirs(dict(os.environ))):
        return
    kernel_spec_manager.kernel_dirs = jupyter_path("kernels")


def _warn_without_landlock(app: KernelGatewayApp) -> None:
    """Say once, in the gateway's own log, what is open when kernels cannot have Landlock.

    Each kernel also prints it (`kernelbox._child.kernel_launcher`), but kernel output is not
    gateway log (`kernelbox._child.kernel_output`): it reaches the log only at DEBUG.
    """
    if sys.platform.startswith("linux") and landlock_abi() == 0:
        app.log.warning(
            "Landlock is unavailable in this Linux kernel: during its ~50 ms start-up each kernel "
            "is reachable by sibling kernels of the same gateway"
        )


def _config_argv(config: dict[str, Any]) -> list[str]:
    argv = [
        "--KernelGatewayApp.api=kernel_gateway.jupyter_websocket",
        f"--KernelGatewayApp.log_level={config.get('log_level', 'INFO')}",
        "--KernelGatewayApp.port_retries=0",
        "--KernelGatewayApp.kernel_websocket_connection_class="
        "kernelbox._child.kernel_websocket.KernelWebsocketConnection",
        "--JupyterWebsocketPersonality.list_kernels=True",
        # Poll kernel processes every 0.5 s (default 3 s) so a dead kernel is reported fast:
        # clients get a "restarting" status and fail the waiting execution.
        f"--KernelRestarter.time_to_dead={KERNEL_POLL_SECONDS}",
        # Jupyter Server drops iopub output above 1 MB/s or 1,000 messages/s ("IOPub data rate
        # exceeded"): silent loss. The client bounds output itself, with a visible marker.
        "--ZMQChannelsWebsocketConnection.limit_rate=False",
        "--KernelGatewayApp.kernel_manager_class=kernelbox._child.gateway_app.PooledKernelManager",
        f"--PooledKernelManager.pool_size={int(config.get('pool_size') or 0)}",
        # Every kernel socket CurveZMQ-encrypted; the kernelspec declares "curve" support.
        "--KernelManager.transport_encryption=required",
    ]
    if config.get("max_kernels") is not None:
        argv.append(f"--KernelGatewayApp.max_kernels={int(config['max_kernels'])}")
    for name in ("cull_idle_timeout", "cull_interval"):
        if config.get(name) is not None:
            # Seconds as given (0.5 stays 0.5): PooledKernelManager declares these as floats.
            argv.append(f"--PooledKernelManager.{name}={float(config[name])!r}")
    for name in ("cull_connected", "cull_busy"):
        if config.get(name) is not None:
            argv.append(f"--MappingKernelManager.{name}={bool(config[name])}")
    return argv


def main(argv: list[str] | None = None, prelaunched: PrelaunchedKernel | None = None) -> None:
    """Run the gateway; only as this process's ``__main__`` (which hardened it first).

    Args:
        argv: the configuration JSON as the only argument; ``sys.argv[1:]`` by default.
        prelaunched: the kernel started at the top of the module, for the first kernel start.
    """
    args = sys.argv[1:] if argv is None else argv
    config: dict[str, Any] = json.loads(args[0]) if args else {}
    sock = _adopt_stdin_socket()
    logging.getLogger("tornado.general").addFilter(_JupyterPingMismatchFilter())
    logging.getLogger("tornado.application").addFilter(_ConnectionChatterFilter())

    kernel_env_names = sorted(name for name in os.environ if name not in _PRIVATE_ENV)
    app = SocketActivatedGatewayApp()
    app.listening_socket = sock
    app.env_process_whitelist = kernel_env_names
    app.initialize(_config_argv(config))
    app.log.addFilter(_ConnectionChatterFilter())
    _skip_empty_ipython_kernel_dir(app.kernel_spec_manager)
    _warn_without_landlock(app)
    if prelaunched is not None:
        app.kernel_manager.hold_prelaunched(prelaunched)
        app.log.info("Pre-launched kernel [pid %d] waits for the first kernel start", prelaunched.process.pid)
    threading.Thread(target=_watch_lifeline, args=(app,), daemon=True, name="lifeline").start()
    app.io_loop.add_callback(app.kernel_manager.fill_pool)
    app.start()


if __name__ == "__main__":
    main(prelaunched=_PRELAUNCHED)
