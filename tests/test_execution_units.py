"""The execution state machine and the wire framings, fed by hand: no gateway, no kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from kernelbox import _protocol
from kernelbox.client._execution import Execution
from kernelbox.client._results import OutputChunk, ResultBuilder

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def _message(channel: str, msg_type: str, content: dict[str, Any], msg_id: str, parent: str = "req") -> dict[str, Any]:
    return {
        "channel": channel,
        "header": {"msg_id": msg_id, "msg_type": msg_type},
        "parent_header": {"msg_id": parent},
        "metadata": {},
        "content": content,
    }


def _execution(tmp_path: Path, limit: int | None = None) -> Execution:
    return Execution("req", ResultBuilder(tmp_path, limit))


@pytest.mark.parametrize("reply_first", [True, False])
async def test_an_execution_ends_only_on_both_reply_and_idle(tmp_path: Path, reply_first: bool) -> None:
    execution = _execution(tmp_path)
    reply = _message("shell", "execute_reply", {"status": "ok", "execution_count": 1}, "r")
    idle = _message("iopub", "status", {"execution_state": "idle"}, "i")
    first, second = (reply, idle) if reply_first else (idle, reply)
    execution.feed(_message("iopub", "stream", {"name": "stdout", "text": "a\n"}, "s1"))
    execution.feed(first)
    assert not execution.done.is_set()
    execution.feed(_message("iopub", "stream", {"name": "stdout", "text": "b\n"}, "s2"))
    execution.feed(second)
    assert execution.done.is_set() and execution.finished
    assert [str(item) for item in execution.take()] == ["a\n", "b\n"]


async def test_a_replayed_message_is_filed_once(tmp_path: Path) -> None:
    execution = _execution(tmp_path)
    message = _message("iopub", "stream", {"name": "stdout", "text": "once\n"}, "same-id")
    execution.feed(message)
    execution.feed(message)
    assert execution.take() == [OutputChunk("once\n", "stdout")]


async def test_output_past_the_limit_is_dropped_as_it_arrives(tmp_path: Path) -> None:
    execution = _execution(tmp_path, limit=10)
    for index in range(100):
        execution.feed(_message("iopub", "stream", {"name": "stdout", "text": "x" * 10}, f"s{index}"))
    queued = execution.take()
    assert sum(len(chunk) for chunk in queued if isinstance(chunk, str)) < 100  # not 1000
    result = execution.builder.build()
    assert result.truncated and result.dropped_bytes == 990


async def test_a_failure_ends_the_execution_with_its_error(tmp_path: Path) -> None:
    execution = _execution(tmp_path)
    error = LookupError("boom")
    execution.fail(error)
    assert execution.done.is_set() and execution.error is error


async def test_waiting_returns_on_new_output_or_after_the_time() -> None:
    execution = Execution("req", ResultBuilder(Path("."), None))
    with anyio.fail_after(5):
        started = anyio.current_time()
        await execution.wait(0.05)
        assert anyio.current_time() - started >= 0.04
        execution.feed(_message("iopub", "stream", {"name": "stdout", "text": "x"}, "s"))
        await execution.wait(60)  # returns at once: output is queued


def test_the_v1_framing_round_trips_and_matches_jupyter_servers() -> None:
    from jupyter_server.services.kernels.connection.base import (
        deserialize_msg_from_ws_v1,
        serialize_msg_to_ws_v1,
    )

    message = _protocol.execute_request("print('é')", session="s")
    frame = _protocol.encode_v1(message)
    channel, parts = deserialize_msg_from_ws_v1(frame)
    assert channel == "shell" and len(parts) == 4
    server_frame = serialize_msg_to_ws_v1(parts, "shell")
    decoded = _protocol.decode_v1(server_frame)
    assert decoded["content"]["code"] == "print('é')" and decoded["buffers"] == []


def test_a_malformed_v1_frame_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        _protocol.decode_v1(b"\x02" + b"\x00" * 7 + b"junk")
