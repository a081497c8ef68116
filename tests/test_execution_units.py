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


async def test_an_execution_completes_its_rich_outputs_and_saves_their_images(tmp_path: Path) -> None:
    import base64

    execution = _execution(tmp_path / "images")
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    execution.feed(_message("iopub", "stream", {"name": "stdout", "text": "before\n"}, "s"))
    execution.feed(_message("iopub", "display_data", {"data": {"image/png": png, "text/plain": "<Figure>"}}, "d"))
    items = execution.take()
    assert isinstance(items[1], int)  # a handle: the image is not saved yet
    assert not (tmp_path / "images").exists()
    with anyio.fail_after(5):
        chunks = [await execution.complete(item) for item in items]
    assert chunks[0] == "before\n" and chunks[1] == "<Figure>\n"
    assert chunks[1] is not None and chunks[1].output is not None
    (saved,) = chunks[1].output.images
    assert saved.parent == tmp_path / "images" and saved.read_bytes() == b"\x89PNG\r\n\x1a\n fake"
    assert execution.builder.build().images == [saved]


async def test_a_rich_output_without_an_image_writes_nothing(tmp_path: Path) -> None:
    execution = _execution(tmp_path / "images")
    execution.feed(_message("iopub", "execute_result", {"data": {"text/plain": "42"}, "execution_count": 3}, "r"))
    (item,) = execution.take()
    with anyio.fail_after(5):
        chunk = await execution.complete(item)
    assert chunk == "42\n" and chunk is not None and chunk.name == "execute_result"
    assert not (tmp_path / "images").exists()


def _session() -> Any:
    from kernelbox.client._http import GatewayAPI
    from kernelbox.client._session import KernelSession

    api = GatewayAPI("http://127.0.0.1:9", None, True)  # never used: nothing here sends
    return KernelSession(api=api, ws_base_url="ws://127.0.0.1:9", kernel_id="k1", session_id="s1",
                         ping_interval=None, working_dir=None, cwd_reset_notice="")


async def test_the_session_routes_messages_by_their_parent(tmp_path: Path) -> None:
    session = _session()
    mine, other = Execution("req", ResultBuilder(tmp_path, None)), Execution("other", ResultBuilder(tmp_path, None))
    session.register(mine)
    session.register(other)
    session._on_message(_message("iopub", "stream", {"name": "stdout", "text": "x"}, "m1", parent="req"))
    session._on_message(_message("iopub", "stream", {"name": "stdout", "text": "y"}, "m2", parent="nobody"))
    assert mine.take() == [OutputChunk("x", "stdout")] and other.take() == []
    session.forget("req")
    session._on_message(_message("iopub", "stream", {"name": "stdout", "text": "z"}, "m3", parent="req"))
    assert mine.take() == []
    await session.api.aclose()


async def test_a_kernel_death_fails_waiting_and_later_requests(tmp_path: Path) -> None:
    from kernelbox import KernelDiedError, NotConnectedError

    session = _session()
    execution = Execution("req", ResultBuilder(tmp_path, None))
    session.register(execution)
    death = _message("iopub", "status", {"execution_state": "dead"}, "d")
    death["parent_header"] = {}
    assert _protocol.is_kernel_death(death)
    session._on_message(death)
    assert isinstance(execution.error, KernelDiedError) and execution.done.is_set()
    assert session.kernel_died
    error = session.died_error()
    assert (error.url, error.kernel_id) == ("http://127.0.0.1:9", "k1") and "reset()" in str(error)
    with anyio.fail_after(5):
        await session.aclose()
        with pytest.raises(NotConnectedError):
            await session.send_frame("{}")
    await session.api.aclose()
