"""The harness's side of the worker protocol: one `WorkerProcess` per benchmarked system."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import psutil
from anyio.streams.buffered import BufferedByteReceiveStream

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = REPO_ROOT / "benchmarks" / ".venv-ipybox"
MAX_REPLY_BYTES = 64 * 1024 * 1024
HELLO_TIMEOUT_SECONDS = 60.0
EXIT_TIMEOUT_SECONDS = 60.0
KILL_TIMEOUT_SECONDS = 10.0


class WorkerError(Exception):
    """A command failed in the worker (the system raised), or the worker itself failed."""

    def __init__(self, message: str, *, unsupported: bool = False, fatal: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported
        self.fatal = fatal


def worker_python(system: str, peer_python: Path | None) -> Path:
    """The interpreter that runs `system`'s worker: the peer's venv for ipybox, else ours."""
    if system != "ipybox":
        return Path(sys.executable)
    return peer_python or PEER_VENV / "bin" / "python"


def worker_env() -> dict[str, str]:
    """Our environment, with the repository importable and no forced matplotlib backend."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("MPLBACKEND", None)  # kernels must keep their inline backend to emit PNGs
    return env


@dataclass
class WorkerProcess:
    """A running worker; `call()` sends one command and waits (bounded) for its reply."""

    system: str
    process: anyio.abc.Process
    reader: BufferedByteReceiveStream
    log_path: Path
    _next_id: int = 0

    @classmethod
    async def start(
        cls, system: str, scratch: Path, peer_python: Path | None = None
    ) -> WorkerProcess:
        """Spawn the worker for `system` and wait for its hello.

        Raises:
            WorkerError: The interpreter is missing, or the worker cannot load the system
                (``unsupported``), or it did not say hello in time (``fatal``).
        """
        python = worker_python(system, peer_python)
        if not python.exists():
            raise WorkerError(
                f"{python} does not exist; run benchmarks/setup_peer.sh first", unsupported=True
            )
        scratch.mkdir(parents=True, exist_ok=True)
        log_path = scratch / f"worker-{system}.log"
        command = [
            str(python),
            "-m",
            "benchmarks.worker",
            "--system",
            system,
            "--scratch",
            str(scratch / system),
        ]
        with open(log_path, "wb") as log:
            process = await anyio.open_process(
                command,
                cwd=REPO_ROOT,
                env=worker_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # so the whole tree can be signalled as a group
            )
        assert process.stdout is not None
        worker = cls(system, process, BufferedByteReceiveStream(process.stdout), log_path)
        try:
            await worker._read_reply(None, HELLO_TIMEOUT_SECONDS)
        except WorkerError:
            await worker.kill()
            raise
        return worker

    async def call(self, op: str, timeout_seconds: float, **args: Any) -> dict[str, Any]:
        """Run command `op` in the worker and return its result.

        Raises:
            WorkerError: The command failed (``unsupported`` when the system lacks the
                feature); ``fatal`` when the worker died or overran `timeout_seconds`, in
                which case it has been killed with its whole process tree.
        """
        self._next_id += 1
        request = {"id": self._next_id, "op": op, "args": args}
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send((json.dumps(request) + "\n").encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            await self.kill()
            raise WorkerError(f"the {self.system} worker is gone: {exc}", fatal=True) from exc
        return await self._read_reply(self._next_id, timeout_seconds)

    async def _read_reply(self, request_id: int | None, timeout_seconds: float) -> dict[str, Any]:
        try:
            with anyio.fail_after(timeout_seconds):
                line = await self.reader.receive_until(b"\n", MAX_REPLY_BYTES)
        except TimeoutError as exc:
            await self.kill()
            raise WorkerError(
                f"the {self.system} worker did not answer within {timeout_seconds:g} s; killed it"
                f" (log: {self.log_path})",
                fatal=True,
            ) from exc
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError) as exc:
            await self.kill()
            raise WorkerError(
                f"the {self.system} worker exited unexpectedly ({self.log_tail()})", fatal=True
            ) from exc
        reply = json.loads(line)
        if reply.get("id") != request_id:
            await self.kill()
            raise WorkerError(f"the {self.system} worker answered out of turn: {reply}", fatal=True)
        if not reply.get("ok"):
            raise WorkerError(str(reply.get("error")), unsupported=bool(reply.get("unsupported")))
        return dict(reply["result"])

    def log_tail(self, lines: int = 5, separator: str = " | ") -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no log"
        return separator.join(tail) or "empty log"

    async def close(self) -> None:
        """Ask the worker to clean up and exit; kill its tree if it does not in time."""
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(b'{"op": "exit"}\n')
            with anyio.fail_after(EXIT_TIMEOUT_SECONDS):
                await self.process.wait()
        except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        await self.kill()

    async def kill(self) -> None:
        """Terminate the worker and every process it started (gateways, kernels, sandboxes)."""
        tree = _tree(self.process.pid)
        ours = os.getpgid(0)
        groups = {g for p in tree if (g := _pgid(p.pid)) is not None and g != ours}
        for group in groups:
            _signal_group(group, signal.SIGTERM)
        for process in tree:
            _signal(process, signal.SIGTERM)
        _, alive = await anyio.to_thread.run_sync(_wait_procs, tree)
        for process in alive:
            _signal(process, signal.SIGKILL)
        await anyio.to_thread.run_sync(_wait_procs, alive)
        with anyio.move_on_after(KILL_TIMEOUT_SECONDS, shield=True):
            await self.process.wait()
        await self.process.aclose()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _wait_procs(
    processes: list[psutil.Process],
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    gone, alive = psutil.wait_procs(processes, timeout=KILL_TIMEOUT_SECONDS)
    return list(gone), list(alive)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _signal(process: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process.send_signal(signum)
