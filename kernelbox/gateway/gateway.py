"""`KernelGateway`: start, supervise and stop a Jupyter Kernel Gateway process.

The supervisor binds the listening socket itself and hands it to the gateway process as its
standard input (socket activation, see `kernelbox._child.gateway`). So the port is known
before the process starts (``port=0`` has no find-a-free-port race), a sandboxed gateway in
its own network namespace stays reachable, and readiness needs no polling: a request sent
right away waits in the socket's backlog until the gateway accepts it.

This module is the public face; the parts live beside it: `config` (the options),
`_launch` (direct or sandboxed launch), `_supervisor` (readiness, restarts, shutdown),
`_state` (the state directory) and `_env` (the kernel environment).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio

from .._errors import GatewayStartError, InvalidStateError
from ._cgroups import CgroupLimits, GatewayCgroups, cgroup_support, nproc_limited
from ._env import kernel_env
from ._launch import DirectLauncher, Launch, Launcher, SrtLauncher
from ._state import create_state_dir, remove_state_dir, tenant_view, write_kernelspec
from ._supervisor import LOG_TAIL_LINES, GatewayRestart, State, Supervisor
from .config import DEFAULT_STARTUP_TIMEOUT_SECONDS, GatewayConfig

logger = logging.getLogger("kernelbox.gateway")

__all__ = ["LOG_TAIL_LINES", "GatewayRestart", "KernelGateway"]

_LISTEN_BACKLOG = 128
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
# -I: the gateway's imports come from the installation only; a json.py or sitecustomize.py in
# the working directory (or on PYTHONPATH, which kernels need for %pip packages) cannot shadow them.
_GATEWAY_MODULE = [sys.executable, "-I", "-m", "kernelbox._child.gateway"]


def _bind_listening_socket(host: str, port: int) -> socket.socket:
    """Create the gateway's listening TCP socket (IPv4 preferred when a name has both)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve gateway host {host!r}: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _format_url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


class KernelGateway:
    """A supervised Jupyter Kernel Gateway process, optionally inside an OS sandbox.

    Use it as an async context manager, or call `start()` and `stop()` (from any task)::

        async with KernelGateway(port=0, env={"API_BASE": "http://127.0.0.1:9000"}) as gw:
            print(gw.url, gw.token)

    Kernels started by the gateway see a small base environment (PATH, HOME, USER, LOGNAME,
    LANG, LC_ALL, LC_CTYPE, TZ, TMPDIR, TERM, SHELL when set here, and ``JUPYTER_RUNTIME_DIR``)
    plus exactly `env`; nothing else from this process's environment.

    Args:
        host: interface to listen on; ``"localhost"`` (default) binds the loopback only.
        port: TCP port; 0 picks a free one (read it back from `port`). Never silently changed.
        sandbox: run the gateway and its kernels inside sandbox-runtime (`srt`). If the
            sandbox cannot run, `start()` raises `SandboxUnavailableError`; kernelbox never
            falls back to an unsandboxed run.
        sandbox_config: sandbox settings: a preset name from ``sandbox-configs/`` (e.g.
            ``"default"``, ``"pypi"``), a path to an srt settings JSON file, or None for
            ``"default"``.
        log_level: the gateway's log level (``"DEBUG"``, ``"INFO"``, ``"WARNING"``, ...).
        log_to_stderr: write gateway log lines to this process's stderr instead of the
            ``kernelbox.gateway`` logger.
        env: variables injected into every kernel's environment (str to str).
        token: the auth token clients must send; a random one when None. It reaches the
            gateway through its environment, never its command line.
        working_dir: the kernels' working directory; the current directory when None.
        startup_timeout: seconds `start()` waits for the gateway to answer.
        srt_path: the srt executable for ``sandbox=True``; found automatically when None.
        max_kernels: refuse to create more than this many kernels at once (None: no limit).
        cull_idle_timeout: shut down kernels idle for this many seconds (None: never).
        cull_interval: seconds between culling checks (None: Jupyter's default, 300).
        cull_connected: also cull idle kernels that have a client connected.
        cull_busy: also cull busy kernels.
        pool_size: kernels kept started and ready ahead of demand (0: none). A client's
            `connect()` then takes a ready kernel (a few milliseconds instead of ~0.5 s) and a
            replacement starts in the background. Pooled kernels have the same environment
            and sandbox as any other, and each is handed out once.
        kernel_memory_limit: bytes of memory each ``python3`` kernel may allocate (its data
            segment, ``RLIMIT_DATA``); past it allocations raise `MemoryError` in the kernel.
            It covers the kernel process's private memory only: not shared memory,
            ``/dev/shm`` or child processes (use `memory_limit` for those). None: no limit.
            At least 256 MiB.
        memory_limit: bytes of memory for the gateway's whole process tree (srt, the gateway,
            every kernel and their children, shared memory and ``/dev/shm`` included), through
            a cgroup; past it the kernel OOM killer ends a kernel (kernels go first). Needs
            root and a memory cgroup controller; `start()` refuses otherwise. None: no limit.
        pids_limit: processes and threads of the whole tree (a cgroup's ``pids.max``); forks
            past it fail with EAGAIN. Needs root and a pids controller. None: no limit.
            ``"default"``: 4,096 for a sandboxed gateway (none unsandboxed), enforced by a
            cgroup where one can be made, else by ``RLIMIT_NPROC`` of the sandbox's user (4,096
            more tasks than that user runs at the start: the limit counts all of its tasks).
        shm_size: with ``sandbox=True``, bytes of the sandbox's own ``/dev/shm`` (a tmpfs;
            writes past it fail with ENOSPC). ``"default"``: 1 GiB; None: srt's default (half
            of the machine's memory). The host directories the view hides are tmpfs mounts of
            at most 64 MiB each.
        sandbox_user: with ``sandbox=True`` and this process running as root, the user the
            sandbox runs as; None: ``$KERNELBOX_SANDBOX_USER`` or ``"kernelbox-sandbox"``. The
            sandbox never runs as root (`kernelbox.sandbox.user`). The user must exist and be
            able to write `working_dir` and run this Python; `start()` refuses otherwise.
        read_paths: with ``sandbox=True``, more host paths the kernels may read. On Linux a
            sandboxed kernel sees only its working directory, the gateway's state directory,
            the OS and Python runtimes it runs (`kernelbox.sandbox.view`) and these; every other
            host directory is empty inside. Each must exist.
        write_paths: with ``sandbox=True``, more host directories the kernels may read and
            write (shared by every kernel of the gateway). Host code inside them (a ``.venv``)
            is shown read-only, as in the working directory. Each must be a directory.
        isolate_kernels: with ``sandbox=True`` on Linux, make every kernel a tenant of its own:
            it works in ``working_dir/<kernel id>`` and has its own ``HOME``, temporary
            directory and ``%pip`` target, and a Landlock rule set lets it read only the
            sandbox's view and write only those directories, so two kernels of the gateway
            cannot read or change each other's files or packages. Needs Landlock ABI 2
            (Linux 5.19); `start()` raises `SandboxUnavailableError` otherwise. Off by default:
            kernels share the working directory, as in a notebook server. There is then no
            pre-launched first kernel (each kernel's directory is named by its id at launch).
        restart_limit: consecutive restarts tried when the gateway process exits unexpectedly
            (0: never restart). The listening socket is kept, so clients keep the URL and
            connections made meanwhile wait in its backlog. Kernels do not survive a restart.
        stable_uptime: seconds a gateway must stay up for the consecutive-restart count to
            start again from zero.
        on_restart: called with a `GatewayRestart` after each successful restart.
        listen_socket: an already-listening TCP socket to serve on instead of binding
            `host` and `port` (e.g. one passed by systemd socket activation). The gateway
            does not close it on `stop()`; it stays the caller's.

    The options are validated into a `GatewayConfig` (``.config``) before anything starts;
    `from_config` starts from such a config instead.

    Raises:
        TypeError, ValueError: an argument has the wrong type or an invalid value (e.g.
            ``sandbox`` that is not a bool, a negative or NaN duration).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        sandbox: bool = False,
        sandbox_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        log_level: str = "INFO",
        log_to_stderr: bool = False,
        env: Mapping[str, str] | None = None,
        token: str | None = None,
        working_dir: str | os.PathLike[str] | None = None,
        *,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
        srt_path: str | os.PathLike[str] | None = None,
        max_kernels: int | None = None,
        cull_idle_timeout: float | None = None,
        cull_interval: float | None = None,
        cull_connected: bool | None = None,
        cull_busy: bool | None = None,
        pool_size: int = 0,
        kernel_memory_limit: int | None = None,
        restart_limit: int = 5,
        stable_uptime: float = 30.0,
        on_restart: Callable[[GatewayRestart], object] | None = None,
        listen_socket: socket.socket | None = None,
        memory_limit: int | None = None,
        pids_limit: int | None | Literal["default"] = "default",
        sandbox_user: str | None = None,
        read_paths: Sequence[str | os.PathLike[str]] = (),
        write_paths: Sequence[str | os.PathLike[str]] = (),
        isolate_kernels: bool = False,
        shm_size: int | None | Literal["default"] = "default",
    ) -> None:
        if on_restart is not None and not callable(on_restart):
            raise TypeError(f"on_restart must be callable or None, not {type(on_restart).__name__}")
        if listen_socket is not None:
            if not isinstance(listen_socket, socket.socket) or listen_socket.type != socket.SOCK_STREAM:
                raise TypeError("listen_socket must be a listening TCP socket.socket")
            host, port = listen_socket.getsockname()[:2]
        self._listen_socket = listen_socket
        self.config = GatewayConfig(
            host=host, port=port, sandbox=sandbox, sandbox_config=sandbox_config,
            log_level=log_level, log_to_stderr=log_to_stderr, env=env if env is not None else {},
            token=token, working_dir=working_dir, startup_timeout=startup_timeout,
            srt_path=srt_path, max_kernels=max_kernels, cull_idle_timeout=cull_idle_timeout,
            cull_interval=cull_interval, cull_connected=cull_connected, cull_busy=cull_busy,
            pool_size=pool_size, kernel_memory_limit=kernel_memory_limit,
            restart_limit=restart_limit, stable_uptime=stable_uptime,
            memory_limit=memory_limit, pids_limit=pids_limit, sandbox_user=sandbox_user,
            read_paths=tuple(map(Path, read_paths)), write_paths=tuple(map(Path, write_paths)),
            isolate_kernels=isolate_kernels, shm_size=shm_size,
        )
        self._on_restart = on_restart
        self._launcher: Launcher = (
            SrtLauncher(
                sandbox_config, srt_path, self.config.sandbox_user,
                read_paths=self.config.read_paths, write_paths=self.config.write_paths,
                shm_size=self.config.resolved_shm_size,
            )
            if self.config.sandbox
            else DirectLauncher()
        )
        pids_by_cgroup = self.config.resolved_pids_limit
        # The default bound of a sandboxed gateway is never refused: where no pids cgroup can
        # be made (a normal user, no controller), RLIMIT_NPROC bounds the sandbox instead.
        self._nproc_limit: int | None = None
        if self.config.pids_limit_is_default and cgroup_support()["pids"] is not None:
            pids_by_cgroup, self._nproc_limit = None, self.config.resolved_pids_limit
        self._cgroups = GatewayCgroups(CgroupLimits(memory_bytes=self.config.memory_limit, pids=pids_by_cgroup))
        self._socket: socket.socket | None = None
        self._state_dir: Path | None = None
        self._supervisor: Supervisor | None = None
        self._stopped = anyio.Event()
        self._state: State = "new"

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        *,
        on_restart: Callable[[GatewayRestart], object] | None = None,
        listen_socket: socket.socket | None = None,
    ) -> KernelGateway:
        """A gateway with the options of `config` (``KernelGateway(**config.arguments())``).

        With `listen_socket`, the socket's address replaces ``config.host`` and ``config.port``,
        as with the constructor.

        Raises:
            TypeError: `config` is not a `GatewayConfig`, or as the constructor.
        """
        if not isinstance(config, GatewayConfig):
            raise TypeError(f"config must be a GatewayConfig, not {type(config).__name__}")
        return cls(**config.arguments(), on_restart=on_restart, listen_socket=listen_socket)

    # -- options, as attributes (read-only views of `config`) -----------------------------

    @property
    def sandbox(self) -> bool:
        """True when the gateway runs inside the OS sandbox."""
        return self.config.sandbox

    @property
    def working_dir(self) -> Path:
        """The kernels' working directory (absolute)."""
        return self.config.resolved_working_dir

    @property
    def env(self) -> dict[str, str]:
        """The variables injected into every kernel's environment (a copy)."""
        return dict(self.config.env)

    @property
    def pool_size(self) -> int:
        """Kernels kept started and ready ahead of demand."""
        return self.config.pool_size

    @property
    def kernel_memory_limit(self) -> int | None:
        """Bytes each kernel may allocate, or None."""
        return self.config.kernel_memory_limit

    # -- what is live ------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host clients should connect to (loopback when listening on all interfaces)."""
        if self.config.host in _WILDCARD_HOSTS:
            return "127.0.0.1"
        return self.config.host

    @property
    def port(self) -> int:
        """The TCP port the gateway listens on (the chosen one after ``port=0``, once started)."""
        if self._socket is not None:
            return int(self._socket.getsockname()[1])
        return self.config.port

    @property
    def url(self) -> str:
        """The gateway's base URL, e.g. ``"http://127.0.0.1:41231"``.

        Raises:
            InvalidStateError: the gateway is not started.
        """
        if self._socket is None:
            raise InvalidStateError("the gateway is not started; call start() or use 'async with'")
        address = self._socket.getsockname()[0]
        if address in _WILDCARD_HOSTS:
            address = "127.0.0.1" if self._socket.family == socket.AF_INET else "::1"
        return _format_url(address, self.port)

    @property
    def token(self) -> str:
        """The auth token clients send as ``Authorization: token <token>``."""
        return self.config.resolved_token

    @property
    def pid(self) -> int | None:
        """The pid of the gateway process (of srt when sandboxed), or None when not running."""
        process = self._supervisor.process if self._supervisor is not None else None
        return process.pid if process is not None and process.returncode is None else None

    @property
    def state(self) -> State:
        """``"new"``, ``"starting"``, ``"running"``, ``"restarting"``, ``"failed"``,
        ``"stopping"`` or ``"stopped"``."""
        if self._state in ("new", "stopping", "stopped") or self._supervisor is None:
            return self._state
        return self._supervisor.state

    @property
    def seconds_since_answer(self) -> float | None:
        """Seconds since the gateway last answered the supervisor's liveness probe (``GET /api``,
        every 2 s while running), or None before it first answered. A gateway silent for 8 s
        is killed and restarted; ``kernelbox serve`` feeds systemd's watchdog from this."""
        supervisor = self._supervisor
        if supervisor is None or supervisor.last_answer is None:
            return None
        return anyio.current_time() - supervisor.last_answer

    @property
    def restart_count(self) -> int:
        """How many times the supervisor has restarted the gateway after it exited."""
        return self._supervisor.restart_count if self._supervisor is not None else 0

    @property
    def log_tail(self) -> list[str]:
        """The gateway's last log lines, oldest first (at most `LOG_TAIL_LINES`)."""
        return list(self._supervisor.log_tail) if self._supervisor is not None else []

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> KernelGateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the gateway and return once it answers an authenticated request.

        May be called from any task; `stop()` need not be called from the same one.

        Raises:
            InvalidStateError: the gateway was already started (or stopped: create a new one).
            OSError: the listening socket cannot be bound (e.g. the port is in use), or the
                working directory does not exist.
            SandboxUnavailableError, SandboxConfigError: ``sandbox=True`` cannot run as asked
                (e.g. as root, the sandbox user is missing or cannot write `working_dir`).
            GatewayStartError: the process exited during start-up, or did not answer within
                `startup_timeout` seconds (the message has its last log lines); or
                `memory_limit`/`pids_limit` was asked for and cannot be enforced here.
        """
        if self._state != "new":
            raise InvalidStateError(
                f"KernelGateway.start() called on a {self._state} gateway; "
                "a gateway starts once (create a new KernelGateway to start again)"
            )
        self._state = "starting"
        config = self.config
        try:
            if self._listen_socket is not None:
                self._listen_socket.set_inheritable(True)
                self._socket = self._listen_socket
            else:
                self._socket = _bind_listening_socket(config.host, config.port)
            if self._cgroups.limits.any:
                try:
                    self._cgroups.create()
                except OSError as exc:
                    raise GatewayStartError(str(exc)) from exc
            self._state_dir = await anyio.to_thread.run_sync(create_state_dir)
            self._supervisor = Supervisor(
                prepare=self._prepare_launch,
                listen_fd=self._socket.fileno(),
                working_dir=config.resolved_working_dir,
                probe_url=lambda: self.url,
                token=self.token,
                startup_timeout=config.startup_timeout,
                restart_limit=config.restart_limit,
                stable_uptime=config.stable_uptime,
                log_to_stderr=config.log_to_stderr,
                on_restart=self._on_restart,
            )
            await self._supervisor.start()
        except BaseException:
            await self._shutdown(timeout=5.0)
            raise
        self._state = "running"
        logger.info("Started gateway [pid %d] on %s", self.pid, self.url)

    def _prepare_launch(self) -> Launch:
        """The argv and environment of the next (re)start (the launcher may refuse)."""
        assert self._state_dir is not None
        env = kernel_env(self.config.env)
        env["JUPYTER_RUNTIME_DIR"] = str(self._state_dir / "runtime")
        env["KG_AUTH_TOKEN"] = self.token
        # Rewritten for every (re)start, so a changed file never outlives a restart.
        env["JUPYTER_PATH"] = str(
            write_kernelspec(self._state_dir, self.config.kernel_memory_limit, tenants=tenant_view(self.config, self._state_dir))
        )
        command = [*_GATEWAY_MODULE, self.config.process_argument()]
        launch = self._launcher.prepare(
            command, env=env, working_dir=self.config.resolved_working_dir, state_dir=self._state_dir
        )
        # Outermost: joining the cgroups needs root, so before any privilege drop.
        argv = self._cgroups.wrap(launch.argv)
        if self._nproc_limit is not None:
            argv = nproc_limited(argv, self._nproc_limit, launch.uid)
        return Launch(argv, launch.env, launch.protect_from_oom)

    async def join(self) -> None:
        """Wait until the gateway is stopped for good: by `stop()`, or by a failure.

        Cancelling the waiting task cancels only the wait, not the gateway.

        Raises:
            InvalidStateError: the gateway was never started.
            GatewayExitedError: the gateway kept exiting and `restart_limit` consecutive
                restarts did not help, or a restart could not spawn it (the cause is chained);
                carries ``returncode`` and ``log_lines``.
        """
        if self._state == "new":
            raise InvalidStateError("the gateway is not started; call start() first")
        supervisor = self._supervisor
        if supervisor is not None:
            await supervisor.finished.wait()
            if supervisor.failure is not None:
                raise supervisor.failure
        else:
            await self._stopped.wait()

    async def stop(self, timeout: float = 10) -> None:
        """Stop the gateway and every kernel it started; safe to call more than once.

        Sends SIGTERM to the gateway's process group (the gateway then shuts its kernels
        down), waits up to `timeout` seconds, then SIGKILLs whatever of the process tree is
        left. Calling it on a gateway that was never started does nothing; a call made while
        another `stop()` runs waits for that one to finish.

        Args:
            timeout: seconds to wait for a clean exit before killing.
        """
        if self._state == "new" or self._state == "stopped":
            return
        if self._state == "stopping":
            await self._stopped.wait()
            return
        await self._shutdown(timeout=timeout)

    async def _shutdown(self, timeout: float) -> None:
        """Stop the process tree, then release everything; runs to the end even if cancelled."""
        self._state = "stopping"
        try:
            with anyio.CancelScope(shield=True):
                stopped = await self._supervisor.stop(timeout) if self._supervisor is not None else []
                if self._socket is not None:
                    if self._socket is not self._listen_socket:  # the caller's socket stays open
                        self._socket.close()
                    self._socket = None
                if self._state_dir is not None:
                    await anyio.to_thread.run_sync(remove_state_dir, self._state_dir)
                    self._state_dir = None
                if self._cgroups.paths:
                    await anyio.to_thread.run_sync(self._cgroups.remove)
        finally:
            self._state = "stopped"
            self._stopped.set()
        for process in stopped:
            logger.info("Stopped gateway [pid %d]", process.pid)
