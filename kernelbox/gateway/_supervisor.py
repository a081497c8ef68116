"""Supervising the gateway process: readiness, the log pump, the restart policy and shutdown.

The policy follows jupyter_client's restarter: restart a process that exits unexpectedly,
with a back-off that doubles from `RESTART_BACKOFF_SECONDS` to `MAX_RESTART_BACKOFF_SECONDS`,
give up after ``restart_limit`` consecutive restarts, and start counting again from zero
after ``stable_uptime`` seconds up. Shutdown goes in steps, each with a bounded wait: SIGTERM
to the process group, SIGKILL to the group, then SIGKILL to whatever of the tree is left.

Every failure of the background work ends up in `Supervisor.failure`, logged once and raised
by `KernelGateway.join()`; none is dropped.

Liveness is checked, not assumed: while the gateway runs, the supervisor asks it ``GET /api``
every `LIVENESS_INTERVAL_SECONDS`. A gateway that has not answered for `HUNG_AFTER_SECONDS`
(stopped, its event loop blocked) is killed with its whole process tree and restarted by the
restart policy, on the same socket; `Supervisor.last_answer` tells when it last answered (the systemd watchdog
of ``kernelbox serve`` is fed from it).

The gateway's log pipe (its stdout and stderr) carries two kinds of lines: the gateway's own
records (``[I 12:00:00.000 KernelGatewayApp] ...``, logged under ``kernelbox.gateway`` at the
level their prefix names), and kernel output records that the gateway writes for its kernels
(``[K <kernel id>] ...``, see `kernelbox._child.gateway.kernel_output`), logged under
``kernelbox.kernel`` at DEBUG whatever they say. Kernels never write to this pipe: each has a
pipe of its own, read by the gateway.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
import httpx
import psutil
from anyio.streams.buffered import BufferedByteReceiveStream

from .._child.gateway.kernel_output import parse_record
from .._errors import GatewayExitedError, GatewayStartError, KernelboxError
from .._retry import Backoff, Retries
from .._tasks import BackgroundTask
from ._cgroups import protect_from_oom_killer
from ._launch import Launch
from ._processes import process_tree, reap_tree, signal_group, terminate

logger = logging.getLogger("kernelbox.gateway")
# Kernel output the gateway passes on (only while it logs at DEBUG), always logged at DEBUG.
kernel_logger = logging.getLogger("kernelbox.kernel")

__all__ = ["GatewayRestart", "State", "Supervisor"]

LOG_TAIL_LINES = 50
# A gateway log line longer than this is cut (a traceback may quote anything at length).
MAX_LOG_LINE_BYTES = 16 * 1024
RESTART_BACKOFF_SECONDS = 0.5
MAX_RESTART_BACKOFF_SECONDS = 10.0
# After the gateway exits, how long to keep reading its log (the sandbox's processes, srt,
# bwrap and socat, may hold the pipe open a little longer).
LOG_DRAIN_SECONDS = 0.5
# Liveness: how often the running gateway is asked, and how long without any answer makes it
# hung (then killed and restarted: back within ~12 s). One request waits at most until then.
LIVENESS_INTERVAL_SECONDS = 2.0
HUNG_AFTER_SECONDS = 8.0
# How long to wait for SIGKILLed leftovers of an exited gateway process to be gone.
LEFTOVER_KILL_SECONDS = 5.0

State = Literal["new", "starting", "running", "restarting", "failed", "stopping", "stopped"]

_TORNADO_LEVELS = {
    "D": logging.DEBUG,
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "C": logging.CRITICAL,
}


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


async def read_lines(stream: anyio.abc.AnyByteReceiveStream, max_line_bytes: int) -> AsyncGenerator[bytes, None]:
    """The lines of `stream` (without their ``\\n``) until it ends, each cut at `max_line_bytes`.

    A longer line yields its first `max_line_bytes` followed by ``b" [line cut]"``, and the
    rest of it is read and dropped, so a line without end costs at most `max_line_bytes` and one
    read's worth of memory (anyio's `BufferedByteReceiveStream.receive_until` keeps that bound).
    A last line without ``\\n`` is yielded as it is.
    """
    buffered = BufferedByteReceiveStream(stream)
    skipping = False  # inside an over-long line, after its first max_line_bytes
    while True:
        try:
            line = await buffered.receive_until(b"\n", max_line_bytes)
        except anyio.DelimiterNotFound:
            # receive_until keeps what it read: take it out (its start is the line's start).
            head = await buffered.receive(len(buffered.buffer))
            if not skipping:
                yield head[:max_line_bytes] + b" [line cut]"
            skipping = True
            continue
        except anyio.IncompleteRead:
            if buffered.buffer and not skipping:
                yield buffered.buffer
            return
        if not skipping:
            yield line if len(line) <= max_line_bytes else line[:max_line_bytes] + b" [line cut]"
        skipping = False


def _log_gateway_line(line: str, *, stopping: bool) -> None:
    level = logging.INFO
    if len(line) > 2 and line[0] == "[" and line[1] in _TORNADO_LEVELS:
        level = _TORNADO_LEVELS[line[1]]
    if stopping and "received signal" in line:
        level = logging.INFO  # Kernel Gateway logs our own SIGTERM as CRITICAL
    logger.log(level, "%s", line)


class Supervisor:
    """Runs one gateway process at a time on a fixed listening socket, restarting it as needed.

    Args:
        prepare: returns the `Launch` for the next (re)start (it may raise, e.g. when the
            sandbox can no longer run; a failing restart ends the supervision). Blocking: it
            is called in a worker thread.
        listen_fd: the listening socket's descriptor, given to the gateway as its stdin.
        working_dir: the gateway's (and its kernels') working directory.
        probe_url: returns the URL to probe for readiness (``GET /api/kernelspecs``).
        token: the auth token for the readiness probe.
        startup_timeout: seconds a (re)started gateway has to answer.
        restart_limit, stable_uptime: the restart policy (see the module docstring).
        log_to_stderr: copy gateway log lines to stderr instead of the logging module.
        on_restart: called after each successful restart; its errors are logged.
    """

    def __init__(
        self,
        *,
        prepare: Callable[[], Launch],
        listen_fd: int,
        working_dir: Path,
        probe_url: Callable[[], str],
        token: str,
        startup_timeout: float,
        restart_limit: int,
        stable_uptime: float,
        log_to_stderr: bool,
        on_restart: Callable[[GatewayRestart], object] | None,
    ) -> None:
        self._prepare = prepare
        self._listen_fd = listen_fd
        self._working_dir = working_dir
        self._probe_url = probe_url
        self._token = token
        self._startup_timeout = startup_timeout
        self._restart_limit = restart_limit
        self._stable_uptime = stable_uptime
        self._log_to_stderr = log_to_stderr
        self._on_restart = on_restart
        self.state: State = "new"
        self.process: anyio.abc.Process | None = None
        self.restart_count = 0
        # Liveness (see the module docstring): when the gateway last answered (anyio's clock),
        # and how many times it was killed as hung.
        self.last_answer: float | None = None
        self.hung_count = 0
        self.failure: GatewayExitedError | None = None
        self.finished = anyio.Event()
        self.log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._task: BackgroundTask | None = None
        self._spawned: list[anyio.abc.Process] = []
        self._pending_restart: tuple[int | None, int] = (None, 0)
        self._protect_from_oom = False
        # The running process's descendants, as they were when it became ready (see `_ready`).
        self._tree: list[psutil.Process] = []

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the gateway, start supervising it, and return once it answers.

        Raises:
            GatewayStartError: it exited during start-up or did not answer in time.
            The errors of `prepare` and of spawning (OSError, sandbox errors).
        """
        self.state = "starting"
        self.process = await self._spawn()
        self._task = BackgroundTask(self._supervise, name="kernelbox gateway supervisor")
        self._task.start()
        await self._wait_ready(self.process)
        self._ready(self.process)
        self.state = "running"

    async def _spawn(self) -> anyio.abc.Process:
        # Off the event loop: preparing a sandbox runs probes as the sandbox user (subprocesses,
        # ~150 ms), writes files and scans /proc.
        launch = await anyio.to_thread.run_sync(self._prepare)
        process = await anyio.open_process(
            launch.argv,
            stdin=self._listen_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._working_dir,
            env=launch.env,
            start_new_session=True,
        )
        self._spawned.append(process)
        self._protect_from_oom = launch.protect_from_oom
        logger.debug("Spawned gateway [pid %d]", process.pid)
        return process

    def _ready(self, process: anyio.abc.Process) -> None:
        """The process answered: only now is the sandbox's tree in place (see the callee).

        The tree is also remembered: if the process dies, its descendants are no longer
        reachable from it (see `_kill_leftovers`).
        """
        self.last_answer = anyio.current_time()
        self._tree = process_tree(process.pid)
        if self._protect_from_oom:
            protect_from_oom_killer(process.pid)

    async def _kill_leftovers(self, process: anyio.abc.Process) -> None:
        """SIGKILL what an unexpectedly exited gateway process left behind, and wait for it.

        When srt itself dies (killed, out of memory), its sandbox does not: ``sh`` and the
        outer ``bwrap`` stay in srt's process group, and the inner ``bwrap`` (in a session of
        its own) keeps the sandboxed gateway and its kernels running, still accepting on the
        listening socket the restarted gateway shares. Killing srt's group and the descendants
        seen at readiness ends the outer ``bwrap``; the sandbox's PID namespace dies with it.
        """
        signal_group(process.pid, signal.SIGKILL)
        tree, self._tree = self._tree, []
        left = await anyio.to_thread.run_sync(reap_tree, tree, 0, LEFTOVER_KILL_SECONDS)
        if left:
            logger.error("Gateway [pid %d] left processes that could not be killed: %s", process.pid, left)

    async def _wait_ready(self, process: anyio.abc.Process) -> None:
        """Return once the gateway answers; raise `GatewayStartError` if it exits or stalls."""
        ready = False

        async def request(tg: anyio.abc.TaskGroup) -> None:
            nonlocal ready
            headers = {"Authorization": f"token {self._token}"}
            async with httpx.AsyncClient(timeout=self._startup_timeout, trust_env=False) as http:
                # A refused or reset connection means the process is going down: exited() reports it.
                with contextlib.suppress(httpx.TransportError):
                    response = await http.get(f"{self._probe_url()}/api/kernelspecs", headers=headers)
                    ready = response.status_code == 200
            if ready:
                tg.cancel_scope.cancel()

        async def exited(tg: anyio.abc.TaskGroup) -> None:
            await process.wait()
            tg.cancel_scope.cancel()

        with anyio.move_on_after(self._startup_timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(request, tg)
                tg.start_soon(exited, tg)
        if ready:
            return
        if process.returncode is not None:
            raise GatewayStartError(
                f"the gateway process exited during start-up with status {process.returncode}",
                log_lines=list(self.log_tail),
            )
        raise GatewayStartError(
            f"the gateway did not answer within {self._startup_timeout:g} seconds",
            log_lines=list(self.log_tail),
        )

    # -- supervision -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        """The supervisor's own task: pump the log, restart the gateway when it exits."""
        try:
            await self._restart_loop()
        except Exception as exc:  # noqa: BLE001 - not dropped: logged and raised by join()
            logger.exception("Gateway supervision failed")
            self._fail(GatewayExitedError(f"the gateway supervisor failed: {exc!r}", log_lines=list(self.log_tail)), exc)

    def _fail(self, failure: GatewayExitedError, cause: BaseException | None = None) -> None:
        failure.__cause__ = cause
        self.failure = failure
        self.state = "failed"
        self.finished.set()

    async def _restart_loop(self) -> None:
        restarts = Retries(
            limit=self._restart_limit,
            backoff=Backoff(RESTART_BACKOFF_SECONDS, growth="exponential", max_seconds=MAX_RESTART_BACKOFF_SECONDS),
        )
        while True:
            process = self.process
            assert process is not None
            started_at = anyio.current_time()
            returncode = await self._run_process(process)
            if self.state not in ("running", "restarting"):
                # stop() was called, or start() is failing and reports it itself.
                logger.info("Gateway [pid %d] exited with status %s", process.pid, returncode)
                return
            await self._kill_leftovers(process)
            if anyio.current_time() - started_at >= self._stable_uptime:
                restarts.reset()
            delay = restarts.next_delay()
            if delay is None:
                logger.error(
                    "Gateway [pid %d] exited with status %s; giving up after %d consecutive restarts",
                    process.pid, returncode, self._restart_limit,
                )
                self._fail(GatewayExitedError(
                    f"the gateway [pid {process.pid}] exited with status {returncode} and "
                    f"{self._restart_limit} consecutive restarts did not keep it up",
                    returncode=returncode,
                    log_lines=list(self.log_tail),
                ))
                return
            logger.warning(
                "Gateway [pid %d] exited unexpectedly with status %s; restarting in %.1fs (%d/%d)",
                process.pid, returncode, delay, restarts.count, self._restart_limit,
            )
            self.state = "restarting"
            await anyio.sleep(delay)  # back-off between restarts, not a readiness signal
            try:
                self.process = await self._spawn()
            except (OSError, ValueError, KernelboxError) as exc:  # e.g. the working dir vanished
                logger.error("Could not restart the gateway: %s", exc)
                self._fail(
                    GatewayExitedError(
                        f"the gateway [pid {process.pid}] exited with status {returncode} and could "
                        f"not be restarted: {exc}",
                        returncode=returncode,
                        log_lines=list(self.log_tail),
                    ),
                    exc,
                )
                return
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
            if self.state == "restarting":
                tg.start_soon(self._confirm_restart, process)
            tg.start_soon(self._watch_liveness, process)
            returncode = await process.wait()
            with anyio.move_on_after(LOG_DRAIN_SECONDS):
                await pump_done.wait()
            tg.cancel_scope.cancel()
        return returncode

    async def _watch_liveness(self, process: anyio.abc.Process) -> None:
        """Ask the running gateway for an answer periodically; kill it when it is hung.

        Runs beside `process` until it exits. Only while the state is ``running`` and this is
        the current process: a restart under way is bounded by its own readiness wait.
        """
        headers = {"Authorization": f"token {self._token}"}
        self.last_answer = anyio.current_time()
        async with httpx.AsyncClient(timeout=HUNG_AFTER_SECONDS, trust_env=False) as http:
            while process.returncode is None:
                await anyio.sleep(LIVENESS_INTERVAL_SECONDS)  # a probing period, not a readiness signal
                if self.state != "running" or self.process is not process:
                    self.last_answer = anyio.current_time()
                    continue
                left = HUNG_AFTER_SECONDS - (anyio.current_time() - self.last_answer)
                with anyio.move_on_after(max(left, 0.1)):
                    try:
                        response = await http.get(f"{self._probe_url()}/api", headers=headers)
                        if response.status_code == 200:
                            self.last_answer = anyio.current_time()
                    except httpx.HTTPError:
                        pass  # counted below: no answer
                silent = anyio.current_time() - self.last_answer
                if silent >= HUNG_AFTER_SECONDS and self.state == "running" and self.process is process:
                    logger.error(
                        "Gateway [pid %d] has not answered for %.0fs (stopped, or its event loop is "
                        "blocked); killing it to restart it", process.pid, silent,
                    )
                    self.hung_count += 1
                    # Its whole tree: an unsandboxed gateway's kernels are in sessions of their own.
                    tree = await anyio.to_thread.run_sync(process_tree, process.pid)
                    signal_group(process.pid, signal.SIGKILL)
                    await anyio.to_thread.run_sync(reap_tree, tree, 0, LEFTOVER_KILL_SECONDS)
                    return

    async def _confirm_restart(self, process: anyio.abc.Process) -> None:
        try:
            await self._wait_ready(process)
        except GatewayStartError as exc:
            logger.error("Restarted gateway [pid %d] did not come up: %s", process.pid, exc.args[0])
            signal_group(process.pid, signal.SIGKILL)
            return
        if self.state != "restarting" or self.process is not process:
            return
        self._ready(process)
        self.state = "running"
        self.restart_count += 1
        returncode, old_pid = self._pending_restart
        logger.info("Restarted gateway [pid %d] on %s (restart %d)", process.pid, self._probe_url(), self.restart_count)
        if self._on_restart is not None:
            event = GatewayRestart(count=self.restart_count, returncode=returncode, old_pid=old_pid, pid=process.pid)
            try:
                self._on_restart(event)
            except Exception:  # the user's callback must not end the supervision; it is logged
                logger.exception("on_restart callback failed")

    async def _pump_log(self, process: anyio.abc.Process) -> None:
        """Read the gateway's log pipe line by line, each line cut at `MAX_LOG_LINE_BYTES`.

        A line without end costs at most `MAX_LOG_LINE_BYTES` of memory.
        """
        assert process.stdout is not None
        async with contextlib.aclosing(read_lines(process.stdout, MAX_LOG_LINE_BYTES)) as lines:
            async for raw in lines:
                self._record_log_line(raw)

    def _record_log_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        kernel_output = parse_record(line)
        if kernel_output is not None:
            # Not in `log_tail`: that is the gateway's own last words, for its errors.
            if self._log_to_stderr:
                print(line, file=sys.stderr, flush=True)
            elif kernel_output.note:
                kernel_logger.debug("Kernel %s: %s", kernel_output.kernel_id, kernel_output.text,
                                    extra={"kernel_id": kernel_output.kernel_id})
            else:
                kernel_logger.debug("[kernel %s] %s", kernel_output.kernel_id, kernel_output.text,
                                    extra={"kernel_id": kernel_output.kernel_id})
            return
        self.log_tail.append(line)
        if self._log_to_stderr:
            print(line, file=sys.stderr, flush=True)
        else:
            _log_gateway_line(line, stopping=self.state in ("stopping", "stopped"))

    # -- shutdown --------------------------------------------------------------------------

    async def stop(self, timeout: float) -> list[anyio.abc.Process]:
        """Stop the supervision and the process tree; returns the processes that were stopped.

        Runs to the end even when the calling task is cancelled.
        """
        if self.state != "failed":
            self.state = "stopping"
        with anyio.CancelScope(shield=True):
            if self.process is not None:
                await terminate(self.process, timeout)
            if self._task is not None:
                self._task.cancel()
                await self._task.wait()
                self._task = None
            # A restart may have spawned a process just before the supervisor was cancelled.
            for process in self._spawned:
                await terminate(process, timeout)
                await process.aclose()
        if self.state != "failed":
            self.state = "stopped"
        self.finished.set()
        stopped, self._spawned = self._spawned, []
        return stopped
