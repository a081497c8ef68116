"""The gateway's kernel WebSocket: no Nagle delay, both wire formats fast, loss-free reconnects.

Runs in the gateway process. `KernelWebsocketConnection` extends Jupyter Server's
``ZMQChannelsWebsocketConnection`` (``jupyter_server/services/kernels/connection/channels.py``):

- **No Nagle delay.** ``TCP_NODELAY`` on every kernel WebSocket; stock Kernel Gateway leaves
  Nagle on and every execution pays a ~40 ms delayed-ACK stall.
- **Both subprotocols.** A client offering ``v1.kernel.websocket.jupyter.org`` gets the binary
  framing (Jupyter Server's ``select_subprotocol``; Kernel Gateway's handler inherits it), where
  ZMQ frames pass through untouched. The legacy JSON text format is spliced from the raw
  frames instead of being parsed and re-encoded (`splice_json_message`).
- **Bounded stream messages** on both formats (`split_stream_message`, `split_stream_frames`, in `kernelbox._child.gateway.framing`).
- **Batched writes.** Messages queued in one event-loop turn go to the socket in one write
  (`KernelWebsocketConnection.write_message`): one TCP segment and one wake-up of the client
  for what the kernel sent together.
- **Loss-free reconnects.** Jupyter Server buffers a session's messages while its WebSocket is
  gone and replays them when a WebSocket with the same ``session_id`` returns
  (``MappingKernelManager.start_buffering``/``get_buffer``, ``connect()``'s ``replay``). That
  misses what was written to the old socket but never read by the client (socket buffers,
  proxies, the client's own queue at the cut). A client that drops messages whose
  ``header.msg_id`` it has already seen can opt in with the query argument
  ``?session_id=...&replay=sent`` on every (re)connection: the connection then remembers the
  last `REPLAY_WINDOW_BYTES` it sent and the replay starts with them, so delivery is at least
  once and in order, and exactly once after the client's dedup. Without it, duplicates would
  reach a client that does not expect them, so the stock replay is kept.
- **Warm hand-out.** A kernel from the warm pool comes with its four channels connected (the
  CurveZMQ handshakes done, iopub subscribed) and its ``kernel_info`` reply cached, so its
  first WebSocket creates no socket, sends no nudge, and its first ``kernel_info_request`` is
  answered from the cache (`PrimedChannels`): taking a pooled kernel is one HTTP request and
  one WebSocket upgrade, with no round trip to the kernel.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any, cast

from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketProtocol13

from kernelbox._child.gateway._upstream import (
    ConnectionInternals,
    offline_buffer_session,
    prepend_offline_messages,
    utcnow,
    websocket_compresses,
    write_websocket_bytes,
)
from kernelbox._child.gateway.activity import IOPubStream
from kernelbox._child.gateway.framing import (
    splice_json_message,
    split_stream_frames,
    split_stream_message,
    websocket_frame,
)
from kernelbox._child.gateway.primed import PrimedChannels
from kernelbox._child.gateway.registry import KernelRegistry, ReplayWindow

V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
MAX_STREAM_MESSAGE_CHARS = 256 * 1024
# What a cut may leave unread at the client: the gateway's socket send buffer (tcp_wmem max,
# 4 MiB on Linux), the client's receive buffer and anything between. Messages beyond the
# window that were still unread at the cut are lost, as with stock Jupyter Server.
REPLAY_WINDOW_BYTES = 16 * 1024 * 1024
# ``?replay=sent`` on the WebSocket URL: the client drops repeated msg_ids (see above).
REPLAY_ARGUMENT, REPLAY_SENT = "replay", "sent"
# Queued messages are joined into writes of at most about this many bytes.
WRITE_BATCH_BYTES = 1024 * 1024


class KernelWebsocketConnection(ConnectionInternals):
    """Kernel WebSocket connection; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sent: collections.deque[tuple[str, list[bytes]]] = collections.deque()
        self._sent_bytes = 0
        self._skip_nudge = False
        self._disconnected = False
        self._replay_sent = False
        self._batch: list[tuple[bytes, bool]] | None = None  # queued by write_message
        self._primed: PrimedChannels | None = None  # until the first message from the client

    # -- connection set-up ----------------------------------------------------------------

    @property
    def registry(self) -> KernelRegistry:
        """What the pool and the kernel's connections pass each other (`PooledKernelManager`)."""
        registry: KernelRegistry = self.multi_kernel_manager.registry
        return registry

    async def prepare(self) -> None:
        # A client reconnecting after a silent network death finds its old connection still
        # open. Stock Jupyter Server only asks the old socket to close (registering the
        # session, the first step of its prepare()), so the old connection keeps taking
        # messages and writing them to a dead socket until that close completes, and the new
        # one starts fresh: both lose output. Retire it now, so it starts buffering (with its
        # replay window) before this connection looks for the buffer.
        stale = self.open_session_handler(f"{self.kernel_id}:{self.session.session}")
        connection = getattr(stale, "connection", None)
        if isinstance(connection, KernelWebsocketConnection) and stale is not None:
            connection.disconnect()
            stale.close()
        await super().prepare()

    def connect(self) -> Any:
        # Set here, not in WebSocketHandler.get: get() only returns when the socket closes.
        self.websocket_handler.set_nodelay(True)
        self._replay_sent = self.websocket_handler.get_argument(REPLAY_ARGUMENT, "") == REPLAY_SENT
        window = self.registry.replay_windows.pop(self.kernel_id, None)
        if offline_buffer_session(self.multi_kernel_manager, self.kernel_id) == self.session_key:
            if self._replay_sent and window is not None and window.session_key == self.session_key:
                prepend_offline_messages(self.multi_kernel_manager, self.kernel_id, window.messages)
            # The buffered channels are connected and subscribed already: nudging them would
            # only delay the replay and swallow an iopub message (stock nudge consumes one).
            self._skip_nudge = not self.multi_kernel_manager.ports_changed(self.kernel_id)
        return super().connect()

    def create_stream(self) -> None:
        primed = self.registry.primed.pop(self.kernel_id, None)
        if primed is None or not primed.usable():
            if primed is not None:
                primed.close()
            return super().create_stream()
        # A pooled kernel's first connection: its channels connected (and iopub subscribed)
        # while it waited in the pool, so no socket is created and no nudge is needed.
        self.channels.update(primed.take())
        self._primed = primed
        self._skip_nudge = True

    def handle_incoming_message(self, incoming_msg: str | bytes) -> None:
        primed, self._primed = self._primed, None
        if primed is None or not self._answer_from_cache(primed, incoming_msg):
            super().handle_incoming_message(incoming_msg)  # type: ignore[arg-type]

    def _answer_from_cache(self, primed: PrimedChannels, incoming_msg: str | bytes) -> bool:
        """Answer a pooled kernel's first message from its cache if it is ``kernel_info_request``.

        The kernel answered the same request while it waited in the pool; its reply (content and
        header, with a new ``msg_id`` and date) goes back as if it had come on the shell
        channel, signed with the kernel's key. Only while the kernel process runs, and only when
        the server's ``allowed_message_types`` lets the request through.
        """
        allowed = self.multi_kernel_manager.allowed_message_types
        if allowed and "kernel_info_request" not in allowed:
            return False
        if self.subprotocol == V1_SUBPROTOCOL:
            if not isinstance(incoming_msg, bytes):
                return False
            channel, msg_list = deserialize_msg_from_ws_v1(incoming_msg)
            if channel != "shell" or not msg_list:
                return False
            request_header = self.session.unpack(msg_list[0])
        else:
            message = json.loads(incoming_msg)
            if not isinstance(message, dict) or message.get("channel") != "shell":
                return False
            request_header = message.get("header")
        if not isinstance(request_header, dict) or request_header.get("msg_type") != "kernel_info_request":
            return False
        if not primed.kernel_running():
            return False
        reply = {
            "header": dict(primed.reply["header"], msg_id=uuid.uuid4().hex, date=utcnow()),
            "parent_header": request_header,
            "metadata": primed.reply["metadata"],
            "content": primed.reply["content"],
        }
        shell = self.channels["shell"]
        self.handle_outgoing_message(shell, self.session.serialize(reply, ident=primed.identity))
        return True

    def nudge(self) -> Any:
        if self._skip_nudge:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return super().nudge()

    def disconnect(self) -> None:  # type: ignore[override]  # jupyter_server's is synchronous too
        if self._disconnected:  # retired early by a reconnecting client (see above)
            return None
        self._disconnected = True
        result = super().disconnect()
        if self._sent and offline_buffer_session(self.multi_kernel_manager, self.kernel_id) == self.session_key:
            self.registry.replay_windows[self.kernel_id] = ReplayWindow(self.session_key, list(self._sent))
        self._sent.clear()
        return result

    # -- kernel to client -----------------------------------------------------------------

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        if isinstance(stream, str):
            stream = self.channels[stream]
        channel = getattr(stream, "channel", None)
        if isinstance(stream, IOPubStream):
            stream.activity.steady(stream)  # this stream now keeps the kernel's activity record
        if self._replay_sent:
            self._remember(channel, outgoing_msg)
        refill = None
        if channel == "shell" and self.kernel_id in self.registry.pool_refills:
            refill = self._pool_refill(outgoing_msg)
        self._forward(stream, channel, outgoing_msg)
        if refill is not None:
            asyncio.get_running_loop().call_soon(refill)  # after the write _forward queued

    def _pool_refill(self, outgoing_msg: list[Any]) -> Callable[[], None] | None:
        """The pool's refill, taken, when this shell reply is not ``kernel_info_reply``; else None.

        Starting a kernel blocks this loop for the fork and costs a second of CPU for its
        imports: it waits until the reply is written, and until the client's first request
        after its connect (whose ``kernel_info_reply`` comes from the pool's cache).
        """
        _idents, msg_list = self.session.feed_identities(outgoing_msg)
        try:
            msg_type = self.session.unpack(msg_list[1]).get("msg_type")
        except (IndexError, ValueError, TypeError):
            msg_type = None
        if msg_type == "kernel_info_reply":
            return None
        return self.registry.pool_refills.pop(self.kernel_id)

    def _forward(self, stream: Any, channel: str | None, outgoing_msg: list[Any]) -> None:
        if self.subprotocol == V1_SUBPROTOCOL or not self._json_passthrough():
            return super().handle_outgoing_message(stream, outgoing_msg)
        # With rate limiting off and tracebacks allowed, the stock JSON path only parses the
        # frames and encodes them again; splice them into the JSON text instead.
        if stream.closed():
            self.log.warning("zmq message arrived on closed channel")
            self.disconnect()
            return None
        _idents, msg_list = self.session.feed_identities(outgoing_msg)
        if len(msg_list) != 5:  # binary buffers (widgets): the stock binary message format
            return super().handle_outgoing_message(stream, outgoing_msg)
        msg_list = cast("list[bytes]", msg_list)  # frames are bytes when copy=True (the default)
        if not self._signature_ok(msg_list):
            self.log.critical("Message with a bad signature on %s: dropped", channel)
            return None
        frames = msg_list[1:]
        header = self.session.unpack(frames[0])
        if not str(header.get("version", "")).startswith("5."):  # needs the protocol adapter
            return super().handle_outgoing_message(stream, outgoing_msg)
        parts = split_stream_frames(frames, MAX_STREAM_MESSAGE_CHARS, self.session.pack, self.session.unpack)
        for part in parts:
            if len(parts) > 1:
                header = self.session.unpack(part[0])
            self.write_message(splice_json_message(part, channel or "", header))
        return None

    def write_message(self, message: bytes | str, binary: bool = False) -> None:
        """Queue a WebSocket message; the queue is written at the next loop turn, in one write.

        Messages the kernel sends together (``status``, ``execute_input``, the result, the
        reply) often reach this process in one loop turn: one socket write (one TCP segment,
        one wake-up of the client) instead of one each. See `_write_batch`.
        """
        if self._batch is None:
            self._batch = []
            asyncio.get_running_loop().call_soon(self._write_batch)
        self._batch.append((message.encode() if isinstance(message, str) else message, binary))

    def _write_batch(self) -> None:
        """Write the queued messages: frames joined into writes of up to `WRITE_BATCH_BYTES`.

        A write racing the WebSocket's close is dropped (the replay has it). With
        permessage-deflate negotiated (kernelbox's client never offers it) each message goes
        through Tornado's own ``write_message``, which compresses it.
        """
        batch, self._batch = self._batch or [], None
        protocol = self.websocket_handler.ws_connection
        if protocol is None or protocol.is_closing():
            self.log.debug("Kernel %s WebSocket closed; %d messages not written", self.kernel_id, len(batch))
            return
        if not isinstance(protocol, WebSocketProtocol13) or websocket_compresses(protocol):
            for message, binary in batch:
                self._write_one(message, binary)
            return
        chunk: list[bytes] = []
        size = 0
        for message, binary in batch:
            chunk.append(websocket_frame(message, binary))
            size += len(chunk[-1])
            if size >= WRITE_BATCH_BYTES:
                self._write_frames(protocol, chunk)
                chunk, size = [], 0
        if chunk:
            self._write_frames(protocol, chunk)

    def _write_frames(self, protocol: WebSocketProtocol13, frames: list[bytes]) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            written = write_websocket_bytes(protocol, data)
        except StreamClosedError:
            self.log.debug("Kernel %s WebSocket closed; %d messages not written", self.kernel_id, len(frames))
            return
        written.add_done_callback(_retrieve_exception)

    def _write_one(self, message: bytes, binary: bool) -> None:
        try:
            written = self.websocket_handler.write_message(message, binary=binary)
        except WebSocketClosedError:
            self.log.debug("Kernel %s WebSocket closed; message not written", self.kernel_id)
            return
        written.add_done_callback(_retrieve_exception)

    def _json_passthrough(self) -> bool:
        return not self.limit_rate and self.multi_kernel_manager.allow_tracebacks

    def _signature_ok(self, msg_list: list[bytes]) -> bool:
        if self.session.auth is None:
            return True
        return bool(msg_list[0]) and hmac.compare_digest(msg_list[0], self.session.sign(msg_list[1:5]))

    def _remember(self, channel: str | None, msg_list: list[Any]) -> None:
        self._sent.append((channel or "", msg_list))
        self._sent_bytes += sum(len(part) for part in msg_list)
        while self._sent_bytes > REPLAY_WINDOW_BYTES and len(self._sent) > 1:
            _channel, old = self._sent.popleft()
            self._sent_bytes -= sum(len(part) for part in old)

    def on_zmq_reply(self, stream: Any, msg_or_list: Any) -> None:
        if isinstance(msg_or_list, list):  # the binary subprotocol: frames after the signature
            parts = split_stream_frames(
                msg_or_list, MAX_STREAM_MESSAGE_CHARS, self.session.pack, self.session.unpack
            )
        else:
            parts = split_stream_message(msg_or_list, MAX_STREAM_MESSAGE_CHARS)
        for part in parts:
            super().on_zmq_reply(stream, part)


def _retrieve_exception(future: Any) -> None:
    if not future.cancelled():
        future.exception()  # a write cut off by the close: expected, and replayed on reconnect
