"""A kernel's ``last_activity`` and ``execution_state``, kept from the iopub sockets already open.

Runs in the gateway process. Jupyter Server's activity watcher
(``MappingKernelManager.start_watching_activity``) opens one more iopub SUB socket per kernel
and fully deserializes every message on it (HMAC, JSON, dates) only to update the kernel's
``last_activity`` and ``execution_state``, which culling (``cull_idle_timeout``, ``cull_busy``)
and the REST kernel model read. With CurveZMQ the kernel also encrypts every iopub message once
more for that socket and the gateway decrypts it once more. Profiled, the watcher was 40% of the
gateway's CPU per ``1+1`` while a WebSocket already received the same messages.

Here every iopub socket of a kernel is an `IOPubStream`, and each message it receives updates
the kernel's activity (`KernelActivity.record`: the header, the parent header and, for
``status`` only, the content are parsed; nothing is re-signed or re-checked: the socket is
CurveZMQ-authenticated and only the kernel holds the key) before it goes to whoever consumes
it: a WebSocket connection, Jupyter Server's offline buffer, a nudge. The watcher keeps its
socket but unsubscribes it (``zmq.UNSUBSCRIBE``: the kernel then sends it nothing) while
another iopub stream of the kernel is *live*: a WebSocket connection has handled a message from
it (which proves its subscription; `KernelActivity.steady`), and it stays live while Jupyter
Server's offline buffer holds it. When the last live stream closes, the watcher subscribes again and the closing
stream's socket stays open, tracking only, as a *tail* until the watcher receives a message
of its own: no message is ever seen by none of them.

The rules are Jupyter Server's (``record_activity`` in
``jupyter_server/services/kernels/kernelmanager.py``): ``last_activity`` moves on a message
whose type or parent's type is tracked (not in ``untracked_message_types``) or while the kernel
is busy; a ``status`` message sets ``execution_state`` when its parent's type is tracked, and
otherwise only turns ``starting`` into ``idle``.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq
from jupyter_client.session import DELIM

from kernelbox._child.gateway._upstream import utcnow
from kernelbox._child.gateway.streams import LeanStream

logger = logging.getLogger("kernelbox.gateway.activity")


class KernelActivity:
    """The activity record of one kernel and who keeps it: live streams, the watcher, a tail.

    Args:
        kernel: the kernel's manager (``last_activity``, ``execution_state``, ``session``).
        mapping: the ``MappingKernelManager`` (``untracked_message_types``,
            ``last_kernel_activity``).
    """

    def __init__(self, kernel: Any, mapping: Any) -> None:
        self._kernel = kernel
        self._mapping = mapping
        self._live: set[IOPubStream] = set()
        self._watcher: IOPubStream | None = None
        self._watcher_subscribed = False
        self._tail: IOPubStream | None = None
        self._warned = False

    @property
    def watcher_subscribed(self) -> bool:
        """True while the watcher's socket is subscribed (no other live stream, or not yet)."""
        return self._watcher is not None and self._watcher_subscribed

    def record(self, msg_list: list[bytes]) -> None:
        """Update the kernel's activity from one raw iopub message (identities, DELIM, frames).

        A message that does not parse is skipped, with one warning per kernel (kernel code can
        publish anything); it never reaches this record, as it never did Jupyter Server's.
        """
        kernel = self._kernel
        unpack = kernel.session.unpack
        untracked = self._mapping.untracked_message_types
        try:
            start = msg_list.index(DELIM) + 2  # after the delimiter and the signature
            msg_type = unpack(msg_list[start])["msg_type"]
            parent_tracked = unpack(msg_list[start + 1]).get("msg_type") not in untracked
            tracked = msg_type not in untracked
            state = unpack(msg_list[start + 3])["execution_state"] if msg_type == "status" else None
        except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
            if not self._warned:
                self._warned = True
                logger.warning("Kernel sent an iopub message its activity record cannot read (%s); "
                               "such messages are skipped", type(exc).__name__)
            return
        if tracked or parent_tracked or kernel.execution_state == "busy":
            self._mapping.last_kernel_activity = kernel.last_activity = utcnow()
        if state is not None:
            if parent_tracked:
                kernel.execution_state = state
            elif kernel.execution_state == "starting" and state != "starting":
                kernel.execution_state = "idle"

    # -- the streams ------------------------------------------------------------------------

    def watch(self, stream: IOPubStream) -> None:
        """Make `stream` the watcher: subscribed only while no other stream is live."""
        self._watcher = stream
        self._watcher_subscribed = True
        stream.on_recv(_ignore)
        if self._live:
            self._pause()

    def unwatch(self) -> None:
        """The kernel is shut down or its watcher replaced: forget every stream, close the tail.

        Streams still open (connected to old ports after a restart that changed them) count as
        live again only when they receive a message.
        """
        self._watcher = None
        self._live.clear()
        tail, self._tail = self._tail, None
        if tail is not None:
            tail.close()

    def seen(self, stream: IOPubStream, msg_list: list[bytes]) -> None:
        """`stream` received `msg_list`: record it, and note what that proves."""
        self.record(msg_list)
        if stream is self._watcher:
            tail, self._tail = self._tail, None
            if tail is not None:  # the watcher's subscription is live again
                tail.close()

    def steady(self, stream: IOPubStream) -> None:
        """`stream` has received a message and now feeds a consumer that reads it steadily.

        Called by the WebSocket connection for each iopub message it handles. Only then does
        the stream count as live: a stream that received a message and stopped reading (Jupyter
        Server's nudge stops the new connection's iopub stream after its first message until the
        kernel looks active, which needs this record) must not take over from the watcher.
        """
        if stream is not self._watcher and stream is not self._tail and stream not in self._live:
            self._live.add(stream)
            if self._watcher_subscribed:
                self._pause()

    def closing(self, stream: IOPubStream) -> bool:
        """`stream` is being closed; True when its socket must stay open as the tail."""
        if stream is self._watcher:
            self._watcher = None
            return False
        if stream is self._tail:
            self._tail = None
            return False
        if stream not in self._live:
            return False
        self._live.discard(stream)
        if self._live or self._watcher is None or self._watcher.closed():
            return False
        self._resume()
        return self._tail is None  # an older tail, still open, already covers the gap

    def adopt_tail(self, tail: IOPubStream) -> None:
        self._tail = tail
        tail.on_recv(_ignore)

    def _pause(self) -> None:
        assert self._watcher is not None
        self._watcher.socket.setsockopt(zmq.UNSUBSCRIBE, b"")
        self._watcher_subscribed = False
        self._watcher.recheck()  # the subscription change may have taken a read edge

    def _resume(self) -> None:
        assert self._watcher is not None
        self._watcher.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._watcher_subscribed = True
        self._watcher.recheck()


class IOPubStream(LeanStream):
    """A kernel's iopub stream whose every received message updates `KernelActivity`.

    Made by ``IOPubStream.take_over(stream, activity)`` from the stream jupyter_client's
    ``connect_iopub`` returns. Closing the last live stream of a kernel leaves its socket open
    as the tail (see the module docstring); the stream itself is closed all the same
    (``closed()`` is True).
    """

    def __init__(self, socket: zmq.Socket[bytes], io_loop: Any, activity: KernelActivity) -> None:
        super().__init__(socket, io_loop)
        self.activity = activity

    def _received(self, msg: list[Any]) -> None:
        self.activity.seen(self, _as_bytes(msg))  # before the consumer, which may close us
        super()._received(msg)

    def _discarded(self, msg: list[bytes]) -> None:
        self.activity.seen(self, msg)  # dropped, but still the kernel's activity

    def close(self, linger: int | None = None) -> None:
        socket = self.socket
        # closing() is told even when the socket was closed under us (then no tail is possible).
        if socket is None or not self.activity.closing(self) or socket.closed:
            super().close(linger)
            return
        # Closed for its owner; the socket goes on, tracking only, until the watcher is live.
        self.io_loop.remove_handler(socket)
        self.socket = None  # type: ignore[assignment]
        self.activity.adopt_tail(IOPubStream(socket, self.io_loop, self.activity))
        self.run_close_callback()


def _as_bytes(msg: list[Any]) -> list[bytes]:
    return [part if isinstance(part, bytes) else part.bytes for part in msg]


def _ignore(_msg: list[bytes]) -> None:
    """The consumer of a stream that only records activity (the watcher, a tail)."""
