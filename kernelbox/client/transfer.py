"""File transfer through the kernel itself: `upload` and `download`.

Bytes travel as base64 inside ordinary executions (`KernelClient.execute`), so a transfer works
against any gateway — kernelbox's, Jupyter Server, Enterprise Gateway on a cluster — including
those without a contents API, and it queues behind (never beside) the user's own executions.

Wire format, one execution per chunk (a small file needs one execution in each direction):

- upload: the code carries a base64 chunk; a helper in the kernel appends it to a temporary file
  beside the destination, which is checked (size, SHA-256) and renamed into place at the end.
- download: the helper answers each request with one ``display_data`` message whose MIME bundle
  holds a single ``application/vnd.kernelbox.transfer+json`` entry (base64 data, end-of-file
  flag, SHA-256 at the end). A custom MIME type keeps the data apart from anything user threads
  print meanwhile, and it has no ``text/plain``, so it never shows up as output text.

The kernel-side helper lives in ``sys.modules["_kernelbox_transfer"]``, never in the user's
namespace: every cell is ``exec(<program>, {})`` with a throwaway globals dict, and is sent with
``store_history=False`` so no ``In``/``_iN`` history entry keeps the data alive in the kernel.

Paths are resolved in the kernel against its *starting directory* (IPython's
``InteractiveShell.starting_dir``: the kernel's working directory when it started, so a later
``os.chdir`` in user code does not move it). ``realpath`` resolves ``..`` and symlinks before the
check, so ``../x``, absolute paths elsewhere and symlinks that lead outside are all refused with
`FileTransferError` unless ``allow_outside=True``. This guards the *agent's* choice of path; code
running in the kernel can of course touch whatever the kernel (and its sandbox) can.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import posixpath
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any, Protocol

import anyio

from .._errors import ExecutionError, FileTransferError, KernelboxError
from .._host_paths import UntrustedLinkError, replace_file
from ._results import ExecutionResult


class Executor(Protocol):
    """What a transfer needs from a client: `KernelClient.execute`."""

    async def execute(
        self, code: str, timeout: float | None = ..., *, store_history: bool = ..., max_output_bytes: int | None = ...
    ) -> ExecutionResult: ...


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_TRANSFER_BYTES",
    "DEFAULT_TRANSFER_TIMEOUT_SECONDS",
    "FileTransferError",
    "MAX_CHUNK_BYTES",
    "download",
    "upload",
]

DEFAULT_CHUNK_BYTES = 1024 * 1024
# Base64 grows a chunk by 4/3; Tornado's default WebSocket message limit (10 MiB, which Jupyter
# Server and Kernel Gateway keep) must still hold the whole execute_request.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_TRANSFER_BYTES = 128 * 1024 * 1024
DEFAULT_TRANSFER_TIMEOUT_SECONDS = 300.0
# Removing a half-written file after a failure: short, and shielded from cancellation.
_CLEANUP_TIMEOUT_SECONDS = 10.0

TRANSFER_MIME = "application/vnd.kernelbox.transfer+json"
_HELPER_MODULE = "_kernelbox_transfer"
_HELPER_VERSION = 2
_KERNEL_ERROR = "KernelboxTransferError"
ALLOW_OUTSIDE_HINT = ", or pass allow_outside=True"
# First line of every transfer cell: the helper recognises its cells by it (see _patch_cell_names).
_CELL_MARKER = "# kernelbox file transfer\n"


# The helper module's source: a real Python file shipped as package data, run inside the kernel.
_HELPER_SOURCE = (Path(__file__).resolve().parent.parent / "_kernel_side" / "transfer_helper.py").read_text(
    encoding="utf-8"
)


# Installs (or upgrades) the helper module; binds names only in the cell's throwaway globals.
_INSTALL = (
    "import sys, types\n"
    f"if getattr(sys.modules.get({_HELPER_MODULE!r}), 'VERSION', None) != {_HELPER_VERSION}:\n"
    f"    _module = types.ModuleType({_HELPER_MODULE!r})\n"
    f"    exec(compile({_HELPER_SOURCE!r}, '<kernelbox transfer helper>', 'exec'), _module.__dict__)\n"
    f"    sys.modules[{_HELPER_MODULE!r}] = _module\n"
)


def _call(function: str, *args: Any) -> str:
    """One call of a helper function, as a line of Python (arguments as literals)."""
    return f"sys.modules[{_HELPER_MODULE!r}].{function}({', '.join(repr(a) for a in args)})\n"


def build_cell(*calls: str, install: bool = False) -> str:
    """The code of one transfer execution: a single ``exec`` with a throwaway globals dict.

    Pure: no I/O. ``install`` prepends the helper's (idempotent) installation. The cell ends by
    dropping its own source from the kernel's caches (``forget``), so no data stays behind.
    """
    program = (_INSTALL if install else "import sys\n") + "".join(calls) + _call("forget")
    return f"{_CELL_MARKER}exec({program!r}, {{}})"


def check_kernel_path(path: str | os.PathLike[str]) -> str:
    """Validate a path in the kernel's filesystem before anything is sent; return it as a str.

    Raises:
        TypeError: `path` is not a str or path-like.
        ValueError: it is empty or contains a NUL character.
    """
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"the kernel path must be a str, not {type(text).__name__}")
    if not text or "\x00" in text:
        raise ValueError(f"the kernel path must be non-empty and without NUL characters, not {text!r}")
    return text


def _check_sizes(chunk_bytes: int, max_bytes: int | None) -> None:
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be an int from 1 to {MAX_CHUNK_BYTES}, not {chunk_bytes!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise ValueError(f"max_bytes must be a non-negative int or None, not {max_bytes!r}")


def _transfer_payloads(result: ExecutionResult, tid: str) -> list[dict[str, Any]]:
    """The helper's answers for transfer `tid` in one execution's outputs, in order."""
    payloads = []
    for output in result.outputs:
        payload = output.data.get(TRANSFER_MIME)
        if isinstance(payload, dict) and payload.get("tid") == tid:
            payloads.append(payload)
    return payloads


def _translate(exc: ExecutionError, path: str) -> FileTransferError:
    """Turn an error raised by the helper (or the kernel's filesystem) into `FileTransferError`."""
    if exc.ename == _KERNEL_ERROR:
        reason, _, message = exc.evalue.partition(": ")
        if reason == "outside":
            message += ALLOW_OUTSIDE_HINT
        return FileTransferError(message or exc.evalue, path=path, reason=reason or "os_error")
    return FileTransferError(f"the kernel failed the transfer of {path!r}: {exc.ename}: {exc.evalue}",
                             path=path, reason="os_error")


class _Deadline:
    """What is left of one timeout shared by a transfer's executions (None: no limit)."""

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and (math.isnan(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be positive seconds or None, not {timeout}")
        self._end = None if timeout is None else anyio.current_time() + timeout
        self.timeout = timeout

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        # A tiny positive floor: the client raises its own TimeoutError, which says what happened.
        return max(self._end - anyio.current_time(), 0.001)


def _output_limit(chunk_bytes: int) -> int:
    """Bytes one transfer execution may answer with: a base64 chunk plus its JSON envelope.

    Anything more (a kernel that replaced the helper and floods) is dropped by the client's
    output limit, so the transfer then fails as damaged instead of filling memory.
    """
    return 2 * (4 * -(-chunk_bytes // 3)) + 64 * 1024


async def _run(
    client: Executor, code: str, deadline: _Deadline, path: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> ExecutionResult:
    try:
        return await client.execute(
            code, timeout=deadline.remaining(), store_history=False, max_output_bytes=_output_limit(chunk_bytes)
        )
    except ExecutionError as exc:
        raise _translate(exc, path) from exc


async def _abort(client: Executor, tid: str) -> None:
    """Drop transfer `tid` in the kernel (closing and removing a partial upload); best effort."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT_SECONDS):
        try:
            await client.execute(build_cell(_call("abort", tid)), timeout=_CLEANUP_TIMEOUT_SECONDS,
                                 store_history=False)
        except (KernelboxError, TimeoutError):
            pass  # the kernel is gone or busy: nothing left to clean, or nothing we can do


def _local_chunks(source: bytes | str | os.PathLike[str], chunk_bytes: int) -> Generator[bytes, None, None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B")
        for start in range(0, len(view), chunk_bytes):
            yield bytes(view[start:start + chunk_bytes])
        return
    with open(source, "rb") as file:
        while chunk := file.read(chunk_bytes):
            yield chunk


def _local_size(source: bytes | str | os.PathLike[str]) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source).nbytes
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be bytes or a local file path, not {type(source).__name__}")
    try:
        info = os.stat(source)
    except OSError as exc:
        raise FileTransferError(f"cannot read the local file {os.fspath(source)!r}: {exc.strerror}",
                                path=os.fspath(source), reason="local") from exc
    if not os.path.isfile(source):
        raise FileTransferError(f"the local path {os.fspath(source)!r} is not a regular file",
                                path=os.fspath(source), reason="local")
    return info.st_size


async def upload(
    client: Executor,
    source: bytes | str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    allow_outside: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_bytes: int | None = DEFAULT_MAX_TRANSFER_BYTES,
    timeout: float | None = DEFAULT_TRANSFER_TIMEOUT_SECONDS,
) -> str:
    """Write `source` to `dest` in the kernel's filesystem, through the kernel.

    The file appears whole or not at all: chunks go to a temporary file beside `dest`, which
    is checked (size and SHA-256) and renamed over `dest` at the end. Missing parent
    directories are created. An existing file at `dest` is replaced.

    Args:
        client: a connected `KernelClient`.
        source: the bytes to write, or the path of a local file to copy.
        dest: the path in the kernel, relative to its working directory (absolute paths are
            allowed when they lie inside it).
        allow_outside: allow `dest` to resolve outside the kernel's working directory.
        chunk_bytes: bytes per execution (at most `MAX_CHUNK_BYTES`, 4 MiB).
        max_bytes: refuse larger sources (checked before anything is sent); None: no limit.
        timeout: seconds for the whole transfer; None waits forever.

    Returns:
        The absolute path written in the kernel, symlinks resolved.

    Raises:
        FileTransferError: `dest` is outside the working directory, the source is larger than
            `max_bytes` or unreadable, or the kernel could not write the file.
        ExecutionTimeoutError: the transfer ran past `timeout` (a `TimeoutError`).
        NotConnectedError, KernelDiedError, GatewayConnectionError: as `KernelClient.execute`.
    """
    kernel_path = check_kernel_path(dest)
    _check_sizes(chunk_bytes, max_bytes)
    size = _local_size(source)
    if max_bytes is not None and size > max_bytes:
        raise FileTransferError(
            f"the upload is {size} bytes, more than max_bytes={max_bytes}; raise max_bytes to send it",
            path=kernel_path, reason="too_large",
        )
    deadline = _Deadline(timeout)
    tid = uuid.uuid4().hex
    digest = hashlib.sha256()
    sent = 0
    started = finished = False
    chunks = _local_chunks(source, chunk_bytes)
    try:
        # The first cell installs the helper and opens the file. It carries no data, so the
        # data cells that follow already get the helper's cheap cell name.
        started = True
        begin = build_cell(_call("begin_upload", tid, kernel_path, bool(allow_outside)), install=True)
        await _run(client, begin, deadline, kernel_path, chunk_bytes)
        chunk = next(chunks, None)
        while True:
            calls = []
            if chunk is not None:
                sent += len(chunk)
                if max_bytes is not None and sent > max_bytes:
                    raise FileTransferError(f"the local file grew past max_bytes={max_bytes} while it was read",
                                            path=kernel_path, reason="too_large")
                digest.update(chunk)
                calls.append(_call("put", tid, base64.b64encode(chunk).decode("ascii")))
                chunk = next(chunks, None)
            if chunk is None:  # the last chunk and the commit share one execution
                calls.append(_call("commit_upload", tid, sent, digest.hexdigest()))
                result = await _run(client, build_cell(*calls), deadline, kernel_path, chunk_bytes)
                break
            await _run(client, build_cell(*calls), deadline, kernel_path, chunk_bytes)
        finished = True
    except FileTransferError as exc:
        # The helper removes its own partial file when it refuses or fails in the kernel.
        finished = finished or exc.reason not in ("local", "too_large")
        raise
    except OSError as exc:  # reading the local source
        raise FileTransferError(f"cannot read the local file {source!r}: {exc.strerror}",
                                path=kernel_path, reason="local") from exc
    finally:
        chunks.close()  # closes a local source file at once, even after an error
        if started and not finished:
            await _abort(client, tid)
    answers = _transfer_payloads(result, tid)
    if not answers:
        raise FileTransferError(f"the kernel did not confirm the upload of {kernel_path!r}",
                                path=kernel_path, reason="integrity")
    written = _reported_path(answers[-1], kernel_path, allow_outside)
    if answers[-1].get("size") != sent:
        raise FileTransferError(f"the kernel confirmed {answers[-1].get('size')!r} bytes for {kernel_path!r}, "
                                f"not the {sent} sent", path=kernel_path, reason="integrity")
    return written


async def download(
    client: Executor,
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    allow_outside: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_bytes: int | None = DEFAULT_MAX_TRANSFER_BYTES,
    timeout: float | None = DEFAULT_TRANSFER_TIMEOUT_SECONDS,
) -> bytes:
    """Read the file at `path` in the kernel's filesystem, through the kernel.

    Args:
        client: a connected `KernelClient`.
        path: the file in the kernel, relative to its working directory.
        dest: also write the bytes to this local file (created or replaced atomically: a
            temporary file beside it is renamed into place once the data is complete; missing
            directories are created). The path is opened at write time and a symlink on the
            way is followed only when root placed it in a directory only root can write, so a
            kernel that swaps a directory of `dest` for a link cannot redirect the write.
        allow_outside: allow `path` to resolve outside the kernel's working directory.
        chunk_bytes: bytes per execution (at most `MAX_CHUNK_BYTES`, 4 MiB).
        max_bytes: refuse larger files (checked in the kernel before reading); None: no limit.
        timeout: seconds for the whole transfer; None waits forever.

    Returns:
        The file's bytes.

    Raises:
        FileTransferError: `path` is outside the working directory, missing, not a regular
            file, larger than `max_bytes`, unreadable, or arrived damaged; or `dest` could not
            be written (``reason="local"``; ``reason="symlink"`` when a symlink that is not
            followed lies on the way, and nothing was written).
        ExecutionTimeoutError: the transfer ran past `timeout` (a `TimeoutError`).
        NotConnectedError, KernelDiedError, GatewayConnectionError: as `KernelClient.execute`.
    """
    kernel_path = check_kernel_path(path)
    _check_sizes(chunk_bytes, max_bytes)
    deadline = _Deadline(timeout)
    tid = uuid.uuid4().hex
    pieces: list[bytes] = []
    digest = hashlib.sha256()
    received = 0
    finished = False
    try:
        calls = [
            _call("begin_download", tid, kernel_path, bool(allow_outside), max_bytes),
            _call("get", tid, chunk_bytes),
        ]
        install = True
        while not finished:
            result = await _run(client, build_cell(*calls, install=install), deadline, kernel_path, chunk_bytes)
            install = False
            payloads = _transfer_payloads(result, tid)
            for begin in (a for a in payloads if "data" not in a):
                _reported_path(begin, kernel_path, allow_outside)
                if max_bytes is not None and (not isinstance(begin.get("size"), int) or begin["size"] > max_bytes):
                    raise FileTransferError(f"{kernel_path!r} is {begin.get('size')!r} bytes, more than "
                                            f"max_bytes={max_bytes}", path=kernel_path, reason="too_large")
            answers = [a for a in payloads if "data" in a]
            if not answers:
                raise FileTransferError(f"the kernel sent no data for {kernel_path!r}",
                                        path=kernel_path, reason="integrity")
            for answer in answers:
                chunk = _decode_chunk(answer.get("data"), kernel_path)
                received += len(chunk)
                if len(chunk) > chunk_bytes or (max_bytes is not None and received > max_bytes):
                    # Checked here, not only in the kernel: kernel code can replace the helper.
                    raise FileTransferError(
                        f"the kernel sent more of {kernel_path!r} than asked for ({received} bytes so far, "
                        f"max_bytes={max_bytes}, chunk_bytes={chunk_bytes})", path=kernel_path, reason="too_large")
                digest.update(chunk)
                pieces.append(chunk)
                if answer.get("eof"):
                    finished = True
                    if answer.get("sha256") != digest.hexdigest():
                        raise FileTransferError(f"{kernel_path!r} arrived damaged (checksum mismatch)",
                                                path=kernel_path, reason="integrity")
            calls = [_call("get", tid, chunk_bytes)]
    except FileTransferError as exc:
        # Refused or failed in the kernel, which has already let the file go; a refusal made
        # here (too much data) still has the kernel's side to abort.
        finished = exc.reason != "too_large" or received == 0
        raise
    finally:
        if not finished:
            await _abort(client, tid)
    data = b"".join(pieces)
    if dest is not None:
        await anyio.to_thread.run_sync(_write_local, Path(dest), data, kernel_path)
    return data


def _decode_chunk(data: object, kernel_path: str) -> bytes:
    if not isinstance(data, str):
        raise FileTransferError(f"the kernel sent a malformed chunk of {kernel_path!r}", path=kernel_path,
                                reason="integrity")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FileTransferError(f"the kernel sent a chunk of {kernel_path!r} that is not base64",
                                path=kernel_path, reason="integrity") from exc


def _reported_path(answer: dict[str, Any], kernel_path: str, allow_outside: bool) -> str:
    """The path the kernel reports, checked against the working directory it reports.

    The kernel resolves paths (it alone sees its filesystem); the client re-checks the answer,
    so a kernel whose helper was replaced cannot report a path outside without it being
    noticed. Kernel code can still read or write anything its sandbox allows; this rule guards
    the agent's choice of path, not the kernel's own reach (README, "Threat model").
    """
    path, base = answer.get("path"), answer.get("base")
    if not isinstance(path, str) or not isinstance(base, str) or not posixpath.isabs(path):
        raise FileTransferError(f"the kernel answered with a malformed path for {kernel_path!r}",
                                path=kernel_path, reason="integrity")
    if not allow_outside:
        normal, root = posixpath.normpath(path), posixpath.normpath(base)
        if posixpath.commonpath([root, normal]) != root:
            raise FileTransferError(
                f"the kernel reports {kernel_path!r} at {path}, outside its working directory {base}"
                f"{ALLOW_OUTSIDE_HINT}", path=kernel_path, reason="outside")
    return path


def _write_local(dest: Path, data: bytes, kernel_path: str) -> None:
    """Write `data` to `dest` atomically, following no symlink a kernel could have made.

    `dest` often lies in the kernel's working directory (``exports/report.pdf``), where kernel
    code can swap a directory for a link; `kernelbox._host_paths` opens the path now, from
    ``/``, and refuses such links (the rule: only links root placed in a directory only root
    can write are followed). A link at `dest` itself is replaced, not written through.
    """
    try:
        replace_file(dest, data)
    except UntrustedLinkError as exc:
        raise FileTransferError(f"the download of {kernel_path!r} was not written: {exc}",
                                path=kernel_path, reason="symlink") from exc
    except OSError as exc:
        raise FileTransferError(f"cannot write the local file {str(dest)!r}: {exc.strerror or exc}",
                                path=kernel_path, reason="local") from exc
