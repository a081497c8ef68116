"""Jupyter messaging protocol (v5.3) over the kernels WebSocket: building and reading messages.

Pure code. The WebSocket of ``/api/kernels/{id}/channels`` speaks one of two framings:

- the legacy JSON protocol (no subprotocol): one JSON object per text frame, with the
  message's ``channel`` (``shell``, ``iopub``, ``stdin``, ``control``) added;
- ``v1.kernel.websocket.jupyter.org`` (`V1_SUBPROTOCOL`): one binary frame per message, the
  channel name and the message's parts as the kernel sent them, so the server forwards them
  without decoding and re-encoding each message. Layout (little-endian 64-bit integers): the
  number of offsets ``n``, then ``n`` offsets, then the channel name (UTF-8), then the parts
  ``header``, ``parent_header``, ``metadata``, ``content`` (JSON) and any binary buffers; the
  channel spans ``offsets[0]`` to ``offsets[1]``, part ``i`` ``offsets[i]`` to ``offsets[i + 1]``. Source: jupyter_server
  ``services/kernels/connection/base.py`` (``serialize_msg_to_ws_v1``,
  ``deserialize_msg_from_ws_v1``) and the protocol's documentation,
  https://jupyter-server.readthedocs.io/en/latest/developers/websocket-protocols.html.

See https://jupyter-client.readthedocs.io/en/stable/messaging.html for the messages.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

PROTOCOL_VERSION = "5.3"
_USERNAME = "kernelbox"


def new_message(
    msg_type: str, content: dict[str, Any], *, session: str, channel: str = "shell"
) -> dict[str, Any]:
    """Build a message ready to send as JSON; its id is ``msg["header"]["msg_id"]``."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": session,
            "username": _USERNAME,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


def execute_request(code: str, *, session: str, store_history: bool = True) -> dict[str, Any]:
    """An ``execute_request`` that stores history and refuses ``input()`` (no stdin channel).

    With ``allow_stdin=False``, ``input()`` in user code raises ``StdinNotImplementedError``
    at once instead of waiting for an answer that never comes. ``store_history=False`` keeps
    the code out of the kernel's ``In``/``_iN`` history and leaves the execution count alone.
    """
    return new_message(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": store_history,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        },
        session=session,
    )


def kernel_info_request(*, session: str) -> dict[str, Any]:
    """A ``kernel_info_request``; a kernel that answers it is ready to execute."""
    return new_message("kernel_info_request", {}, session=session)


V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
_OFFSET_BYTES = 8


def encode(message: dict[str, Any]) -> str:
    """One legacy-protocol text frame for `message` (``channel`` included)."""
    return json.dumps(message, default=str)


def decode(frame: str | bytes) -> dict[str, Any]:
    """Parse one legacy-protocol WebSocket frame into a message dict (``channel`` included)."""
    message: dict[str, Any] = json.loads(frame)
    return message


def encode_v1(message: dict[str, Any]) -> bytes:
    """One `V1_SUBPROTOCOL` binary frame for `message` (its ``channel`` says where it goes)."""
    parts = [
        json.dumps(message[key], default=str).encode("utf-8")
        for key in ("header", "parent_header", "metadata", "content")
    ]
    parts += [bytes(buffer) for buffer in message.get("buffers") or ()]
    channel = message["channel"].encode("utf-8")
    offsets = [_OFFSET_BYTES * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(channel))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = b"".join(value.to_bytes(_OFFSET_BYTES, "little") for value in (len(offsets), *offsets))
    return b"".join((head, channel, *parts))


def decode_v1(frame: bytes) -> dict[str, Any]:
    """Parse one `V1_SUBPROTOCOL` binary frame into a message dict (``channel`` included).

    Raises:
        ValueError: the frame is not a well-formed v1 message.
    """
    view = memoryview(frame)
    count = int.from_bytes(view[:_OFFSET_BYTES], "little")
    if not 6 <= count <= (len(view) // _OFFSET_BYTES):
        raise ValueError(f"not a {V1_SUBPROTOCOL} frame ({count} offsets in {len(view)} bytes)")
    offsets = [
        int.from_bytes(view[_OFFSET_BYTES * (i + 1) : _OFFSET_BYTES * (i + 2)], "little")
        for i in range(count)
    ]
    channel = bytes(view[offsets[0] : offsets[1]]).decode("utf-8")
    parts = [view[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]
    if len(parts) < 4:
        raise ValueError(f"a {V1_SUBPROTOCOL} frame needs 4 JSON parts, got {len(parts)}")
    header, parent_header, metadata, content = (json.loads(bytes(part)) for part in parts[:4])
    return {
        "channel": channel,
        "header": header,
        "parent_header": parent_header,
        "metadata": metadata,
        "content": content,
        "buffers": [bytes(part) for part in parts[4:]],
        "msg_type": header.get("msg_type") if isinstance(header, dict) else None,
    }


def is_well_formed(message: Any) -> bool:
    """True when `message` has the shape the client reads: a dict whose ``header``,
    ``parent_header`` and ``content`` are dicts (``metadata`` too, when present)."""
    if not isinstance(message, dict):
        return False
    for key in ("header", "parent_header", "content"):
        if not isinstance(message.get(key), dict):
            return False
    return isinstance(message.get("metadata", {}), dict) and isinstance(message.get("channel"), str)


def parent_id(message: dict[str, Any]) -> str | None:
    """The ``msg_id`` of the request this message answers, or None."""
    parent = message.get("parent_header") or {}
    return parent.get("msg_id")


def is_kernel_death(message: dict[str, Any]) -> bool:
    """True for the server's own iopub ``status`` saying the kernel died.

    Jupyter Server's kernel restarter notices a dead kernel process, restarts it and sends
    ``restarting`` (or ``dead`` when restarts fail) with no parent header.
    """
    return (
        message.get("channel") == "iopub"
        and message.get("header", {}).get("msg_type") == "status"
        and (message.get("content") or {}).get("execution_state") in ("restarting", "dead")
    )
