"""Building results in unit tests, with the blocking image writes the client runs in a thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kernelbox.client._results import OutputChunk, ResultBuilder, save_images


def add_rich_and_save(builder: ResultBuilder, msg_type: str, content: Mapping[str, Any]) -> OutputChunk | None:
    """`ResultBuilder.add_rich`, `save_images` and `complete_rich` in one step, as the client
    does them for one ``execute_result`` / ``display_data`` message (blocking file I/O)."""
    handle = builder.add_rich(msg_type, content)
    if handle is None:
        return None
    images, problems = save_images(builder.pending_output(handle).data, builder.images_dir)
    return builder.complete_rich(handle, images, problems)
