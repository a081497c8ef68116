"""Jupyter messaging protocol (v5.3) over the kernels WebSocket: building and reading messages.

Pure code. The WebSocket of ``/api/kernels/{id}/channels`` carries one JSON object per frame
with the message's ``channel`` (``shell``, ``iopub``, ``stdin``, ``control``) added; see
https://jupyter-client.readthedocs.io/en/stable/messaging.html.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
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
            "date": datetime.now(timezone.utc).isoformat(),
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


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, default=str)


def decode(frame: str | bytes) -> dict[str, Any]:
    """Parse one WebSocket frame into a message dict (``channel`` included)."""
    return json.loads(frame)


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
