"""One kernel's manager in the gateway process: private connection info, takeover, restarts.

- `PrivateConnectionKernelManager` writes no connection file: a kernel gets its ports, HMAC
  key and CurveZMQ keys on a pipe as its standard input, and its stdout and stderr on a pipe
  of its own (`kernelbox._child.gateway.kernel_output`).
- `PrelaunchedKernelProvisioner` lets the first kernel start take over the kernel process
  started before Jupyter was imported (`kernelbox._child.gateway.prelaunch`).
- `SettlingKernelManager` (the class the gateway uses) tells when a restart has finished, keeps
  the kernel's activity record on its iopub streams (`kernelbox._child.gateway.activity`) and
  gives every channel a `LeanStream` (`kernelbox._child.gateway.streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import psutil
from jupyter_client.connect import LocalPortCache, port_names
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from kernelbox._child.gateway._upstream import KernelManagerInternals, record_launched_process, scrub_launch_kwargs
from kernelbox._child.gateway.activity import IOPubStream, KernelActivity
from kernelbox._child.gateway.kernel_output import KernelOutputPipes
from kernelbox._child.gateway.prelaunch import PrelaunchedKernel, connection_info_pipe
from kernelbox._child.gateway.streams import LeanStream

# How long a shutdown request waits for a restart under way to finish.
RESTART_SETTLE_SECONDS = 10.0


class PrivateConnectionKernelManager(KernelManagerInternals):
    """A kernel manager that never writes a connection file.

    The ports, the HMAC key and the CurveZMQ key pair stay in this process's memory and reach
    the kernel as one JSON line on its standard input, a pipe (read by
    `kernelbox._child.kernel.launcher`). A restart chooses nothing new: it sends the same
    information down a new pipe. jupyter_client's own ``stdin=PIPE`` cannot be used: its
    ``launch_kernel`` closes that pipe before returning.
    """

    def write_connection_file(self, **kwargs: Any) -> None:
        """Choose free ports for those still 0 (as jupyter_client would), and write nothing."""
        if self.connection_info_chosen:
            return
        self.record_random_port_names()
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
        self.connection_info_chosen = True

    def cleanup_connection_file(self) -> None:
        self.connection_info_chosen = False

    def prepare_start(self, kernel_id: str | None) -> None:
        """Take over the pre-launched kernel when the pool offered it to `kernel_id`."""
        take = getattr(self.parent, "take_prelaunched", None)
        prelaunched = take(kernel_id) if take is not None and kernel_id else None
        if prelaunched is not None:
            self._prepare_takeover(prelaunched)

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
            discard_and_free_ports(prelaunched)
            return
        self.load_connection_info(prelaunched.connection_info)
        provisioner = PrelaunchedKernelProvisioner(
            kernel_id=prelaunched.kernel_id, kernel_spec=self.kernel_spec, parent=self
        )
        provisioner.prelaunched = prelaunched
        self.provisioner = provisioner

    async def launch_process(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Launch with the connection info on a pipe as stdin, and stdout and stderr on a pipe
        of the kernel's own, read by the kernel manager's `KernelOutputPipes`."""
        info = {
            name: value.decode("ascii") if isinstance(value, bytes) else value
            for name, value in self.get_connection_info().items()
        }
        # For kernels that are tenants of their own (`kernelbox._child.kernel.launcher`, ``--tenant``): their
        # directories are named by it. The launcher removes it before ipykernel sees the info.
        info["kernel_id"] = self.kernel_id
        pipes: KernelOutputPipes = self.parent.kernel_output
        output_read, output_write = pipes.open()
        try:
            read_end = connection_info_pipe(info)
            try:
                await super().launch_process(
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

    The process (`kernelbox._child.gateway.prelaunch`) is taken only when it was started with exactly
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
                release_ports(self.prelaunched)
        result: dict[str, Any] = await super().pre_launch(**kwargs)
        return result

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        prelaunched, self.prelaunched = self.prelaunched, None
        self.took_over_prelaunched = False
        if prelaunched is None:
            return await super().launch_kernel(cmd, **kwargs)
        scrubbed = scrub_launch_kwargs(kwargs)
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
        record_launched_process(self, prelaunched.process, kwargs)
        self.log.info("Kernel %s is the pre-launched kernel process [pid %d]", self.kernel_id, self.pid)
        return self.connection_info


def release_ports(prelaunched: PrelaunchedKernel) -> None:
    cache = LocalPortCache.instance()
    for port in prelaunched.ports:
        cache.return_port(port)


def discard_and_free_ports(prelaunched: PrelaunchedKernel) -> None:
    """Kill a pre-launched kernel no kernel manager took, and free its ports."""
    prelaunched.discard()
    release_ports(prelaunched)


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
        """An iopub stream that keeps this kernel's activity record (`kernelbox._child.gateway.activity`)."""
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
