"""A kernel's ``last_activity`` and ``execution_state`` (culling, the REST kernel model), kept
from the iopub streams already open instead of a watcher socket of their own
(`kernelbox._child.gateway.activity`).

The unit tests drive `KernelActivity` and `IOPubStream` with real ZMQ sockets in this process:
an XPUB socket stands in for the kernel and reports every (un)subscription. The gateway tests
read the REST model while a WebSocket is attached, after it is gone, and the culler's verdict.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
import zmq
from httpx_ws import aconnect_ws
from jupyter_client.session import Session
from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
from tornado.ioloop import IOLoop

from kernelbox import KernelGateway
from kernelbox._child.gateway.activity import IOPubStream, KernelActivity

UNTRACKED = MappingKernelManager.class_traits()["untracked_message_types"].default()
WAIT_SECONDS = 10.0


# -- in-process: the record's rules and who keeps it ------------------------------------------


class FakeKernel:
    """An XPUB socket publishing as a kernel would, and the records a kernel manager keeps.

    The publisher applies subscriptions by hand (``XPUB_MANUAL``), so a test can hold one back:
    that is how a subscription still on its way looks to the kernel.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.session = Session(key=b"secret")
        self.publisher = context.socket(zmq.XPUB)
        self.publisher.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, repeats too
        self.publisher.setsockopt(zmq.XPUB_MANUAL, 1)
        port = self.publisher.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"
        self.context = context
        self.manager = SimpleNamespace(session=self.session, execution_state="starting", last_activity=None)
        self.mapping = SimpleNamespace(untracked_message_types=UNTRACKED, last_kernel_activity=None)
        self.activity = KernelActivity(self.manager, self.mapping)
        self.applied: list[bytes] = []

    def stream(self) -> IOPubStream:
        socket = self.context.socket(zmq.SUB)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(self.url)
        return IOPubStream(socket, IOLoop.current(), self.activity)

    def publish(self, msg_type: str, content: dict[str, Any], parent_type: str | None = "execute_request",
                *, hold: bool = False) -> None:
        """Send a message; first apply the (un)subscriptions that arrived, unless `hold`."""
        if not hold:
            while self.publisher.poll(0):
                message = self.publisher.recv()
                option = zmq.SUBSCRIBE if message[:1] == b"\x01" else zmq.UNSUBSCRIBE
                self.publisher.setsockopt(option, message[1:])  # applies to the pipe it came from
                self.applied.append(message)
        parent = self.session.msg_header(parent_type) if parent_type else {}
        self.session.send(self.publisher, msg_type, content, parent=parent)

    def close(self) -> None:
        self.publisher.close(0)


async def _until(condition: Callable[[], bool], poke: Callable[[], None] | None = None) -> None:
    """Wait (bounded) for `condition`, calling `poke` (a publish) every 10 ms meanwhile."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not condition():
            if poke is not None:
                poke()
            await asyncio.sleep(0.01)  # polling a condition of real sockets


def _run(test: Callable[[FakeKernel], Awaitable[None]]) -> None:
    async def main() -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        kernel = FakeKernel(context)
        try:
            await test(kernel)
        finally:
            kernel.close()
            context.destroy(0)

    asyncio.run(main())


@pytest.mark.unit
def test_the_record_follows_jupyter_servers_rules() -> None:
    async def test(kernel: FakeKernel) -> None:
        record, manager = kernel.activity.record, kernel.manager

        def raw(msg_type: str, content: dict[str, Any], parent_type: str | None) -> list[bytes]:
            parent = kernel.session.msg_header(parent_type) if parent_type else {}
            message = kernel.session.msg(msg_type, content, parent=parent)
            return [b"topic", *kernel.session.serialize(message)]

        # A status answering an untracked request only ends "starting", and is no activity.
        record(raw("status", {"execution_state": "busy"}, "kernel_info_request"))
        assert (manager.execution_state, manager.last_activity) == ("idle", None)
        record(raw("status", {"execution_state": "busy"}, "kernel_info_request"))
        assert (manager.execution_state, manager.last_activity) == ("idle", None)
        # A status answering a tracked request sets the state, and is activity.
        record(raw("status", {"execution_state": "busy"}, "execute_request"))
        assert manager.execution_state == "busy"
        first = manager.last_activity
        assert first is not None and kernel.mapping.last_kernel_activity == first
        # While busy, any message is activity; output of an execution is activity anyway.
        record(raw("stream", {"name": "stdout", "text": "x"}, "kernel_info_request"))
        assert manager.last_activity > first
        record(raw("status", {"execution_state": "idle"}, "execute_request"))
        assert manager.execution_state == "idle"
        # An idle kernel's untracked chatter is no activity.
        before = manager.last_activity
        record(raw("stream", {"name": "stdout", "text": "x"}, "kernel_info_request"))
        assert manager.last_activity == before
        # A message without a parent counts as tracked (Jupyter Server's rule: no type is tracked).
        record(raw("status", {"execution_state": "starting"}, None))
        assert manager.execution_state == "starting"
        # What does not parse is skipped, never raised.
        record([b"<IDS|MSG>", b"sig", b"not json", b"{}", b"{}", b"{}"])
        record([b"no delimiter"])
        record([b"<IDS|MSG>", b"sig", b'{"msg_type": "status"}', b"[]", b"{}", b"{}"])
        assert manager.execution_state == "starting"

    _run(test)


@pytest.mark.unit
def test_the_watcher_unsubscribes_while_another_stream_is_live_and_no_message_is_missed() -> None:
    async def test(kernel: FakeKernel) -> None:
        activity, manager = kernel.activity, kernel.manager
        watcher = kernel.stream()
        activity.watch(watcher)
        await _until(lambda: manager.execution_state == "idle",
                     lambda: kernel.publish("status", {"execution_state": "idle"}, "kernel_info_request"))
        assert activity.watcher_subscribed

        # A nudged stream: it has a message, then stops reading until the kernel looks active.
        # The watcher goes on (it alone can end "starting" meanwhile).
        manager.execution_state = "starting"
        nudged: list[list[bytes]] = []
        connection = kernel.stream()

        def on_nudge(msg_list: list[bytes]) -> None:
            nudged.append(msg_list)
            connection.stop_on_recv()

        connection.on_recv(on_nudge)
        await _until(lambda: bool(nudged) and manager.execution_state == "idle",
                     lambda: kernel.publish("status", {"execution_state": "busy"}, "kernel_info_request"))
        assert activity.watcher_subscribed and len(nudged) == 1

        # A WebSocket's stream: live once the connection has handled a message from it; the
        # watcher then unsubscribes.
        received: list[list[bytes]] = []

        def on_message(msg_list: list[bytes]) -> None:
            received.append(msg_list)
            activity.steady(connection)  # as KernelWebsocketConnection.handle_outgoing_message

        connection.on_recv(on_message)
        await _until(lambda: bool(received),
                     lambda: kernel.publish("status", {"execution_state": "idle"}, "kernel_info_request"))
        assert not activity.watcher_subscribed
        await _until(lambda: b"\x00" in kernel.applied,  # the publisher has the unsubscription
                     lambda: kernel.publish("status", {"execution_state": "idle"}, "kernel_info_request"))
        # Only the connection's stream receives now, and it keeps the record.
        seen: list[IOPubStream] = []
        original_seen = activity.seen

        def spy(stream: IOPubStream, msg_list: list[bytes]) -> None:
            seen.append(stream)
            original_seen(stream, msg_list)

        activity.seen = spy  # type: ignore[method-assign]
        kernel.publish("status", {"execution_state": "busy"}, "execute_request")
        await _until(lambda: manager.execution_state == "busy")
        assert seen == [connection]

        # The last live stream closes: the watcher subscribes again, and what is published before
        # its subscription reaches the publisher is still recorded, by the closing socket (the tail).
        connection.close()
        tail = activity._tail
        assert connection.closed() and activity.watcher_subscribed and tail is not None
        seen.clear()
        kernel.publish("status", {"execution_state": "idle"}, "execute_request", hold=True)
        await _until(lambda: manager.execution_state == "idle")
        assert seen == [tail]
        # Once the watcher has a message of its own, the tail closes.
        await _until(lambda: activity._tail is None,
                     lambda: kernel.publish("status", {"execution_state": "idle"}, "kernel_info_request"))
        seen.clear()
        kernel.publish("status", {"execution_state": "busy"}, "execute_request")
        await _until(lambda: manager.execution_state == "busy")
        assert seen == [watcher]

        # Shut down: the watcher is forgotten, later closes hand nothing over.
        again = kernel.stream()
        again.on_recv(lambda msg_list: activity.steady(again))
        await _until(lambda: not activity.watcher_subscribed,
                     lambda: kernel.publish("status", {"execution_state": "busy"}, "execute_request"))
        activity.unwatch()
        watcher.close()
        again.close()
        assert activity._tail is None and again.closed() and watcher.closed()

    _run(test)


# -- the gateway: the REST kernel model and culling -------------------------------------------

def _gate_code(gate: Path) -> str:
    """Kernel code that stays busy until the file `gate` exists."""
    return f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.01)\nprint('released')"


async def _model(http: httpx.AsyncClient, kernel_id: str) -> dict[str, Any] | None:
    response = await http.get(f"/api/kernels/{kernel_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    model: dict[str, Any] = response.json()
    return model


async def _until_state(http: httpx.AsyncClient, kernel_id: str, state: str | None) -> dict[str, Any] | None:
    """Poll the REST model until its execution_state is `state` (None: the kernel is gone)."""
    while True:
        model = await _model(http, kernel_id)
        if (model and model["execution_state"]) == state:
            return model
        await anyio.sleep(0.05)  # polling the gateway's REST model, bounded by the caller


async def _execute(ws: Any, code: str) -> None:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": uuid.uuid4().hex,
              "username": "test", "date": "2026-01-01T00:00:00Z", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    await ws.send_text(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                   "content": content, "channel": "shell"}))


async def _reply_and_idle(ws: Any) -> None:
    replied = idle = False
    while not (replied and idle):
        message = json.loads(await ws.receive_text())
        msg_type = message["header"]["msg_type"]
        replied = replied or msg_type == "execute_reply"
        idle = idle or (msg_type == "status" and message["content"]["execution_state"] == "idle"
                        and message["parent_header"].get("msg_type") == "execute_request")


@pytest.mark.anyio
async def test_rest_model_follows_executions_with_and_without_a_websocket(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway, httpx.AsyncClient(
            base_url=gateway.url, headers={"Authorization": f"token {gateway.token}"}, timeout=30,
            trust_env=False,
        ) as http:
            kernel_id = (await http.post("/api/kernels", json={})).json()["id"]
            url = f"{gateway.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
            async with aconnect_ws(url, http) as ws:
                await _execute(ws, "1+1")
                await _reply_and_idle(ws)
                idle = await _until_state(http, kernel_id, "idle")
                assert idle is not None and idle["connections"] == 1
                gate = tmp_path / "gate-1"
                await _execute(ws, _gate_code(gate))
                busy = await _until_state(http, kernel_id, "busy")
                assert busy is not None and busy["last_activity"] > idle["last_activity"]
                gate.touch()
                await _reply_and_idle(ws)
                after = await _until_state(http, kernel_id, "idle")
                assert after is not None and after["last_activity"] > busy["last_activity"]
            # The WebSocket is gone (its session's messages are buffered): the model still follows.
            gate = tmp_path / "gate-2"
            async with aconnect_ws(url, http) as ws:
                await _execute(ws, _gate_code(gate))
                await _until_state(http, kernel_id, "busy")
            gone = await _model(http, kernel_id)
            assert gone is not None and gone["connections"] == 0 and gone["execution_state"] == "busy"
            gate.touch()
            released = await _until_state(http, kernel_id, "idle")
            assert released is not None and released["last_activity"] > gone["last_activity"]
            # A WebSocket of another session takes over (the old buffer is dropped): still followed.
            other = f"{gateway.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
            gate = tmp_path / "gate-3"
            async with aconnect_ws(other, http) as ws:
                await _execute(ws, _gate_code(gate))
                await _until_state(http, kernel_id, "busy")
                gate.touch()
                await _reply_and_idle(ws)
                await _until_state(http, kernel_id, "idle")
            await http.delete(f"/api/kernels/{kernel_id}")


@pytest.mark.anyio
async def test_a_kernel_left_busy_is_kept_then_culled_once_idle(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, cull_idle_timeout=1.0, cull_interval=0.2) as gateway, \
                httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"token {gateway.token}"},
                                  timeout=30, trust_env=False) as http:
            kernel_id = (await http.post("/api/kernels", json={})).json()["id"]
            url = f"{gateway.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
            gate = tmp_path / "gate"
            async with aconnect_ws(url, http) as ws:
                await _execute(ws, _gate_code(gate))
                await _until_state(http, kernel_id, "busy")
            # Busy and without a WebSocket for several idle timeouts: not culled (cull_busy off).
            # (Waiting for time to pass is what is tested here.)
            await anyio.sleep(3.0)
            model = await _model(http, kernel_id)
            assert model is not None and model["execution_state"] == "busy"
            gate.touch()
            # Idle now, and nobody connected: culled within a few intervals.
            assert await _until_state(http, kernel_id, None) is None


@pytest.mark.unit
def test_a_direct_send_never_hides_a_message_that_arrived_just_before_it() -> None:
    """`LeanStream` sends outside the event loop; a ZMQ descriptor signals edges, and the send
    takes the edge of a message already waiting. The stream must still read that message."""
    import select

    from kernelbox._child.gateway.streams import LeanStream

    async def main() -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        router = context.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = context.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        received: list[list[bytes]] = []
        try:
            stream = LeanStream(dealer, IOLoop.current())
            stream.on_recv(received.append)
            stream.send_multipart([b"hello"])
            await _until(lambda: router.poll(0) != 0)
            identity, _hello = router.recv_multipart()
            # From here to the direct send the event loop gets no turn (it would read the reply).
            dealer.getsockopt(zmq.EVENTS)  # settle the descriptor: it now signals new arrivals only
            router.send_multipart([identity, b"waiting"])
            # Block, without touching the ZMQ socket, until its descriptor signals the arrival.
            assert select.select([dealer.FD], [], [], WAIT_SECONDS)[0]
            stream.send_multipart([b"second"])  # direct: processes the socket's commands
            await _until(lambda: bool(received))
            assert received == [[b"waiting"]]
        finally:
            router.close(0)
            dealer.close(0)
            context.term()

    asyncio.run(main())
