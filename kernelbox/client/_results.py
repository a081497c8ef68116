"""What an execution produces: output chunks, rich outputs (MIME bundles) and the result.

Pure code: `ResultBuilder` turns iopub message contents into an `ExecutionResult` and writes
images to disk; it does no networking, so it is unit-tested without a kernel.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ChunkName = Literal["stdout", "stderr", "execute_result", "display_data"]

# MIME type -> file extension of images that are saved to disk.
IMAGE_EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/svg+xml": ".svg",
}

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (colours, cursor moves) from `text`."""
    return _ANSI_ESCAPE.sub("", text)


class OutputChunk(str):
    """A piece of output as it arrives: a `str`, tagged with where it came from.

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

    def __repr__(self) -> str:
        return f"OutputChunk({str(self)!r}, name={self.name!r})"


@dataclass
class RichOutput:
    """One ``execute_result`` or ``display_data`` message: a MIME bundle and its metadata.

    Attributes:
        type: ``"execute_result"`` (the value of a cell's last expression) or
            ``"display_data"`` (from ``display()``, plots, ...).
        data: the MIME bundle, MIME type to content (``str``, or a JSON value for
            ``application/json``); binary images are base64 strings, as on the wire.
        metadata: per-MIME-type metadata (e.g. image width and height).
        images: the files this output's images were saved to.
        execution_count: the cell's execution count, for ``execute_result``.
    """

    type: Literal["execute_result", "display_data"]
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    execution_count: int | None = None

    def _get(self, mime: str) -> Any:
        return self.data.get(mime)

    @property
    def text(self) -> str | None:
        """``text/plain``, the plain-text form every output should have."""
        return self._get("text/plain")

    @property
    def html(self) -> str | None:
        """``text/html``."""
        return self._get("text/html")

    @property
    def markdown(self) -> str | None:
        """``text/markdown``."""
        return self._get("text/markdown")

    @property
    def latex(self) -> str | None:
        """``text/latex``."""
        return self._get("text/latex")

    @property
    def json(self) -> Any:
        """``application/json``, already decoded."""
        return self._get("application/json")

    @property
    def svg(self) -> str | None:
        """``image/svg+xml`` source."""
        return self._get("image/svg+xml")

    @property
    def png(self) -> bytes | None:
        """``image/png``, decoded bytes."""
        value = self._get("image/png")
        return base64.b64decode(value) if value else None

    @property
    def jpeg(self) -> bytes | None:
        """``image/jpeg``, decoded bytes."""
        value = self._get("image/jpeg")
        return base64.b64decode(value) if value else None


@dataclass
class ExecutionResult:
    """The outcome of one successful execution.

    Attributes:
        text: all text output in order (stdout, stderr and the ``text/plain`` of results and
            displays, each display on its own line), stripped; None when there was none.
        images: paths of the images saved to ``images_dir``, in order.
        stdout: everything printed to stdout, unstripped.
        stderr: everything printed to stderr, unstripped.
        outputs: every rich output (``execute_result`` / ``display_data``) in order.
        execution_count: the kernel's execution counter for this execution.
        truncated: True when output beyond the client's output limit was dropped.
    """

    text: str | None
    images: list[Path] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    outputs: list[RichOutput] = field(default_factory=list)
    execution_count: int | None = None
    truncated: bool = False


def _decode_image(mime: str, value: Any) -> bytes:
    if mime == "image/svg+xml":
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if isinstance(value, str):
        return base64.b64decode(value)
    return bytes(value)


def save_images(data: dict[str, Any], images_dir: Path) -> list[Path]:
    """Write every image in a MIME bundle to a new, uniquely named file in `images_dir`.

    Returns:
        The paths written, e.g. ``[images_dir / "image-3f2a….png"]``. Names come from a
        random UUID and files are created exclusively, so they never overwrite each other.
    """
    saved: list[Path] = []
    for mime, extension in IMAGE_EXTENSIONS.items():
        value = data.get(mime)
        if not value:
            continue
        images_dir.mkdir(parents=True, exist_ok=True)
        path = images_dir / f"image-{uuid.uuid4().hex}{extension}"
        with path.open("xb") as file:
            file.write(_decode_image(mime, value))
        saved.append(path)
    return saved


class ResultBuilder:
    """Accumulates the iopub output of one execution into an `ExecutionResult`.

    Args:
        images_dir: where images are saved.
        max_output_bytes: text output kept at most (UTF-8 bytes of stream text and
            ``text/plain``); past it output is dropped and a marker is added. None: no limit.
    """

    TRUNCATION_MARKER = "\n[kernelbox: output truncated after {limit} bytes]\n"

    def __init__(self, images_dir: Path, max_output_bytes: int | None = None) -> None:
        self.images_dir = images_dir
        self.max_output_bytes = max_output_bytes
        self._pieces: list[str] = []
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._outputs: list[RichOutput] = []
        self._images: list[Path] = []
        self._size = 0
        self._truncated = False
        self.execution_count: int | None = None

    def _admit(self, text: str) -> str | None:
        """Count `text` against the output limit; return what may be kept, or None."""
        if self._truncated:
            return None
        if self.max_output_bytes is None:
            return text
        encoded = text.encode("utf-8", "surrogatepass")
        room = self.max_output_bytes - self._size
        if len(encoded) <= room:
            self._size += len(encoded)
            return text
        self._truncated = True
        kept = encoded[: max(room, 0)].decode("utf-8", "ignore")
        self._size = self.max_output_bytes
        return kept + self.TRUNCATION_MARKER.format(limit=self.max_output_bytes)

    def add_stream(self, name: str, text: str) -> OutputChunk | None:
        """Record a ``stream`` message; return the chunk to hand to the caller, if any."""
        kept = self._admit(text)
        if kept is None:
            return None
        self._pieces.append(kept)
        (self._stderr if name == "stderr" else self._stdout).append(kept)
        return OutputChunk(kept, "stderr" if name == "stderr" else "stdout")

    def add_rich(self, msg_type: str, content: dict[str, Any]) -> OutputChunk | None:
        """Record an ``execute_result`` or ``display_data`` message; save its images."""
        data = dict(content.get("data") or {})
        output = RichOutput(
            type="execute_result" if msg_type == "execute_result" else "display_data",
            data=data,
            metadata=dict(content.get("metadata") or {}),
            execution_count=content.get("execution_count"),
        )
        output.images = save_images(data, self.images_dir)
        self._images.extend(output.images)
        self._outputs.append(output)
        if output.execution_count is not None:
            self.execution_count = output.execution_count
        text = output.text
        if not text:
            return None
        # A display starts on its own line and ends one, so lines never run together.
        separated = ("\n" if self._pieces and not self._pieces[-1].endswith("\n") else "") + text
        kept = self._admit(separated + "\n")
        if kept is None:
            return None
        self._pieces.append(kept)
        return OutputChunk(kept, output.type, output)

    def build(self) -> ExecutionResult:
        text = "".join(self._pieces).strip()
        return ExecutionResult(
            text=text or None,
            images=list(self._images),
            stdout="".join(self._stdout),
            stderr="".join(self._stderr),
            outputs=list(self._outputs),
            execution_count=self.execution_count,
            truncated=self._truncated,
        )
