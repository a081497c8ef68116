"""What an execution produces: output chunks, rich outputs (MIME bundles) and the result.

Pure code. `ResultBuilder` turns iopub message contents into an `ExecutionResult` in two steps:
`add_stream` / `add_rich` run as messages arrive (they only count and keep; the output limit
applies here, so memory stays bounded however slowly the caller reads), and `save_images` /
`complete_rich` run in the caller's task, where writing files belongs. No networking, so it is
unit-tested without a kernel.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .._host_paths import UntrustedLinkError, create_file, open_directory
from .._terminal import neutralise_controls

__all__ = [
    "IMAGE_EXTENSIONS",
    "ChunkName",
    "ExecutionResult",
    "OutputChunk",
    "ResultBuilder",
    "RichOutput",
    "check_image_type",
    "save_images",
    "strip_ansi",
]

ChunkName = Literal["stdout", "stderr", "execute_result", "display_data"]

# MIME type -> file extension of images that are saved to disk.
IMAGE_EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/svg+xml": ".svg",
}

def strip_ansi(text: str) -> str:
    """Remove every terminal control from `text`: colours, cursor moves, OSC/DCS/APC strings, C1.

    Keeps ``\\n`` and ``\\t``; ``\\r`` becomes ``\\n``. Used for tracebacks, which are then
    plain text wherever they are printed (`kernelbox._terminal.neutralise_controls`).
    """
    return neutralise_controls(text, tty=False)


def _text_bytes(text: str) -> int:
    """UTF-8 size of `text`; cheap for the common all-ASCII case."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _bundle_bytes(data: Mapping[str, Any]) -> int:
    """Approximate size of a MIME bundle as it came over the wire, in bytes."""
    total = 0
    for value in data.values():
        if isinstance(value, str):
            total += _text_bytes(value)
        else:
            total += len(json.dumps(value, default=str))
    return total


class OutputChunk(str):
    """A piece of output as it arrives: a `str`, tagged with where it came from.

    Survives `copy`, `pickle` and comparison as the text it holds.

    Attributes:
        name: ``"stdout"`` or ``"stderr"`` for stream output; ``"execute_result"`` or
            ``"display_data"`` for the ``text/plain`` form of a rich output.
        output: the whole rich output (all its MIME types) for the last two, else None.
    """

    name: ChunkName
    output: RichOutput | None

    def __new__(cls, text: str, name: ChunkName, output: RichOutput | None = None) -> OutputChunk:
        chunk = super().__new__(cls, text)
        chunk.name = name
        chunk.output = output
        return chunk

    def __getnewargs__(self) -> tuple[str, ChunkName, RichOutput | None]:  # type: ignore[override]
        return (str(self), self.name, self.output)

    def __repr__(self) -> str:
        return f"OutputChunk({str(self)!r}, name={self.name!r})"


@dataclass(frozen=True)
class RichOutput:
    """One ``execute_result`` or ``display_data`` message: a MIME bundle and its metadata.

    Attributes:
        type: ``"execute_result"`` (the value of a cell's last expression) or
            ``"display_data"`` (from ``display()``, plots, ...).
        data: the MIME bundle, MIME type to content (``str``, or a JSON value for
            ``application/json``); binary images are base64 strings, as on the wire. Read-only.
        metadata: per-MIME-type metadata (e.g. image width and height). Read-only.
        images: the files this output's images were saved to.
        execution_count: the cell's execution count, for ``execute_result``.
    """

    type: Literal["execute_result", "display_data"]
    data: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[Path, ...] = ()
    execution_count: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        object.__setattr__(self, "images", tuple(self.images))

    def __reduce__(self) -> tuple[Any, ...]:
        # MappingProxyType cannot be pickled; rebuild from plain dicts.
        return (RichOutput, (self.type, dict(self.data), dict(self.metadata), self.images, self.execution_count))

    def _get(self, mime: str) -> Any:
        return self.data.get(mime)

    def _text(self, mime: str) -> str | None:
        value = self.data.get(mime)
        return value if isinstance(value, str) else None

    @property
    def text(self) -> str | None:
        """``text/plain``, the plain-text form every output should have."""
        return self._text("text/plain")

    @property
    def html(self) -> str | None:
        """``text/html``."""
        return self._text("text/html")

    @property
    def markdown(self) -> str | None:
        """``text/markdown``."""
        return self._text("text/markdown")

    @property
    def latex(self) -> str | None:
        """``text/latex``."""
        return self._text("text/latex")

    @property
    def json(self) -> Any:
        """``application/json``, already decoded."""
        return self._get("application/json")

    @property
    def svg(self) -> str | None:
        """``image/svg+xml`` source."""
        return self._text("image/svg+xml")

    @property
    def png(self) -> bytes | None:
        """``image/png``, decoded bytes (None when absent or not valid base64)."""
        return _decoded(self._get("image/png"))

    @property
    def jpeg(self) -> bytes | None:
        """``image/jpeg``, decoded bytes (None when absent or not valid base64)."""
        return _decoded(self._get("image/jpeg"))


def _decoded(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one successful execution (immutable).

    Attributes:
        text: all text output in order (stdout, stderr and the ``text/plain`` of results and
            displays, each display on its own line), stripped; None when there was none.
        images: paths of the images saved to ``images_dir``, in order: a ``list``, as in the
            API kernelbox keeps compatible (ipybox's ``ExecutionResult(text, images: list[Path])``);
            the result's other fields cannot be reassigned, and the list is the result's own copy.
        stdout: everything printed to stdout, unstripped.
        stderr: everything printed to stderr, unstripped.
        outputs: every rich output (``execute_result`` / ``display_data``) in order.
        execution_count: the kernel's execution counter for this execution.
        truncated: True when output beyond the output limit was dropped.
        dropped_bytes: how many bytes of output (text and MIME bundles) were dropped.
        output_errors: one readable sentence per output item that could not be kept, e.g. an
            image whose data is not valid base64, or an ``images_dir`` that cannot be written.
            The rest of the result is complete.
    """

    text: str | None
    images: list[Path] = field(default_factory=list, hash=False)
    stdout: str = ""
    stderr: str = ""
    outputs: tuple[RichOutput, ...] = ()
    execution_count: int | None = None
    truncated: bool = False
    dropped_bytes: int = 0
    output_errors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", list(self.images))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "output_errors", tuple(self.output_errors))


def _image_bytes(mime: str, value: Any) -> bytes:
    """The file content of an image in a MIME bundle.

    Raises:
        ValueError: the value is not a string, or not valid base64 for binary images.
    """
    if not isinstance(value, str):
        raise ValueError(f"{mime} data must be a string, not {type(value).__name__}")
    if mime == "image/svg+xml":
        return value.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{mime} data is not valid base64 ({exc})") from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# What may come before an SVG's root element: a byte order mark, white space, the XML
# declaration and other processing instructions, comments, and a DOCTYPE (matplotlib writes
# one) with an optional internal subset.
_SVG_PROLOG = re.compile(
    r"\A\ufeff?(?:\s+|<\?[^>]*\?>|<!--.*?-->|<!DOCTYPE\s+svg\b[^\[>]*(?:\[.*?\])?\s*>)*", re.DOTALL
)
_SVG_ROOT = re.compile(r"<svg[\s/>]")


def check_image_type(mime: str, content: bytes) -> None:
    """Check that `content` is the image type `mime` says, before it is written to disk.

    PNG must start with its signature (``\\x89PNG\\r\\n\\x1a\\n``), JPEG with ``\\xff\\xd8\\xff``
    (start of image), and SVG must be UTF-8 text whose first element is ``<svg``, after an
    optional XML declaration, comments, a DOCTYPE and white space. SVG is checked by this
    prefix, not parsed as XML: a full parse of kernel-sent text costs time and memory (entity
    expansion) for no gain here. Pure.

    Raises:
        ValueError: the content is not that type; the message says what was expected.
    """
    if mime == "image/png" and not content.startswith(_PNG_SIGNATURE):
        raise ValueError("image/png data is not a PNG image (it does not start with the PNG signature)")
    if mime == "image/jpeg" and not content.startswith(_JPEG_SIGNATURE):
        raise ValueError("image/jpeg data is not a JPEG image (it does not start with a JPEG start-of-image marker)")
    if mime == "image/svg+xml":
        text = content[:64 * 1024].decode("utf-8", "ignore")
        prolog = _SVG_PROLOG.match(text)
        if not _SVG_ROOT.match(text, prolog.end() if prolog else 0):
            raise ValueError("image/svg+xml data is not an SVG image (its first element is not <svg>)")


def save_images(data: Mapping[str, Any], images_dir: Path) -> tuple[list[Path], list[str]]:
    """Write every image in a MIME bundle to a new, uniquely named file in `images_dir`.

    Blocking file I/O: run it in a worker thread from async code. `images_dir` is opened now,
    following no symlink a kernel could have made (the rule is in `kernelbox._host_paths`:
    only links that root placed in a directory only root can write), and created if missing
    with the same discipline.

    Returns:
        ``(paths, problems)``: the files written, e.g. ``[images_dir / "image-3f2a….png"]``
        (names from a random UUID, files created exclusively, so they never overwrite each
        other), and one sentence per image that could not be saved: data that is not base64,
        content that is not the type its MIME type says (`check_image_type`), a symlink on
        the way to `images_dir`, or a directory that cannot be written. An image is decoded and
        checked before its file is created, and a file whose write fails (disk full, quota,
        I/O error) is removed, so no empty or partial image is ever left behind.
    """
    saved: list[Path] = []
    problems: list[str] = []
    directory: int | None = None
    try:
        for mime, extension in IMAGE_EXTENSIONS.items():
            value = data.get(mime)
            if value is None or value == "":
                continue
            try:
                content = _image_bytes(mime, value)
                check_image_type(mime, content)
            except ValueError as exc:
                problems.append(f"an image was not saved: {exc}")
                continue
            name = f"image-{uuid.uuid4().hex}{extension}"
            try:
                if directory is None:
                    directory = open_directory(images_dir, create=True)
                create_file(directory, name, content)
            except UntrustedLinkError as exc:
                problems.append(f"an image ({mime}) was not saved: {exc}")
                continue
            except OSError as exc:
                problems.append(f"an image ({mime}) was not saved: cannot write in {images_dir}: {exc.strerror or exc}")
                continue
            saved.append(images_dir / name)
    finally:
        if directory is not None:
            os.close(directory)
    return saved, problems


class ResultBuilder:
    """Accumulates the iopub output of one execution into an `ExecutionResult`.

    Args:
        images_dir: where images are saved.
        max_output_bytes: output kept at most, in bytes: UTF-8 stream text, ``text/plain``
            and every MIME bundle's data count. Past it output is dropped, counted in
            ``dropped_bytes`` and a marker is added to the text. None: no limit.
    """

    TRUNCATION_MARKER = "\n[kernelbox: output truncated after {limit} bytes]\n"

    def __init__(self, images_dir: Path, max_output_bytes: int | None = None) -> None:
        self.images_dir = images_dir
        self.max_output_bytes = max_output_bytes
        self._pieces: list[str] = []
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._outputs: list[RichOutput | None] = []
        self._slots: list[int] = []  # per rich output: its place in _pieces, kept in arrival order
        self._images: list[Path] = []
        self._problems: list[str] = []
        self._size = 0
        self._dropped = 0
        self._truncated = False
        self.execution_count: int | None = None

    @property
    def truncated(self) -> bool:
        """True once any output has been dropped."""
        return self._truncated

    def _room(self) -> float:
        if self.max_output_bytes is None:
            return float("inf")
        return self.max_output_bytes - self._size

    def _marker(self) -> str:
        return self.TRUNCATION_MARKER.format(limit=self.max_output_bytes)

    def _admit_text(self, text: str) -> str | None:
        """Count `text` against the limit; return what may be kept (with the marker), or None."""
        size = _text_bytes(text)
        if self._truncated:
            self._dropped += size
            return None
        if size <= self._room():
            self._size += size
            return text
        room = max(int(self._room()), 0)
        kept = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
        self._dropped += size - _text_bytes(kept)
        self._size += _text_bytes(kept)
        self._truncated = True
        return kept + self._marker()

    def add_stream(self, name: str, text: str) -> OutputChunk | None:
        """Record a ``stream`` message; return the chunk to hand to the caller, if any."""
        kept = self._admit_text(text if isinstance(text, str) else str(text))
        if kept is None:
            return None
        stream_name: ChunkName = "stderr" if name == "stderr" else "stdout"
        self._pieces.append(kept)
        (self._stderr if stream_name == "stderr" else self._stdout).append(kept)
        return OutputChunk(kept, stream_name)

    def add_rich(self, msg_type: str, content: Mapping[str, Any]) -> int | None:
        """Record an ``execute_result`` or ``display_data`` message as it arrives.

        Returns:
            A handle for `complete_rich` (call it once its images are saved), or None when the
            output was dropped by the output limit or is malformed.
        """
        data = content.get("data")
        metadata = content.get("metadata")
        if not isinstance(data, Mapping):
            self._problems.append(f"a {msg_type} message without a MIME bundle was ignored")
            return None
        size = _bundle_bytes(data)
        if self._truncated or size > self._room():
            self._dropped += size
            if not self._truncated:
                self._truncated = True
                self._pieces.append(self._marker())
            return None
        self._size += size
        count = content.get("execution_count")
        output = RichOutput(
            type="execute_result" if msg_type == "execute_result" else "display_data",
            data=data,
            metadata=metadata if isinstance(metadata, Mapping) else {},
            execution_count=count if isinstance(count, int) else None,
        )
        if output.execution_count is not None:
            self.execution_count = output.execution_count
        self._outputs.append(output)
        self._slots.append(len(self._pieces))
        self._pieces.append("")  # filled by complete_rich, so text stays in arrival order
        return len(self._outputs) - 1

    def drop_unreadable(self, size: int, reason: str) -> None:
        """Count an output that arrived but could not be read (`size` bytes), saying why."""
        self._dropped += size
        self._problems.append(reason)
        if not self._truncated:
            self._truncated = True
            self._pieces.append(self._marker())

    def pending_output(self, handle: int) -> RichOutput:
        """The rich output recorded under `handle` (before its images are saved)."""
        output = self._outputs[handle]
        assert output is not None
        return output

    def complete_rich(self, handle: int, images: list[Path], problems: list[str]) -> OutputChunk | None:
        """Attach the saved images to a rich output; return its text chunk for the caller, if any."""
        output = self._outputs[handle]
        assert output is not None
        if images:
            output = RichOutput(
                type=output.type, data=output.data, metadata=output.metadata,
                images=tuple(images), execution_count=output.execution_count,
            )
            self._outputs[handle] = output
            self._images.extend(images)
        self._problems.extend(problems)
        text = output.text
        if not text:
            return None
        # A display starts on its own line and ends one, so lines never run together.
        slot = self._slots[handle]
        before = next((piece for piece in reversed(self._pieces[:slot]) if piece), "")
        separated = ("\n" if before and not before.endswith("\n") else "") + text + "\n"
        self._pieces[slot] = separated
        return OutputChunk(separated, output.type, output)

    def build(self) -> ExecutionResult:
        text = "".join(self._pieces).strip()
        return ExecutionResult(
            text=text or None,
            images=list(self._images),
            stdout="".join(self._stdout),
            stderr="".join(self._stderr),
            outputs=tuple(output for output in self._outputs if output is not None),
            execution_count=self.execution_count,
            truncated=self._truncated,
            dropped_bytes=self._dropped,
            output_errors=tuple(self._problems),
        )
