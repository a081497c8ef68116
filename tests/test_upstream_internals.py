"""The upstream internals kernelbox relies on, each driven through a small real exchange.

Generated from the walls' lists (``INTERNALS`` of `kernelbox._child.gateway._upstream`, the
gateway process's, and of `kernelbox._upstream_client`, the client's): every entry has one
check here, run against the real upstream classes in this process (real ZMQ sockets, a real
Tornado WebSocket on loopback, real child processes), and a new upstream release that changes
what an entry relies on fails its check, named by the entry's key. ``make upstream-newest``
runs this file against the newest releases the bounds in ``pyproject.toml`` allow; raise a
bound only after it passes there. The last tests check that the walls are the only modules
that name a private upstream name, and that each wall lists every private name it uses.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from kernelbox._child.gateway import _upstream as gateway_wall
from kernelbox._internals import Internal

PACKAGE = Path(__file__).resolve().parent.parent / "kernelbox"
WALL_PATHS = (PACKAGE / "_child" / "gateway" / "_upstream.py", PACKAGE / "_upstream_client.py")
PROBE_SECONDS = 30.0


def _walls() -> dict[Path, tuple[Internal, ...]]:
    from kernelbox import _upstream_client as client_wall

    return {WALL_PATHS[0]: gateway_wall.INTERNALS, WALL_PATHS[1]: client_wall.INTERNALS}


ENTRIES = [entry for entries in _walls().values() for entry in entries]
# key -> check: a coroutine function (run on a fresh asyncio loop) or a plain function (run in
# the main thread: one that runs an event loop of its own, or installs signal handlers).
Check = Callable[[], Awaitable[None] | None]
CHECKS: dict[str, Check] = {}


def check(key: str) -> Callable[[Check], Check]:
    def register(probe: Check) -> Check:
        assert key not in CHECKS, key
        CHECKS[key] = probe
        return probe

    return register


# -- pyzmq ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _socket_pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    context = zmq.Context.instance()
    ours, peer = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    address = f"inproc://probe-{uuid.uuid4().hex}"
    ours.bind(address)
    peer.connect(address)
    try:
        yield ours, peer
    finally:
        ours.close(linger=0)
        peer.close(linger=0)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0)  # one event-loop turn; bounded by the probe's timeout


@check("stream-send-at-once")
async def _stream_sends_at_once_unless_a_send_callback_is_set() -> None:
    from kernelbox._child.gateway.streams import LeanStream

    with _socket_pair() as (ours, peer):
        stream = LeanStream(ours)
        assert not stream.send_callback_set
        stream.send_multipart([b"now"])
        assert peer.recv_multipart(zmq.NOBLOCK) == [b"now"]  # sent with no loop turn
        sent: list[list[bytes]] = []
        stream.on_send(lambda msg, _status: sent.append(msg))
        assert stream.send_callback_set
        stream.send_multipart([b"queued"])
        with pytest.raises(zmq.Again):
            peer.recv_multipart(zmq.NOBLOCK)  # queued: pyzmq sends it on a later turn
        await _until(lambda: sent == [[b"queued"]])
        assert peer.recv_multipart() == [b"queued"]
        stream.close()


@check("stream-receive-batch")
async def _stream_reads_a_batch_per_readiness_event() -> None:
    from kernelbox._child.gateway.streams import LeanStream

    class Counting(LeanStream):
        events = readable = 0

        def on_io_events(self, fd: Any, events: Any) -> None:
            type(self).events += 1
            super().on_io_events(fd, events)

        def on_readable(self) -> None:
            type(self).readable += 1
            super().on_readable()

    with _socket_pair() as (ours, peer):
        stream = Counting(ours)
        received: list[list[Any]] = []
        stream.on_recv(received.append, copy=False)
        assert stream.receiving() and stream.recv_callback is not None and not stream.recv_copy
        for index in range(5):  # all queued before the loop's next turn: one readiness event
            peer.send_multipart([b"m", str(index).encode()])
        await _until(lambda: len(received) == 5)
        assert [bytes(frames[1]) for frames in received] == [b"0", b"1", b"2", b"3", b"4"]
        assert not isinstance(received[0][0], bytes)  # copy=False reached the receive: zmq.Frame
        # The descriptor's event reached kernelbox's handler (pyzmq's _handle_events), which
        # read the batch in one go: pyzmq's own would take one event per message.
        assert Counting.events == 1 and Counting.readable == 1, (Counting.events, Counting.readable)
        # flush() (pyzmq's own loop of receives, through _handle_recv) sets the flag that stops
        # the loop's reads until its next turn.
        peer.send_multipart([b"flushed"])
        assert stream.flush(zmq.POLLIN) >= 1 and received[-1][0].bytes == b"flushed"
        assert Counting.readable == 2 and stream.flushed
        await _until(lambda: not stream.flushed)
        stream.close()


@check("stream-io-state")
async def _stream_rechecks_edges_and_sends_queued_messages() -> None:
    from kernelbox._child.gateway.streams import LeanStream

    class Counting(LeanStream):
        state_changes = 0

        def on_io_state(self, state: int) -> None:
            type(self).state_changes += 1
            super().on_io_state(state)

    with _socket_pair() as (ours, peer):
        stream = Counting(ours)
        received: list[list[bytes]] = []
        stream.on_recv(received.append)
        assert Counting.state_changes >= 1  # pyzmq told kernelbox's step of the new state
        # A send outside the loop may consume the descriptor's edge of a message that has just
        # arrived; the re-check (pyzmq's _rebuild_io_state and _update_handler) still finds it.
        peer.send_multipart([b"arrived"])
        stream.send_multipart([b"out"])
        await _until(lambda: received == [[b"arrived"]])
        assert peer.recv_multipart() == [b"out"]
        stream.on_send(lambda _msg, _status: None)
        stream.send_multipart([b"via the queue"])  # sent by the writable step (_handle_send)
        assert stream.sending()
        await _until(lambda: not stream.sending())
        assert peer.recv_multipart() == [b"via the queue"]
        stream.close()


@check("stream-close-callback")
async def _stream_runs_the_close_callback_set_on_it() -> None:
    from kernelbox._child.gateway.activity import IOPubStream, KernelActivity

    closed: list[str] = []
    with _socket_pair() as (ours, _peer):
        activity = KernelActivity(SimpleNamespace(), SimpleNamespace())
        stream = IOPubStream(ours, None, activity)
        stream.set_close_callback(lambda: closed.append("closed"))
        stream.run_close_callback()
        assert closed == ["closed"]
        stream.close()
        assert closed == ["closed", "closed"] and stream.closed()


# -- Tornado -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _websocket_server(handler: type[Any]) -> Any:
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([(r"/ws", handler)]))
    server.add_sockets(sockets)
    try:
        yield f"ws://127.0.0.1:{sockets[0].getsockname()[1]}/ws"
    finally:
        server.stop()
        await server.close_all_connections()


@check("websocket-raw-write")
async def _ready_made_frames_reach_a_client_unless_it_compresses() -> None:
    from tornado.websocket import WebSocketHandler, websocket_connect

    from kernelbox._child.gateway.framing import websocket_frame

    compressing: list[bool] = []

    class Frames(WebSocketHandler):
        def get_compression_options(self) -> dict[str, Any] | None:
            return {} if self.get_argument("deflate", "") else None

        def open(self) -> None:
            assert self.ws_connection is not None
            compressing.append(gateway_wall.websocket_compresses(self.ws_connection))
            if not compressing[-1]:
                frames = websocket_frame(b"\x00binary", True) + websocket_frame("text é".encode(), False)
                gateway_wall.write_websocket_bytes(self.ws_connection, frames)
            else:
                self.write_message("compressed")

    async with _websocket_server(Frames) as url:
        plain = await websocket_connect(url)
        assert [await plain.read_message(), await plain.read_message()] == [b"\x00binary", "text é"]
        plain.close()
        deflating = await websocket_connect(url + "?deflate=1", compression_options={})
        assert await deflating.read_message() == "compressed"
        deflating.close()
    assert compressing == [False, True]


# -- Jupyter Server -----------------------------------------------------------------------------


def _connection(connection_class: type[Any], mapping: Any, kernel_id: str) -> Any:
    """A real kernel WebSocket connection of `connection_class` for `kernel_id`, off the wire."""
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
    from tornado.web import Application

    kernel = mapping.kernel_manager_factory(parent=mapping)
    kernel.kernel_id = kernel_id
    request = HTTPServerRequest(
        start_line=RequestStartLine("GET", "/", "HTTP/1.1"),
        headers=HTTPHeaders({"Host": "127.0.0.1"}),
        connection=SimpleNamespace(set_close_callback=lambda _callback: None),
    )
    handler = KernelWebsocketHandler(Application(), request)
    return connection_class(parent=kernel, websocket_handler=handler)


@check("connection-open-sessions")
async def _a_registered_session_is_found_by_its_key() -> None:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    mapping = MappingKernelManager()
    kernel_id = str(uuid.uuid4())
    first = _connection(gateway_wall.ConnectionInternals, mapping, kernel_id)
    mapping._kernels[kernel_id] = first.kernel_manager  # managed, as a started kernel is
    session = uuid.uuid4().hex
    first.session.session = session
    try:
        await first._register_session()  # the first step of prepare(), as Jupyter Server runs it
        second = _connection(gateway_wall.ConnectionInternals, mapping, kernel_id)
        assert second.open_session_handler(f"{kernel_id}:{session}") is first.websocket_handler
        assert second.open_session_handler(f"{kernel_id}:{uuid.uuid4().hex}") is None
    finally:
        first._open_sessions.pop(f"{kernel_id}:{session}", None)


@check("connection-zmq-reply")
async def _each_kernel_message_reaches_the_reply_hook() -> None:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    replies: list[tuple[Any, Any]] = []

    class Recording(gateway_wall.ConnectionInternals):
        def on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
            replies.append((stream, msg_list))

    connection = _connection(Recording, MappingKernelManager(), str(uuid.uuid4()))
    stream = SimpleNamespace(channel="iopub", closed=lambda: False)
    message = connection.session.msg("stream", {"name": "stdout", "text": "hi"})
    frames = connection.session.serialize(message)
    connection.handle_outgoing_message(stream, frames)
    assert len(replies) == 1 and replies[0][0] is stream
    assert replies[0][1]["content"] == {"name": "stdout", "text": "hi"}  # the legacy JSON path: a dict


@check("kernel-info-cache")
async def _a_cached_kernel_info_reply_answers_a_new_connection() -> None:
    import jupyter_client
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    connection = _connection(gateway_wall.ConnectionInternals, MappingKernelManager(), str(uuid.uuid4()))
    content = {"status": "ok", "protocol_version": jupyter_client.protocol_version}
    gateway_wall.cache_kernel_info_reply(connection.kernel_manager, content)
    assert await connection.request_kernel_info() == content
    assert connection.kernel_info_channel is None  # no request went to a kernel


@check("offline-buffer")
async def _the_offline_buffer_takes_messages_in_front() -> None:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
    from zmq.eventloop.zmqstream import ZMQStream

    mapping = MappingKernelManager()
    kernel_id = str(uuid.uuid4())
    mapping._kernels[kernel_id] = SimpleNamespace()
    assert gateway_wall.offline_buffer_session(mapping, kernel_id) is None
    with _socket_pair() as (ours, peer):
        mapping.start_buffering(kernel_id, f"{kernel_id}:s", {"iopub": ZMQStream(ours)})
        assert gateway_wall.offline_buffer_session(mapping, kernel_id) == f"{kernel_id}:s"
        peer.send_multipart([b"while away"])
        await _until(lambda: mapping._kernel_buffers[kernel_id]["buffer"] != [])
        gateway_wall.prepend_offline_messages(mapping, kernel_id, [("iopub", [b"sent before the cut"])])
        buffered = mapping.get_buffer(kernel_id, f"{kernel_id}:s")
        assert [(channel, [bytes(part) for part in parts]) for channel, parts in buffered["buffer"]] == [
            ("iopub", [b"sent before the cut"]), ("iopub", [b"while away"])
        ]
        buffered["channels"]["iopub"].close()


@check("activity-stream")
async def _the_activity_watcher_stream_is_closed_where_it_is_stored() -> None:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
    from zmq.eventloop.zmqstream import ZMQStream

    mapping = MappingKernelManager()
    kernel_id = str(uuid.uuid4())
    kernel = SimpleNamespace()
    mapping._kernels[kernel_id] = kernel
    with _socket_pair() as (ours, _peer):
        stream = ZMQStream(ours)
        gateway_wall.set_activity_stream(kernel, stream)
        mapping.stop_watching_activity(kernel_id)
        assert stream.closed()


@check("activity-clock")
async def _activity_timestamps_are_jupyter_servers_kind() -> None:
    from jupyter_server._tz import isoformat, utcnow

    ours, theirs = gateway_wall.utcnow(), utcnow()
    assert ours.utcoffset() == theirs.utcoffset() and ours.tzinfo is not None
    assert abs((theirs - ours).total_seconds()) < 60  # the culler subtracts one from the other
    assert isoformat(ours).endswith("Z")  # the REST model's form


# -- jupyter_client ------------------------------------------------------------------------------


def _probe_kernelspec(root: Path) -> Any:
    """A kernelspec whose "kernel" only waits for its standard input to close."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = root / "kernels" / "probe"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", "import sys; sys.stdin.read()", "{connection_file}"],
        "display_name": "probe", "language": "python",
    }))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


@check("private-connection-info")
async def _ports_are_chosen_once_and_forgotten_as_jupyter_client_forgets_random_ones() -> None:
    from kernelbox._child.gateway.kernel_manager import PrivateConnectionKernelManager

    manager = PrivateConnectionKernelManager(transport="tcp", ip="127.0.0.1")
    assert not manager.connection_info_chosen
    manager.write_connection_file()
    ports = [manager.shell_port, manager.iopub_port, manager.stdin_port, manager.control_port, manager.hb_port]
    assert all(port > 0 for port in ports) and manager.connection_info_chosen
    assert not os.path.exists(manager.connection_file)
    manager.write_connection_file()  # chosen already: kept
    assert manager.shell_port == ports[0]
    manager.cleanup_random_ports()  # jupyter_client's own: the recorded random ports back to 0
    assert manager.shell_port == 0 and not manager.connection_info_chosen


@check("kernel-start-steps")
async def _a_kernel_start_runs_both_renamed_steps() -> None:
    import tempfile

    seen: list[tuple[Any, ...]] = []

    class Recording(gateway_wall.KernelManagerInternals):
        def prepare_start(self, kernel_id: str | None) -> None:
            seen.append(("prepare", kernel_id))

        async def launch_process(self, kernel_cmd: list[str], **kw: Any) -> None:
            seen.append(("launch", kernel_cmd[0], kw.get("env", {}).get("PROBE")))
            await super().launch_process(kernel_cmd, **kw)

    with tempfile.TemporaryDirectory() as root:
        manager = Recording(kernel_name="probe", kernel_spec_manager=_probe_kernelspec(Path(root)),
                            connection_file=os.path.join(root, "kernel.json"))
        kernel_id = str(uuid.uuid4())
        await manager.start_kernel(kernel_id=kernel_id, env={**os.environ, "PROBE": "1"})
        try:
            assert seen == [("prepare", kernel_id), ("launch", sys.executable, "1")]
            assert manager.provisioner.process.poll() is None
        finally:
            await manager.shutdown_kernel(now=True)


@check("local-launch")
async def _a_recorded_process_is_what_launch_kernel_records() -> None:
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    kwargs = {"extra_arguments": [], "kernel_id": "k", "stdin": subprocess.PIPE, "env": dict(os.environ)}
    scrubbed = gateway_wall.scrub_launch_kwargs(kwargs)
    assert "kernel_id" not in scrubbed and "extra_arguments" not in scrubbed and scrubbed["env"] == kwargs["env"]

    def fresh() -> Any:
        return LocalProvisioner(kernel_id="k", kernel_spec=KernelSpec(argv=argv, display_name="probe", language="python"), parent=None)

    spawned, recorded = fresh(), fresh()
    before = dict(vars(spawned))
    await spawned.launch_kernel(argv, **kwargs)
    process = spawned.process
    try:
        changed = {name for name, value in vars(spawned).items() if before.get(name, object()) is not value}
        assert changed == {"process", "pid", "pgid", "cwd"}, changed
        gateway_wall.record_launched_process(recorded, process, {k: v for k, v in kwargs.items() if k != "cwd"})
        assert [getattr(recorded, name) for name in sorted(changed)] == [getattr(spawned, name) for name in sorted(changed)]
    finally:
        process.stdin.close()
        process.kill()
        process.wait(PROBE_SECONDS)


# -- Kernel Gateway ------------------------------------------------------------------------------


@check("app-stop")
def _the_app_stops_through_the_renamed_steps() -> None:
    from tornado.ioloop import IOLoop

    steps: list[str] = []

    class Recording(gateway_wall.AppInternals):
        def start_app(self) -> None:  # the app itself is not started here
            steps.append("start")

        async def stop_async(self) -> None:
            steps.append("stop")
            IOLoop.current().stop()

        def on_stop_signal(self, sig: int, frame: Any) -> None:
            steps.append(f"signal {sig}")
            self.stop()

    app = Recording()
    assert app.build_ssl_options() is None
    app.certfile = "/nonexistent/cert.pem"
    assert (app.build_ssl_options() or {}).get("certfile") == "/nonexistent/cert.pem"
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    loop = IOLoop()
    try:
        app.io_loop = loop
        # Kernel Gateway's start() installs the SIGTERM handler, then runs the loop; the handler
        # asks stop() to schedule the asynchronous clean-up.
        loop.add_callback(lambda: signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None))
        app.start()  # returns once stop_async stopped the loop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        loop.close(all_fds=False)
    assert steps[:3] == ["start", f"signal {int(signal.SIGTERM)}", "stop"], steps


# -- httpx-ws ------------------------------------------------------------------------------------


@check("websocket-receive-loop")
async def _the_receive_loop_answers_pings_joins_pieces_and_reports_a_cut() -> None:
    from httpx_ws import WebSocketDisconnect, WebSocketNetworkError, aconnect_ws
    from tornado.websocket import WebSocketHandler

    from kernelbox.client._channels import BoundedWebSocketSession

    pongs: list[bytes] = []
    pieces: list[bytes] = []

    class Counting(BoundedWebSocketSession):
        async def on_message_piece(self, event: Any) -> None:
            pieces.append(event.data)
            await super().on_message_piece(event)

    class Server(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            assert self.ws_connection is not None
            if message == "pieces":  # one binary message in three frames (RFC 6455 5.4)
                gateway_wall.write_websocket_bytes(
                    self.ws_connection, b"\x02\x02ab" + b"\x00\x02cd" + b"\x80\x02ef"
                )
            elif message == "ping":
                self.ping(b"probe")
            elif message == "close":
                self.close(1000, "done")
            elif message == "cut":
                self.ws_connection.stream.close()

        def on_pong(self, data: bytes) -> None:
            pongs.append(data)
            self.write_message("ponged")

    import httpx

    async with _websocket_server(Server) as url:
        http_url = url.replace("ws:", "http:", 1)
        async with httpx.AsyncClient() as http:
            async with aconnect_ws(http_url, http, session_class=Counting) as ws:
                await ws.send_text("pieces")
                assert await ws.receive_bytes() == b"abcdef"
                assert pieces == [b"ab", b"cd", b"ef"]  # each piece went to kernelbox's assembly
                await ws.send_text("ping")
                assert await ws.receive_text() == "ponged" and pongs == [b"probe"]
                answered = await ws.ping(b"client")  # the server's pong reaches httpx-ws's ping manager
                await answered.wait()
                await ws.send_text("close")
                with pytest.raises(WebSocketDisconnect):
                    await ws.receive()
            async with aconnect_ws(http_url, http, session_class=Counting) as ws:
                await ws.send_text("cut")
                with pytest.raises(WebSocketNetworkError):
                    await ws.receive()


# -- public upstream behaviour that kernelbox restates -------------------------------------------


def test_kernelbox_keeps_kernel_activity_by_jupyter_servers_rules() -> None:
    """`KernelActivity.record` and Jupyter Server's own watcher (``record_activity`` in
    ``start_watching_activity``) read the same iopub messages to the same state."""
    from jupyter_client.session import Session
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    from kernelbox._child.gateway.activity import KernelActivity

    session = Session(key=b"activity-probe")
    theirs_mapping, ours_mapping = MappingKernelManager(), MappingKernelManager()
    watcher: list[Callable[[list[bytes]], None]] = []
    theirs = SimpleNamespace(session=session, execution_state="starting", last_activity=None,
                             connect_iopub=lambda: SimpleNamespace(on_recv=watcher.append))
    ours = SimpleNamespace(session=session, execution_state="starting", last_activity=None)
    theirs_mapping._kernels["k"] = theirs
    theirs_mapping.start_watching_activity("k")
    theirs.last_activity = None
    record = KernelActivity(ours, ours_mapping).record
    sequence = [
        ("status", {"execution_state": "busy"}, "kernel_info_request"),
        ("status", {"execution_state": "idle"}, "kernel_info_request"),
        ("status", {"execution_state": "busy"}, "execute_request"),
        ("stream", {"name": "stdout", "text": "x"}, "kernel_info_request"),
        ("status", {"execution_state": "idle"}, "execute_request"),
        ("stream", {"name": "stdout", "text": "x"}, "kernel_info_request"),
        ("status", {"execution_state": "starting"}, None),
        ("execute_result", {"data": {}, "metadata": {}, "execution_count": 1}, "comm_info_request"),
    ]
    for msg_type, content, parent_type in sequence:
        parent = session.msg_header(parent_type) if parent_type else {}
        raw = [b"topic", *session.serialize(session.msg(msg_type, content, parent=parent))]
        before = (theirs.last_activity, ours.last_activity)
        watcher[0](raw)
        record(raw)
        moved = (theirs.last_activity is not before[0], ours.last_activity is not before[1])
        assert (theirs.execution_state, moved[0]) == (ours.execution_state, moved[1]), (msg_type, parent_type)


def test_jupyter_client_launches_kernels_as_the_prelaunch_does() -> None:
    """`kernelbox._child.gateway.prelaunch` starts the first kernel as jupyter_client's
    ``launch_kernel`` would on POSIX: a session of its own and ``JPY_PARENT_PID``."""
    from jupyter_client.launcher import launch_kernel

    code = "import os; print(os.getsid(0) == os.getpid(), os.environ['JPY_PARENT_PID'])"
    process = launch_kernel([sys.executable, "-c", code], stdout=subprocess.PIPE, env=dict(os.environ))
    output = process.stdout.read()  # launch_kernel closed the stdin pipe it made
    process.wait(PROBE_SECONDS)
    assert output.decode().split() == ["True", str(os.getpid())]


def test_kernelspec_lookup_adds_only_ipythons_directory_to_jupyter_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``app._skip_empty_ipython_kernel_dir`` sets ``kernel_dirs`` to ``jupyter_path("kernels")``:
    jupyter_client's default without IPython's directory."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_path

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    assert KernelSpecManager().kernel_dirs == [*jupyter_path("kernels"), str(tmp_path / "kernels")]


def test_ipykernel_still_has_what_the_kernel_launcher_overrides() -> None:
    """`kernelbox._child.kernel.launcher` replaces these (public) steps of ``IPKernelApp``;
    overriding a method that is gone would silently do nothing (a real kernel exercises them:
    ``tests/test_private_connection.py``, ``tests/test_reliability.py``)."""
    from ipykernel.kernelapp import IPKernelApp

    for name in ("init_connection_file", "write_connection_file", "cleanup_connection_file",
                 "load_connection_info", "start"):
        assert callable(getattr(IPKernelApp, name, None)), name
    assert "control_thread" in IPKernelApp.class_trait_names() or hasattr(IPKernelApp, "control_thread")


# -- the generated tests -------------------------------------------------------------------------


def test_every_listed_internal_has_one_check_and_every_check_an_entry() -> None:
    keys = [entry.key for entry in ENTRIES]
    assert len(keys) == len(set(keys)), keys
    assert sorted(CHECKS) == sorted(keys)


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.key for entry in ENTRIES])
def test_upstream_internal_behaves_as_kernelbox_relies_on(entry: Internal) -> None:
    """One real exchange through the upstream code behind `entry` (its key names the check)."""

    probe = CHECKS[entry.key]

    async def run() -> None:
        await asyncio.wait_for(probe(), PROBE_SECONDS)  # type: ignore[arg-type]

    try:
        if asyncio.iscoroutinefunction(probe):
            asyncio.run(run())
        else:
            probe()
    except Exception as exc:
        raise AssertionError(
            f"{entry.owner} {', '.join(entry.names)} ({entry.mirrors}) no longer behaves as kernelbox "
            f"relies on: {entry.why}. Adapt the wall ({entry.key}) before raising the version bound."
        ) from exc


# -- the walls are the only modules that name private upstream names ------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _kernelbox_privates() -> set[str]:
    """Private names kernelbox defines itself, outside the walls (methods, attributes, globals)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path in WALL_PATHS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if _private(name)}


def _upstream_private_uses(path: Path, own: set[str]) -> list[tuple[int, str]]:
    """Private names of other packages that `path` reads, calls or imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if not node.module.startswith("kernelbox") and any(_private(part) for part in node.module.split(".")):
                found.append((node.lineno, node.module))
            found += [(node.lineno, alias.name) for alias in node.names if _private(alias.name)]
    return found


def test_only_the_walls_name_private_upstream_names() -> None:
    own = _kernelbox_privates()
    problems = [
        f"{path.relative_to(PACKAGE.parent)}:{line} uses {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in WALL_PATHS and "_kernel_side" not in path.parts
        for line, name in _upstream_private_uses(path, own)
    ]
    assert not problems, "private upstream names outside the walls:\n" + "\n".join(problems)


def test_no_kernelbox_class_overrides_a_private_upstream_name_outside_the_walls() -> None:
    """Overriding ``_x`` of an upstream base is an access too; a kernelbox class may do it only
    in a wall (where the override is listed)."""
    import importlib
    import inspect

    problems = []
    for path in sorted((PACKAGE / "_child").rglob("*.py")) + [PACKAGE / "client" / "_channels.py"]:
        if path in WALL_PATHS or path.name == "__main__.py":
            continue
        module = importlib.import_module(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            upstream = [base for base in cls.__mro__[1:] if not base.__module__.startswith("kernelbox")]
            for name, value in vars(cls).items():
                if not inspect.isfunction(value):
                    continue  # attributes the class machinery sets (traitlets, abc)
                if _private(name) and any(hasattr(base, name) for base in upstream if base is not object):
                    problems.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    assert not problems, "private upstream names overridden outside the walls:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", WALL_PATHS, ids=[path.name for path in WALL_PATHS])
def test_each_wall_lists_every_private_name_it_uses(path: Path) -> None:
    own = _kernelbox_privates()
    listed = {name for entry in _walls()[path] for name in entry.names}
    defined = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(node.name):
            defined.add(node.name)  # an override of an upstream step
    listed |= {part for name in listed for part in name.split(".")}  # a private module, by its path
    used = {part for _line, name in _upstream_private_uses(path, own) for part in name.split(".") if _private(part)}
    unlisted = sorted((used | defined) - listed)
    assert not unlisted, f"{path.name} uses private upstream names it does not list: {unlisted}"
