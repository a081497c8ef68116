"""`KernelGateway`: start, supervise and stop a Jupyter Kernel Gateway process.

The supervisor binds the listening socket itself and hands it to the gateway process as its
standard input (socket activation, see `kernelbox._child.gateway_app`). So the port is known before
the process starts (``port=0`` has no find-a-free-port race), a sandboxed gateway in its own
network namespace stays reachable, and readiness needs no polling: a request sent right away
waits in the socket's backlog until the gateway accepts it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import httpx
import psutil

from ._env import kernel_env, validate_env
from .._errors import GatewayExitedError, GatewayStartError
from .._tasks import BackgroundTask

logger = logging.getLogger("kernelbox.gateway")

LOG_TAIL_LINES = 50
DEFAULT_STARTUP_TIMEOUT_SECONDS = 60.0
_LISTEN_BACKLOG = 128
_TORNADO_LEVELS = {
    "D": logging.DEBUG,
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "C": logging.CRITICAL,
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}

State = Literal["new", "starting", "running", "restarting", "failed", "stopping", "stopped"]
MIN_KERNEL_MEMORY_BYTES = 256 * 1024 * 1024
RESTART_BACKOFF_SECONDS = 0.5
MAX_RESTART_BACKOFF_SECONDS = 10.0
LOG_DRAIN_SECONDS = 0.5


@dataclass(frozen=True)
class GatewayRestart:
    """What `KernelGateway` passes to ``on_restart`` after restarting a gateway that exited.

    Attributes:
        count: restarts so far in this gateway's life (1 for the first).
        returncode: the exit status of the process that died (negative: killed by signal).
        old_pid: the pid of the process that died.
        pid: the pid of the new gateway process.
    """

    count: int
    returncode: int | None
    old_pid: int
    pid: int


def _bind_listening_socket(host: str, port: int) -> socket.socket:
    """Create the gateway's listening TCP socket (IPv4 preferred when a name has both)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
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


def _log_gateway_line(line: str, *, stopping: bool) -> None:
    level = logging.INFO
    if len(line) > 2 and line[0] == "[" and line[1] in _TORNADO_LEVELS:
        level = _TORNADO_LEVELS[line[1]]
    if stopping and "received signal" in line:
        level = logging.INFO  # Kernel Gateway logs our own SIGTERM as CRITICAL
    logger.log(level, "%s", line)


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
            None: no limit. At least 256 MiB.
        restart_limit: consecutive restarts tried when the gateway process exits unexpectedly
            (0: never restart). The listening socket is kept, so clients keep the URL and
            connections made meanwhile wait in its backlog. Kernels do not survive a restart.
        stable_uptime: seconds a gateway must stay up for the consecutive-restart count to
            start again from zero.
        on_restart: called with a `GatewayRestart` after each successful restart.
        listen_socket: an already-listening TCP socket to serve on instead of binding
            `host` and `port` (e.g. one passed by systemd socket activation). The gateway
            does not close it on `stop()`; it stays the caller's.

    Raises:
        TypeError, ValueError: an argument has the wrong type or an invalid value.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        sandbox: bool = False,
        sandbox_config: str | os.PathLike[str] | None = None,
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
    ) -> None:
        if listen_socket is not None:
            if not isinstance(listen_socket, socket.socket) or listen_socket.type != socket.SOCK_STREAM:
                raise TypeError("listen_socket must be a listening TCP socket.socket")
            host, port = listen_socket.getsockname()[:2]
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        if str(log_level).upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, not {log_level!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty str, or None for a random one")
        if max_kernels is not None and max_kernels < 1:
            raise ValueError(f"max_kernels must be at least 1, not {max_kernels}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"pool_size must be an int, 0 or more, not {pool_size!r}")
        if kernel_memory_limit is not None and (
            isinstance(kernel_memory_limit, bool)
            or not isinstance(kernel_memory_limit, int)
            or kernel_memory_limit < MIN_KERNEL_MEMORY_BYTES
        ):
            raise ValueError(
                f"kernel_memory_limit must be None or at least {MIN_KERNEL_MEMORY_BYTES} bytes "
                f"(a Python kernel needs about 100 MB to start), not {kernel_memory_limit!r}"
            )
        self.kernel_memory_limit = kernel_memory_limit
        if restart_limit < 0:
            raise ValueError(f"restart_limit must be 0 or more, not {restart_limit}")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive seconds, not {startup_timeout}")
        self._requested_host = host
        self._requested_port = port
        self.sandbox = bool(sandbox)
        self.sandbox_config = sandbox_config
        # traitlets spells it WARN
        self.log_level = "WARN" if str(log_level).upper() == "WARNING" else str(log_level).upper()
        self.log_to_stderr = log_to_stderr
        self.env = validate_env(env)
        self._token = token if token is not None else secrets.token_urlsafe(32)
        self.working_dir = Path(working_dir if working_dir is not None else os.getcwd()).resolve()
        self.startup_timeout = float(startup_timeout)
        self.srt_path = srt_path
        self.restart_limit = restart_limit
        self.stable_uptime = float(stable_uptime)
        self._on_restart = on_restart
        self._listen_socket = listen_socket
        self._gateway_config: dict[str, Any] = {
            "log_level": self.log_level,
            "max_kernels": max_kernels,
            "cull_idle_timeout": cull_idle_timeout,
            "cull_interval": cull_interval,
            "cull_connected": cull_connected,
            "cull_busy": cull_busy,
            "pool_size": pool_size,
        }
        self.pool_size = pool_size

        self._state: State = "new"
        self._socket: socket.socket | None = None
        self._process: anyio.abc.Process | None = None
        self._state_dir: Path | None = None
        self._supervisor: BackgroundTask | None = None
        self._launch: tuple[list[str], dict[str, str]] | None = None
        self._finished = anyio.Event()
        self._failure: GatewayExitedError | None = None
        self._restart_count = 0
        self._pending_restart: tuple[int | None, int] = (None, 0)
        self._log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)

    # -- what is live ------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host clients should connect to (loopback when listening on all interfaces)."""
        if self._requested_host in _WILDCARD_HOSTS:
            return "127.0.0.1"
        return self._requested_host

    @property
    def port(self) -> int:
        """The TCP port the gateway listens on (the chosen one after ``port=0``, once started)."""
        if self._socket is not None:
            return int(self._socket.getsockname()[1])
        return self._requested_port

    @property
    def url(self) -> str:
        """The gateway's base URL, e.g. ``"http://127.0.0.1:41231"``.

        Raises:
            RuntimeError: the gateway is not started.
        """
        if self._socket is None:
            raise RuntimeError("the gateway is not started; call start() or use 'async with'")
        address = self._socket.getsockname()[0]
        if address in _WILDCARD_HOSTS:
            address = "127.0.0.1" if self._socket.family == socket.AF_INET else "::1"
        return _format_url(address, self.port)

    @property
    def token(self) -> str:
        """The auth token clients send as ``Authorization: token <token>``."""
        return self._token

    @property
    def pid(self) -> int | None:
        """The pid of the gateway process (of srt when sandboxed), or None when not running."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def state(self) -> State:
        """``"new"``, ``"starting"``, ``"running"``, ``"restarting"``, ``"failed"``,
        ``"stopping"`` or ``"stopped"``."""
        return self._state

    @property
    def restart_count(self) -> int:
        """How many times the supervisor has restarted the gateway after it exited."""
        return self._restart_count

    @property
    def log_tail(self) -> list[str]:
        """The gateway's last log lines, oldest first (at most `LOG_TAIL_LINES`)."""
        return list(self._log_tail)

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
            RuntimeError: the gateway was already started (or stopped: create a new one).
            OSError: the listening socket cannot be bound (e.g. the port is in use).
            SandboxUnavailableError, SandboxConfigError: ``sandbox=True`` cannot run as asked.
            GatewayStartError: the process exited during start-up, or did not answer within
                `startup_timeout` seconds; the message has its last log lines.
        """
        if self._state != "new":
            raise RuntimeError(
                f"KernelGateway.start() called on a {self._state} gateway; "
                "a gateway starts once (create a new KernelGateway to start again)"
            )
        self._state = "starting"
        try:
            self._prepare_launch()
            self._process = await self._spawn_process()
            self._supervisor = BackgroundTask(self._supervise, name="kernelbox gateway supervisor")
            self._supervisor.start()
            await self._wait_ready(self._process)
        except BaseException:
            await self._shutdown(timeout=5.0)
            raise
        self._state = "running"
        logger.info("Started gateway [pid %d] on %s", self._process.pid, self.url)

    def _prepare_launch(self) -> None:
        """Bind the socket and build the command and environment every (re)start uses."""
        if self._listen_socket is not None:
            self._socket = self._listen_socket
        else:
            self._socket = _bind_listening_socket(self._requested_host, self._requested_port)
        self._state_dir = Path(tempfile.mkdtemp(prefix="kernelbox-gateway-"))
        runtime_dir = self._state_dir / "runtime"
        runtime_dir.mkdir()
        env = kernel_env(self.env)
        env["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
        env["KG_AUTH_TOKEN"] = self._token
        if self.kernel_memory_limit is not None:
            env["JUPYTER_PATH"] = str(self._write_limited_kernelspec(self._state_dir))
        argv = [sys.executable, "-m", "kernelbox._child.gateway_app", json.dumps(self._gateway_config)]
        if self.sandbox:
            from ..sandbox import prepare_sandbox

            launch = prepare_sandbox(
                argv,
                config=self.sandbox_config,
                srt_path=self.srt_path,
                working_dir=self.working_dir,
                state_dir=self._state_dir,
                env=env,
            )
            argv, env = launch.argv, launch.env
        self._launch = (argv, env)

    def _write_limited_kernelspec(self, state_dir: Path) -> Path:
        """Write a ``python3`` kernelspec that applies the memory limit; return its data dir.

        Directories on ``JUPYTER_PATH`` come first in kernelspec lookup, so it replaces
        ipykernel's built-in ``python3`` for this gateway only.
        """
        data_dir = state_dir / "jupyter"
        spec_dir = data_dir / "kernels" / "python3"
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "kernelbox._child.kernel_launcher",
                     "--memory-limit", str(self.kernel_memory_limit), "-f", "{connection_file}"],
            "display_name": "Python 3 (kernelbox, memory-limited)",
            "language": "python",
            "metadata": {"debugger": True, "supported_encryption": ["curve"]},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
        return data_dir

    async def _spawn_process(self) -> anyio.abc.Process:
        assert self._socket is not None and self._launch is not None
        argv, env = self._launch
        process = await anyio.open_process(
            argv,
            stdin=self._socket.fileno(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.working_dir,
            env=env,
            start_new_session=True,
        )
        logger.debug("Spawned gateway [pid %d]", process.pid)
        return process

    async def _wait_ready(self, process: anyio.abc.Process) -> None:
        """Return once the gateway answers; raise `GatewayStartError` if it exits or stalls."""
        ready = False

        async def request(tg: anyio.abc.TaskGroup) -> None:
            nonlocal ready
            headers = {"Authorization": f"token {self._token}"}
            async with httpx.AsyncClient(timeout=self.startup_timeout, trust_env=False) as http:
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get(f"{self.url}/api/kernelspecs", headers=headers)
                    ready = response.status_code == 200
            if ready:
                tg.cancel_scope.cancel()
            # Otherwise the process is going down: let exited() report it.

        async def exited(tg: anyio.abc.TaskGroup) -> None:
            await process.wait()
            tg.cancel_scope.cancel()

        with anyio.move_on_after(self.startup_timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(request, tg)
                tg.start_soon(exited, tg)
        if ready:
            return
        if process.returncode is not None:
            raise GatewayStartError(
                f"the gateway process exited during start-up with status {process.returncode}",
                log_lines=self.log_tail,
            )
        raise GatewayStartError(
            f"the gateway did not answer within {self.startup_timeout:g} seconds",
            log_lines=self.log_tail,
        )

    # -- supervision ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        """The gateway's own task: pump its log, and restart it when it exits unexpectedly."""
        consecutive = 0
        while True:
            process = self._process
            assert process is not None
            started_at = anyio.current_time()
            returncode = await self._run_process(process)
            if self._state not in ("running", "restarting"):
                # stop() was called, or start() is failing and reports it itself.
                logger.info("Gateway [pid %d] exited with status %s", process.pid, returncode)
                return
            if anyio.current_time() - started_at >= self.stable_uptime:
                consecutive = 0
            consecutive += 1
            if consecutive > self.restart_limit:
                logger.error(
                    "Gateway [pid %d] exited with status %s; giving up after %d consecutive restarts",
                    process.pid, returncode, self.restart_limit,
                )
                self._failure = GatewayExitedError(
                    f"the gateway [pid {process.pid}] exited with status {returncode} and "
                    f"{self.restart_limit} consecutive restarts did not keep it up",
                    returncode=returncode,
                    log_lines=self.log_tail,
                )
                self._state = "failed"
                self._finished.set()
                return
            delay = min(RESTART_BACKOFF_SECONDS * 2 ** (consecutive - 1), MAX_RESTART_BACKOFF_SECONDS)
            logger.warning(
                "Gateway [pid %d] exited unexpectedly with status %s; restarting in %.1fs (%d/%d)",
                process.pid, returncode, delay, consecutive, self.restart_limit,
            )
            self._state = "restarting"
            await anyio.sleep(delay)  # back-off between restarts, not a readiness signal
            self._process = await self._spawn_process()
            self._pending_restart = (returncode, process.pid)

    async def _run_process(self, process: anyio.abc.Process) -> int:
        """Pump the log of `process` (confirming a restart once it answers) until it exits."""
        pump_done = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def pump() -> None:
                try:
                    await self._pump_log(process)
                finally:
                    pump_done.set()

            tg.start_soon(pump)
            if self._state == "restarting":
                tg.start_soon(self._confirm_restart, process)
            returncode = await process.wait()
            # Read the last lines; kernels that inherited the pipe may keep it open longer.
            with anyio.move_on_after(LOG_DRAIN_SECONDS):
                await pump_done.wait()
            tg.cancel_scope.cancel()
        return returncode

    async def _confirm_restart(self, process: anyio.abc.Process) -> None:
        try:
            await self._wait_ready(process)
        except GatewayStartError as exc:
            logger.error("Restarted gateway [pid %d] did not come up: %s", process.pid, exc.args[0])
            _signal_group(process.pid, signal.SIGKILL)
            return
        if self._state != "restarting" or self._process is not process:
            return
        self._state = "running"
        self._restart_count += 1
        returncode, old_pid = self._pending_restart
        logger.info("Restarted gateway [pid %d] on %s (restart %d)", process.pid, self.url, self._restart_count)
        if self._on_restart is not None:
            event = GatewayRestart(
                count=self._restart_count, returncode=returncode, old_pid=old_pid, pid=process.pid
            )
            try:
                self._on_restart(event)
            except Exception:
                logger.exception("on_restart callback failed")

    async def _pump_log(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        buffered = b""
        async for data in process.stdout:
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for raw in lines:
                self._record_log_line(raw)
        if buffered:
            self._record_log_line(buffered)

    def _record_log_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        self._log_tail.append(line)
        if self.log_to_stderr:
            print(line, file=sys.stderr, flush=True)
        else:
            _log_gateway_line(line, stopping=self._state in ("stopping", "stopped"))

    async def join(self) -> None:
        """Wait until the gateway is stopped for good: by `stop()`, or by exhausted restarts.

        Cancelling the waiting task cancels only the wait, not the gateway.

        Raises:
            RuntimeError: the gateway was never started.
            GatewayExitedError: the gateway kept exiting and `restart_limit` consecutive
                restarts did not help; carries ``returncode`` and ``log_lines``.
        """
        if self._state == "new":
            raise RuntimeError("the gateway is not started; call start() first")
        await self._finished.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self, timeout: float = 10) -> None:
        """Stop the gateway and every kernel it started; safe to call more than once.

        Sends SIGTERM to the gateway's process group (the gateway then shuts its kernels
        down), waits up to `timeout` seconds, then SIGKILLs whatever of the process tree is
        left. Calling it on a gateway that was never started does nothing.

        Args:
            timeout: seconds to wait for a clean exit before killing.
        """
        if self._state in ("new", "stopped", "stopping"):
            return
        await self._shutdown(timeout=timeout)

    async def _shutdown(self, timeout: float) -> None:
        """Stop the process tree, then release everything; runs to the end even if cancelled."""
        self._state = "stopping"
        processes: list[anyio.abc.Process] = []
        with anyio.CancelScope(shield=True):
            if self._process is not None:
                processes.append(self._process)
                await self._terminate(self._process, timeout)
            if self._supervisor is not None:
                self._supervisor.cancel()
                await self._supervisor.wait()
                self._supervisor = None
            # A restart may have spawned a process just before the supervisor was cancelled.
            if self._process is not None and self._process not in processes:
                processes.append(self._process)
                await self._terminate(self._process, timeout)
            for process in processes:
                await process.aclose()
        if self._socket is not None:
            if self._socket is not self._listen_socket:
                self._socket.close()
            self._socket = None
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
        self._state = "stopped"
        self._finished.set()
        for process in processes:
            logger.info("Stopped gateway [pid %d]", process.pid)

    async def _terminate(self, process: anyio.abc.Process, timeout: float) -> None:
        """SIGTERM the process group, wait, SIGKILL what is left of the whole tree."""
        if process.returncode is not None:
            return
        tree = _process_tree(process.pid)
        _signal_group(process.pid, signal.SIGTERM)
        with anyio.move_on_after(timeout):
            await process.wait()
        if process.returncode is None:
            logger.warning("Gateway [pid %d] did not exit in %gs; killing it", process.pid, timeout)
            _signal_group(process.pid, signal.SIGKILL)
            with anyio.move_on_after(timeout):
                await process.wait()
        # Kernels live in sessions of their own: give them the same time, then kill.
        await anyio.to_thread.run_sync(_reap_tree, tree, timeout)


def _process_tree(pid: int) -> list[psutil.Process]:
    """The descendants of `pid` (not `pid` itself: anyio reaps it)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _reap_tree(tree: list[psutil.Process], timeout: float) -> None:
    """Wait up to `timeout` seconds for the processes to exit, then SIGKILL the rest."""
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
