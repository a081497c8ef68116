"""The gateway's first kernel, started before the gateway imports Jupyter Server.

A cold start is two imports in a row: the gateway process imports Jupyter Server, Kernel
Gateway, tornado and zmq (~0.45 s) before it can start a kernel, and the kernel then imports
and initializes ipykernel and IPython (~0.35 s). `prelaunch_kernel` runs first thing in the
gateway process (`kernelbox._child.gateway.__main__`) and starts one kernel at once, so on a machine
with two cores the two overlap; the first kernel start of the default kernelspec without its
own ``env`` or ``path`` (the rule of `PooledKernelManager._poolable`) then takes that process
over instead of spawning one (`kernelbox._child.gateway.kernel_manager.PrelaunchedKernelProvisioner`).

The kernel is started exactly as jupyter_client would start it for that request, and the
takeover checks it: the same argv (``python3`` kernelspec found first on ``JUPYTER_PATH``,
the connection file named after a kernel id chosen here), the same environment (the gateway's,
without ``KG_AUTH_TOKEN`` and ``PYTHONEXECUTABLE``, with ``KERNEL_GATEWAY=1`` as Kernel Gateway
adds and ``JPY_PARENT_PID`` as jupyter_client adds), the gateway's working directory, a session
of its own, and its connection info (ports, HMAC key, CurveZMQ key pair) as one JSON line on a
pipe as its standard input, as `PrivateConnectionKernelManager` sends it. Anything that differs
at takeover time and the process is killed and a new one started, with a warning in the log.
Like every kernel, its stdout and stderr are a pipe of its own, not the gateway's log pipe
(`kernelbox._child.gateway.kernel_output`); the gateway reads it from the start, as the output of the
kernel id the process gets when it is taken over.

Only the standard library and zmq (for the CurveZMQ key pair; the gateway imports it anyway)
are imported here: this module's own time is on the critical path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KERNEL_NAME", "PrelaunchedKernel", "connection_info_pipe", "prelaunch_kernel", "report_failure"]

KERNEL_NAME = "python3"
# jupyter_client's KernelManager defaults (transport, ip) and Session default (scheme).
_TRANSPORT = "tcp"
_IP = "127.0.0.1"
_SIGNATURE_SCHEME = "hmac-sha256"
_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# Variables the gateway process has and kernels must not see (as `app._PRIVATE_ENV`;
# Kernel Gateway removes it) or must not inherit (jupyter_client drops it for Python kernels).
_REMOVED_ENV = ("KG_AUTH_TOKEN", "PYTHONEXECUTABLE")
# How long a killed pre-launched kernel may take to be reaped.
KILL_WAIT_SECONDS = 5.0


@dataclass
class PrelaunchedKernel:
    """A kernel process started by the gateway ahead of its first kernel start.

    Attributes:
        kernel_id: the id the kernel gets when it is taken over (its connection file name,
            and so its argv, contains it).
        argv: the argv it was started with.
        env: its environment as jupyter_client's ``launch_kernel`` receives it (before that
            function adds ``JPY_PARENT_PID``).
        connection_info: what it read on standard input (str values; ports as int).
        process: the running process (a child of the gateway process, in a session of its own).
        output_fd: the read end of the pipe that is its stdout and stderr; whoever reads it
            closes it (the gateway's `KernelOutputPipes`), -1 when there is none.
        taken: set once a kernel manager owns the process; from then on the kernel manager
            stops it, never `discard`.
    """

    kernel_id: str
    argv: list[str]
    env: dict[str, str]
    connection_info: dict[str, Any]
    process: subprocess.Popen[bytes]
    output_fd: int = field(default=-1)
    taken: bool = field(default=False)

    def differences(self, argv: list[str], env: dict[str, str], connection_info: dict[str, Any],
                    other_kwargs: dict[str, Any]) -> list[str]:
        """What differs from a launch of `argv` with `env` and `connection_info` (empty: none).

        Args:
            argv: the command jupyter_client would run.
            env: the environment it would pass to ``launch_kernel``.
            connection_info: the kernel manager's connection info (bytes or str values).
            other_kwargs: the other ``launch_kernel`` arguments besides ``stdin`` and ``env``;
                the pre-launched kernel had none (``cwd`` None: the gateway's).

        Returns:
            Readable names of what differs: ``argv``, ``env NAME``, ``connection info KEY``,
            ``argument NAME``.
        """
        found: list[str] = []
        if [os.path.expanduser(arg) for arg in argv] != self.argv:
            found.append("argv")
        for name in sorted(set(env) | set(self.env)):
            if env.get(name) != self.env.get(name):
                found.append(f"env {name}")
        normalized = {
            key: value.decode("ascii") if isinstance(value, bytes) else value
            for key, value in connection_info.items()
        }
        for key in sorted(set(normalized) | set(self.connection_info)):
            if normalized.get(key) != self.connection_info.get(key):
                found.append(f"connection info {key}")
        for name, value in sorted(other_kwargs.items()):
            if not (name == "cwd" and value is None):
                found.append(f"argument {name}")
        return found

    @property
    def ports(self) -> list[int]:
        """The five ports of its connection info."""
        return [int(self.connection_info[name]) for name in _PORT_NAMES]

    def discard(self) -> None:
        """Kill the process group and reap the process, unless a kernel manager took it.

        Safe to call more than once, and from ``atexit``.
        """
        if self.taken or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(KILL_WAIT_SECONDS)


def prelaunch_kernel(environ: dict[str, str] | None = None) -> PrelaunchedKernel:
    """Start the ``python3`` kernel the gateway's first kernel start will take over.

    Call it in the gateway process before importing Jupyter Server, after the process
    hardened itself (the kernel inherits the session keyring), while fd 0 may still be the
    listening socket (the kernel's stdin is a pipe, its stdout and stderr another, and no
    other descriptor is inherited).

    Args:
        environ: the gateway's environment; `os.environ` by default.

    Returns:
        The running kernel process; the caller must `PrelaunchedKernel.discard` it unless a
        kernel manager takes it, and read and close its ``output_fd``.

    Raises:
        LookupError: ``JUPYTER_PATH`` or ``JUPYTER_RUNTIME_DIR`` is not set (the supervisor sets
            both), or the first ``JUPYTER_PATH`` entry has no ``python3`` kernelspec.
        ValueError: the kernelspec is not one this module can start as jupyter_client would
            (templates other than ``{connection_file}``, a relative interpreter, its own env or
            kernel provisioner).
        OSError: the process could not be started.
    """
    environ = dict(os.environ if environ is None else environ)
    jupyter_path = environ.get("JUPYTER_PATH", "").split(os.pathsep)[0]
    runtime_dir = environ.get("JUPYTER_RUNTIME_DIR")
    if not jupyter_path or not runtime_dir:
        raise LookupError("JUPYTER_PATH and JUPYTER_RUNTIME_DIR must both be set")
    spec_file = os.path.join(jupyter_path, "kernels", KERNEL_NAME, "kernel.json")
    try:
        with open(spec_file, encoding="utf-8") as file:
            spec = json.load(file)
    except FileNotFoundError:
        raise LookupError(f"no kernelspec at {spec_file}") from None
    argv_template = list(spec["argv"])
    if spec.get("env") or spec.get("metadata", {}).get("kernel_provisioner"):
        raise ValueError(f"the kernelspec {spec_file} sets env or a kernel provisioner")
    if "--tenant" in argv_template:
        raise ValueError("kernels that are tenants of their own (isolate_kernels) are named by their id at launch")
    if not os.path.isabs(argv_template[0]):
        raise ValueError(f"the kernelspec {spec_file} does not name its interpreter by absolute path")
    kernel_id = str(uuid.uuid4())
    # As jupyter_client's KernelManager.format_kernel_cmd: the connection file's real path.
    connection_file = os.path.realpath(os.path.join(runtime_dir, f"kernel-{kernel_id}.json"))
    argv = []
    for arg in argv_template:
        substituted = arg.replace("{connection_file}", connection_file)
        if "{" in substituted and "}" in substituted:
            raise ValueError(f"the kernelspec {spec_file} uses a template other than {{connection_file}}")
        argv.append(os.path.expanduser(substituted))
    env = {name: value for name, value in environ.items() if name not in _REMOVED_ENV}
    env["KERNEL_GATEWAY"] = "1"
    connection_info = _new_connection_info()
    output_read, output_write = os.pipe()  # as `KernelOutputPipes.open`
    try:
        read_end = connection_info_pipe(connection_info)
        try:
            process = subprocess.Popen(  # what jupyter_client's launch_kernel runs on POSIX
                argv,
                stdin=read_end,
                stdout=output_write,
                stderr=output_write,
                env={**env, "JPY_PARENT_PID": str(os.getpid())},
                start_new_session=True,
            )
        finally:
            os.close(read_end)
    except BaseException:
        os.close(output_read)
        raise
    finally:
        os.close(output_write)
    return PrelaunchedKernel(kernel_id, argv, env, connection_info, process, output_fd=output_read)


def connection_info_pipe(info: dict[str, Any]) -> int:
    """The read end of a pipe holding `info` as one JSON line: a kernel's standard input for
    ``kernelbox._child.kernel --connection-info-stdin``. The caller closes it once the kernel has it."""
    read_end, write_end = os.pipe()
    try:
        # A few hundred bytes: far below the pipe buffer (64 KiB), so this never blocks.
        os.write(write_end, json.dumps(info).encode("ascii") + b"\n")
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def _new_connection_info() -> dict[str, Any]:
    """Ports, HMAC key and CurveZMQ key pair, chosen as the gateway's kernel manager would."""
    import zmq

    info: dict[str, Any] = {"transport": _TRANSPORT, "ip": _IP}
    # As jupyter_client's LocalPortCache.find_available_port: a free port from the system,
    # never one already chosen for this kernel.
    chosen: set[int] = set()
    for name in _PORT_NAMES:
        while True:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)
                probe.bind((_IP, 0))
                port = probe.getsockname()[1]
            if port not in chosen:
                break
        chosen.add(port)
        info[name] = port
    # jupyter_client's Session key format: 16 random bytes as hex, in two chunks.
    buf = os.urandom(16)
    info["signature_scheme"] = _SIGNATURE_SCHEME
    info["key"] = f"{buf[:4].hex()}-{buf[4:].hex()}"
    public, secret = zmq.curve_keypair()
    info["curve_publickey"] = public.decode("ascii")
    info["curve_secretkey"] = secret.decode("ascii")
    return info


def report_failure(exc: BaseException) -> None:
    """Say on the gateway log (stderr) that there is no pre-launched kernel, and why."""
    print(f"kernelbox gateway: no pre-launched kernel ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
