"""Kernel output: each kernel's stdout and stderr on a pipe of its own, read by the gateway.

A kernel process does not inherit the gateway's stdout/stderr (the pipe the supervisor reads
as the gateway's log): ipykernel echoes whatever reaches file descriptors 1 and 2 to the
original descriptors, so ``os.write(1, b"[C ...] ...")`` in kernel code used to become a
CRITICAL record of the gateway. Every kernel launch gets a pipe of its own instead, as both
its stdout and its stderr (`KernelOutputPipes.open`). The gateway reads it on its event loop
and, **only while its own log level is DEBUG**, passes the lines on as *kernel output
records* on its log pipe; at any other level it reads and discards them, so kernel output
costs the supervisor nothing. The records, one ``write(2)`` each:

    [K <kernel id>] <text>              a line the kernel's processes wrote
    [K <kernel id> kernelbox] <note>    what happened to that output (lines dropped, pipe closed)

The supervisor (`kernelbox.gateway._supervisor`) logs them under ``kernelbox.kernel`` at
DEBUG, never as records of the gateway and never at another level. Kernel output belongs to
the execution's result (ipykernel sends it on iopub as well); what reaches the log is for
debugging kernels. Each record:

- is **escaped** (`escape`): control characters (C0, DEL, C1), the Unicode line and
  paragraph separators and bidirectional controls are written as ``\\xNN`` / ``\\uNNNN``,
  newline, carriage return and tab as ``\\n``, ``\\r``, ``\\t``, a backslash as ``\\\\``, bytes
  that are not UTF-8 as ``\\xNN``: one line stays one record, nothing can move a terminal's
  cursor, and no text starts a line of its own on the gateway's log pipe;
- is **cut** at `MAX_RECORD_BYTES` (``PIPE_BUF``, 4096 bytes on Linux), so the one
  ``write(2)`` is atomic and no other writer of that pipe (srt, bwrap, socat) can land in the
  middle of a record and make its tail a line of its own;
- is **rate-limited** per kernel process: at most `MAX_LINES_PER_SECOND` records and
  `MAX_BYTES_PER_SECOND` bytes in each one-second window; past either, the rest of the
  window's output is dropped and counted, and one note says how much.

A pipe is read until end of file, or until `DRAIN_SECONDS` after its kernel process exited:
a process the kernel started in a session of its own survives the kernel and may hold the
pipe open for ever. The reader then closes its end (such a process's next write fails with
``EPIPE``) and says so in a note. Reading never blocks the event loop: the read end is
non-blocking, and each readiness reads at most `READ_BYTES`.

Only the standard library is imported here: the supervisor imports `parse_record`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass, field

__all__ = [
    "DRAIN_SECONDS",
    "MAX_BYTES_PER_SECOND",
    "MAX_LINES_PER_SECOND",
    "MAX_RECORD_BYTES",
    "KernelOutputLines",
    "KernelOutputPipes",
    "KernelOutputRecord",
    "escape",
    "parse_record",
]

# One record, its newline included, fits one atomic pipe write (POSIX: at least 512 bytes;
# Linux: 4096).
MAX_RECORD_BYTES = getattr(select, "PIPE_BUF", 4096)
MAX_LINES_PER_SECOND = 100
MAX_BYTES_PER_SECOND = 64 * 1024
RATE_WINDOW_SECONDS = 1.0
# How long a pipe is still read after its kernel process exited.
DRAIN_SECONDS = 2.0
# How often exited kernel processes and finished rate windows are looked for.
CHECK_SECONDS = 0.5
READ_BYTES = 64 * 1024
# The longest kernel id written into a record (Jupyter's are 36-character UUIDs).
MAX_KERNEL_ID_CHARS = 64

_TAG = "[K "
_NOTE = " kernelbox"
_CUT_MARK = " [kernelbox: line cut]"
_RECORD = re.compile(r"\[K ([^\s\]]+)( kernelbox)?\] (.*)", re.DOTALL)
_ID_UNSAFE = re.compile(r"[^0-9A-Za-z._:-]")


def _escape_table() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
    table.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    # Line/paragraph separators, bidirectional marks, embeddings, overrides, isolates; BOM.
    for code in (0x2028, 0x2029, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF):
        table[code] = f"\\u{code:04x}"
    # Bytes that are not UTF-8: `surrogateescape` decodes them to U+DC80..U+DCFF.
    table.update({0xDC00 + byte: f"\\x{byte:02x}" for byte in range(0x80, 0x100)})
    return table


_ESCAPES = _escape_table()


def escape(raw: bytes) -> str:
    """`raw` as text with nothing in it that acts on a terminal or a line-based log.

    Control characters, line/paragraph separators, bidirectional controls and invalid UTF-8
    are written as escapes (see the module docstring); a backslash is doubled, so an escape
    in the result always comes from `escape`. The result has no character below U+0020.
    """
    return raw.decode("utf-8", "surrogateescape").translate(_ESCAPES)


@dataclass(frozen=True)
class KernelOutputRecord:
    """One kernel output record as the supervisor reads it (see `parse_record`).

    Attributes:
        kernel_id: the kernel's id as the gateway wrote it.
        text: the escaped line (or, for a note, what happened to the output).
        note: True for a note of the gateway's, False for a line of the kernel's.
    """

    kernel_id: str
    text: str
    note: bool


def parse_record(line: str) -> KernelOutputRecord | None:
    """The kernel output record `line` is, or None when it is a line of the gateway's own log."""
    if not line.startswith(_TAG):
        return None
    match = _RECORD.fullmatch(line)
    if match is None:
        return None
    return KernelOutputRecord(match.group(1), match.group(3), note=match.group(2) is not None)


def _record_prefix(kernel_id: str, *, note: bool) -> bytes:
    label = _ID_UNSAFE.sub("?", kernel_id)[:MAX_KERNEL_ID_CHARS] or "?"
    return f"{_TAG}{label}{_NOTE if note else ''}] ".encode("ascii")


def _fit(text: str, budget: int) -> tuple[bytes, bool]:
    """`text` encoded, cut to at most `budget` bytes; (the bytes, whether it was cut).

    The cut falls on a character boundary and never inside an escape of `escape`'s.
    """
    encoded = text.encode("utf-8")
    if len(encoded) <= budget:
        return encoded, False
    cut = encoded[:budget].decode("utf-8", "ignore")
    start = _unfinished_escape(cut)
    return cut[:start].encode("utf-8"), True


def _unfinished_escape(text: str) -> int | None:
    """Where an escape that `text` ends in the middle of starts, or None.

    Every backslash `escape` writes starts an escape (``\\\\``, ``\\n``, ``\\xNN``,
    ``\\uNNNN``, ...), so in a run of backslashes they pair up from its start, and an odd
    run's last one starts an escape whose body follows it.
    """
    last = text.rfind("\\")
    if last == -1:
        return None
    run = last - len(text[:last].rstrip("\\")) + 1
    if run % 2 == 0:
        return None
    body = text[last + 1:]
    needed = {"x": 3, "u": 5}.get(body[:1], 1)
    return last if len(body) < needed else None


@dataclass
class KernelOutputLines:
    """One kernel process's output bytes in, kernel output records out; no I/O.

    Lines are split at ``\\n``; a line longer than a record can hold is cut there and the
    rest of it skipped. Each record counts against the current window's budget (its bytes
    with prefix and newline); once a record does not fit, the rest of the window is dropped
    and counted, and `due` (or `feed` or `close`, whichever comes first after the window)
    returns one note with the counts.

    Args:
        kernel_id: the kernel's id, written into every record.
        max_lines_per_second, max_bytes_per_second: the budget of each window.
        window_seconds: the window's length.
    """

    kernel_id: str
    max_lines_per_second: int = MAX_LINES_PER_SECOND
    max_bytes_per_second: int = MAX_BYTES_PER_SECOND
    window_seconds: float = RATE_WINDOW_SECONDS
    _partial: bytearray = field(default_factory=bytearray, repr=False)
    _skipping: bool = False  # inside a line that was cut: the rest of it is not shown
    _window_start: float | None = None
    _window_lines: int = 0
    _window_bytes: int = 0
    _dropping: bool = False
    _dropped_lines: int = 0
    _dropped_bytes: int = 0

    def __post_init__(self) -> None:
        self._prefix = _record_prefix(self.kernel_id, note=False)
        self._note_prefix = _record_prefix(self.kernel_id, note=True)
        self._text_budget = MAX_RECORD_BYTES - len(self._prefix) - 1
        # The raw bytes kept of an unfinished line: escaping only lengthens them.
        self.max_line_bytes = self._text_budget

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """The records for `data`, read at `now` (seconds, monotonic)."""
        records = self.due(now)
        self._start_window(now)
        if self._dropping:  # fast path: count, do not split
            self._drop_raw(data)
            return records
        *lines, rest = data.split(b"\n")
        for index, line in enumerate(lines):
            if self._dropping:
                self._drop_raw(b"\n".join(lines[index:]) + b"\n" + rest)
                return records
            if self._skipping:
                self._skipping = False
                self._partial.clear()
                continue
            self._partial += line
            self._emit(bytes(self._partial), records)
            self._partial.clear()
        if not self._skipping and not self._dropping:
            self._partial += rest
            if len(self._partial) > self.max_line_bytes:
                self._emit(bytes(self._partial), records)
                self._partial.clear()
                self._skipping = True
        return records

    def due(self, now: float) -> list[bytes]:
        """The note about the last window's dropped output, once that window has ended."""
        if self._window_start is None or now - self._window_start < self.window_seconds:
            return []
        self._window_start = None
        return self._drop_note()

    def close(self, now: float, why: str | None = None) -> list[bytes]:
        """The records still owed at the end: the unfinished line, the drop note, `why` as a note."""
        records: list[bytes] = []
        if self._partial and not self._skipping and not self._dropping:
            self._start_window(now)
            self._emit(bytes(self._partial), records)
        self._partial.clear()
        records += self._drop_note()
        if why is not None:
            records.append(self._note(why))
        return records

    def _start_window(self, now: float) -> None:
        if self._window_start is None:
            self._window_start = now
            self._window_lines = self._window_bytes = 0
            self._dropping = False

    def _emit(self, line: bytes, records: list[bytes]) -> None:
        text = escape(line[:self.max_line_bytes])
        encoded, cut = _fit(text, self._text_budget)
        if cut or len(line) > self.max_line_bytes:
            encoded, _ = _fit(text, self._text_budget - len(_CUT_MARK))
            encoded += _CUT_MARK.encode("ascii")
        record = self._prefix + encoded + b"\n"
        if (self._window_lines >= self.max_lines_per_second
                or self._window_bytes + len(record) > self.max_bytes_per_second):
            self._dropping = True
            self._dropped_lines += 1
            self._dropped_bytes += len(line) + 1
            return
        self._window_lines += 1
        self._window_bytes += len(record)
        records.append(record)

    def _drop_raw(self, data: bytes) -> None:
        """Count `data` as dropped, with the unfinished line's start, and skip to its end."""
        if self._skipping:  # the rest of a line already shown cut: not counted again
            end = data.find(b"\n")
            if end == -1:
                return
            data = data[end + 1:]
            self._skipping = False
        self._dropped_bytes += len(self._partial) + len(data)
        self._dropped_lines += data.count(b"\n")
        self._partial.clear()
        if data and not data.endswith(b"\n"):
            self._dropped_lines += 1  # an unfinished line: its rest is skipped when it comes
            self._skipping = True

    def _drop_note(self) -> list[bytes]:
        if not self._dropped_lines and not self._dropped_bytes:
            return []
        note = self._note(
            f"{self._dropped_lines} lines ({self._dropped_bytes} bytes) of output dropped: over "
            f"{self.max_lines_per_second} lines or {self.max_bytes_per_second} bytes per second"
        )
        self._dropped_lines = self._dropped_bytes = 0
        return [note]

    def _note(self, text: str) -> bytes:
        encoded, _ = _fit(escape(text.encode("utf-8")), MAX_RECORD_BYTES - len(self._note_prefix) - 1)
        return self._note_prefix + encoded + b"\n"


@dataclass(eq=False)
class _Pipe:
    kernel_id: str
    fd: int
    process: subprocess.Popen[bytes] | None
    lines: KernelOutputLines
    exited_at: float | None = None


class KernelOutputPipes:
    """The gateway's kernel output pipes, one per kernel process, read on its event loop.

    Owned by the gateway's kernel manager. `open` makes a pipe for a launch, `watch` starts
    reading its read end (the pipe belongs to this object from then on), `close_all` ends
    them at the gateway's stop. `watch` and `close_all` run on the event loop's thread.

    Args:
        forward: pass kernel output on (the gateway logs at DEBUG); otherwise it is read and
            discarded.
        log_fd: where records are written: the gateway's log pipe (its stderr).
    """

    def __init__(self, *, forward: bool, log_fd: int = 2) -> None:
        self._forward = forward
        self._log_fd = log_fd
        self._pipes: set[_Pipe] = set()
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def open() -> tuple[int, int]:
        """A new pipe for a kernel launch: (read end, write end), neither inherited.

        Give the write end to the launch as ``stdout`` and ``stderr`` (``subprocess`` makes
        the kernel's copies inheritable), then close it here and `watch` the read end.
        """
        return os.pipe()

    def watch(self, kernel_id: str, read_fd: int, process: subprocess.Popen[bytes] | None) -> None:
        """Read `read_fd` as the output of `kernel_id`'s `process` until it is done.

        Done means end of file, `DRAIN_SECONDS` after `process` exited, or `close_all`; the
        descriptor is closed then. `process` None: done at end of file or `close_all` only.
        """
        os.set_blocking(read_fd, False)
        pipe = _Pipe(kernel_id, read_fd, process, KernelOutputLines(kernel_id))
        loop = asyncio.get_running_loop()
        loop.add_reader(read_fd, self._read, pipe)
        self._pipes.add(pipe)
        if self._timer is None:
            self._timer = loop.call_later(CHECK_SECONDS, self._check)

    def close_all(self) -> None:
        """Stop reading every pipe and close them (at the gateway's stop)."""
        for pipe in list(self._pipes):
            self._close(pipe, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read(self, pipe: _Pipe) -> None:
        try:
            data = os.read(pipe.fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(pipe, f"output pipe unreadable ({exc.strerror}): closed")
            return
        if not data:
            self._close(pipe, None)
        elif self._forward:
            self._write(pipe.lines.feed(data, time.monotonic()))

    def _check(self) -> None:
        """Pass on finished windows' drop notes; close pipes whose process exited long enough ago."""
        self._timer = None
        now = time.monotonic()
        for pipe in list(self._pipes):
            if self._forward:
                self._write(pipe.lines.due(now))
            if pipe.exited_at is None:
                if pipe.process is not None and pipe.process.poll() is not None:
                    pipe.exited_at = now
            elif now - pipe.exited_at >= DRAIN_SECONDS:
                self._close(pipe, (
                    f"output pipe closed {DRAIN_SECONDS:g} s after the kernel process exited: "
                    "processes it started still held it open"
                ))
        if self._pipes:
            self._timer = asyncio.get_running_loop().call_later(CHECK_SECONDS, self._check)

    def _close(self, pipe: _Pipe, why: str | None) -> None:
        self._pipes.discard(pipe)
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to remove
            asyncio.get_running_loop().remove_reader(pipe.fd)
        os.close(pipe.fd)
        if self._forward:
            self._write(pipe.lines.close(time.monotonic(), why))

    def _write(self, records: list[bytes]) -> None:
        # One write(2) per record (each at most PIPE_BUF bytes: atomic on a pipe). Blocking,
        # like the gateway's own log handler; the rate limit bounds what is written.
        for record in records:
            with contextlib.suppress(BrokenPipeError):  # the supervisor is gone; the lifeline acts
                view = memoryview(record)
                while view:
                    view = view[os.write(self._log_fd, view):]
