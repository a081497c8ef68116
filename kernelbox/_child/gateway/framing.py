"""The kernel WebSocket's wire framing, built without parsing what passes through (pure).

Used by `kernelbox._child.gateway.websocket`: WebSocket frames written straight to the socket
(`websocket_frame`), the legacy JSON text of a message spliced from its packed frames
(`splice_json_message`), and long ``stream`` messages split into bounded pieces
(`split_stream_message`, `split_stream_frames`).
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["splice_json_message", "split_stream_frames", "split_stream_message", "websocket_frame"]


def websocket_frame(payload: bytes, binary: bool) -> bytes:
    """One unmasked, final, uncompressed WebSocket frame (RFC 6455 section 5.2), server to client.

    `binary` chooses the opcode: 0x2 (binary) or 0x1 (text; `payload` must be UTF-8).
    """
    first = 0x82 if binary else 0x81
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, length)
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", first, 126, length)
    else:
        head = struct.pack("!BBQ", first, 127, length)
    return head + payload



def splice_json_message(frames: list[bytes], channel: str, header: dict[str, Any]) -> bytes:
    """The legacy JSON text of a message, built from its packed frames without re-encoding.

    Gives what Jupyter Server's ``_reserialize_reply`` gives (``header``, ``msg_id``,
    ``msg_type``, ``parent_header``, ``metadata``, ``content``, ``buffers``, ``channel``) for a
    message without binary buffers; `header` is ``frames[0]`` parsed. The keys this function owns come after the kernel's frames: JSON parsers keep the last of
    duplicate keys, so a malformed frame cannot replace them.
    """
    tail = _json_tail(channel, header.get("msg_id"), header.get("msg_type"))
    return b"".join((
        b'{"header":', frames[0], b',"parent_header":', frames[1], b',"metadata":', frames[2],
        b',"content":', frames[3], tail,
    ))


def _json_tail(channel: str, msg_id: Any, msg_type: Any) -> bytes:
    return (
        f',"msg_id":{json.dumps(msg_id)},"msg_type":{json.dumps(msg_type)},"buffers":[],'
        f'"channel":{json.dumps(channel)}}}'
    ).encode()


def split_stream_message(msg: Any, max_chars: int) -> list[Any]:
    """Split a deserialized ``stream`` message whose text is longer than `max_chars`.

    The pieces keep the parent and get the ids ``<msg_id>.0``, ``<msg_id>.1``, ... (unique and
    the same on every replay, so a client can drop repeats by ``msg_id``).
    """
    if not isinstance(msg, dict) or msg.get("msg_type") != "stream":
        return [msg]
    text = msg.get("content", {}).get("text", "")
    if len(text) <= max_chars:
        return [msg]
    parts = []
    for index, start in enumerate(range(0, len(text), max_chars)):
        header = dict(msg["header"], msg_id=f"{msg['header']['msg_id']}.{index}")
        content = dict(msg["content"], text=text[start : start + max_chars])
        parts.append(dict(msg, header=header, msg_id=header["msg_id"], content=content))
    return parts


def split_stream_frames(frames: list[bytes], max_chars: int, pack: Any, unpack: Any) -> list[list[bytes]]:
    """`split_stream_message` for raw frames ``[header, parent, metadata, content, *buffers]``.

    Only a content frame longer than `max_chars` bytes can hold that many characters (JSON
    never takes fewer bytes than characters), so every other message passes unparsed.
    """
    if len(frames) < 4 or len(frames[3]) <= max_chars:
        return [frames]
    header = unpack(frames[0])
    if header.get("msg_type") != "stream":
        return [frames]
    content = unpack(frames[3])
    text = content.get("text", "")
    if len(text) <= max_chars:
        return [frames]
    return [
        [
            pack(dict(header, msg_id=f"{header['msg_id']}.{index}")),
            frames[1],
            frames[2],
            pack(dict(content, text=text[start : start + max_chars])),
            *frames[4:],
        ]
        for index, start in enumerate(range(0, len(text), max_chars))
    ]
