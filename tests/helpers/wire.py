"""The kernel WebSocket's two framings, written out for tests that drive the gateway directly.

The v1 framing (``v1.kernel.websocket.jupyter.org``, jupyter_server ``serialize_msg_to_ws_v1``):
a little-endian u64 count ``n`` of offsets, then ``n`` u64 offsets; the bytes between offsets 0
and 1 are the channel name, and each next pair delimits one ZMQ frame (header, parent_header,
metadata, content, buffers...). The legacy framing is one JSON text per message.
"""

from __future__ import annotations

import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

V1 = "v1.kernel.websocket.jupyter.org"


def encode_v1(channel: str, frames: list[bytes]) -> bytes:
    head = channel.encode()
    offsets = [8 * (1 + 1 + len(frames) + 1)]
    offsets.append(offsets[-1] + len(head))
    for frame in frames:
        offsets.append(offsets[-1] + len(frame))
    return struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets) + head + b"".join(frames)


def decode_v1(data: bytes) -> tuple[str, list[bytes]]:
    (count,) = struct.unpack_from("<Q", data)
    offsets = struct.unpack_from(f"<{count}Q", data, 8)
    channel = data[offsets[0] : offsets[1]].decode()
    return channel, [data[a:b] for a, b in zip(offsets[1:], offsets[2:], strict=False)]


def decode_any(event: Any, subprotocol: str | None) -> dict[str, Any]:
    """A received wsproto event as a message dict, from either format."""
    if subprotocol != V1:
        return json.loads(event.data)
    channel, frames = decode_v1(bytes(event.data))
    header, parent, metadata, content = (json.loads(f) for f in frames[:4])
    return {"channel": channel, "header": header, "parent_header": parent, "metadata": metadata,
            "content": content}


def request_frame(subprotocol: str | None, channel: str, msg_type: str, content: dict[str, Any],
                  session: str, parent: dict[str, Any] | None = None) -> tuple[str, str | bytes]:
    """A request message in either framing: ``(msg_id, frame)``; send bytes for v1, text otherwise."""
    header = {
        "msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session,
        "username": "test", "date": datetime.now(UTC).isoformat(), "version": "5.3",
    }
    parts = (header, parent or {}, {}, content)
    if subprotocol == V1:
        return header["msg_id"], encode_v1(channel, [json.dumps(part).encode() for part in parts])
    return header["msg_id"], json.dumps({"header": header, "parent_header": parent or {}, "metadata": {},
                                         "content": content, "channel": channel})
