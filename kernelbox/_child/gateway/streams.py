"""`LeanStream`: pyzmq's ``ZMQStream`` with fewer event-loop turns per message.

Runs in the gateway process, for every kernel channel the kernel manager connects (see
``SettlingKernelManager.connect_*`` in `kernelbox._child.gateway.kernel_manager`). Stock ``ZMQStream``
(``zmq/eventloop/zmqstream.py``) receives one message per readiness event and then schedules
another loop turn if more are queued; and it never sends at once: ``send_multipart`` queues the
message, asks the loop for ``POLLOUT`` and sends on a later turn. Per ``1+1`` that was a third
of the gateway's event-loop turns. Here (pyzmq's private steps renamed by
`kernelbox._child.gateway._upstream.StreamInternals`):

- **send**: when nothing is queued and no send callback is set, the message goes straight to
  the socket (``NOBLOCK``); only a full socket (``zmq.Again``, at the high-water mark) falls back
  to the stock queue, so order is kept.
- **receive**: one readiness event reads up to `RECEIVE_BATCH` messages, each passed to the
  callback as before; it stops as soon as the callback is removed or the stream closed (a
  callback may do either), and the stock bookkeeping then schedules the rest. ``flush()``
  still gets one message per call, as it expects (it is only a loop of such calls).
- **event checks on plain ints**: the stock handler reads ``socket.EVENTS`` and masks it with
  ``zmq.POLLIN``, an ``enum.IntFlag``: 14 µs per check here, against 5 µs for
  ``socket.get(zmq.EVENTS)`` masked with an int, and a ``1+1`` makes about ten such checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import zmq
from tornado.log import gen_log
from zmq.eventloop.zmqstream import ZMQStream

from kernelbox._child.gateway._upstream import StreamInternals

_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)

# Messages one readiness event may read before other sockets get a turn.
RECEIVE_BATCH = 32
# Messages `LeanStream.discard_pending` reads at most per call (a kernel could publish faster
# than it is drained).
DISCARD_LIMIT = 100_000

_Stream = TypeVar("_Stream", bound="LeanStream")


class LeanStream(StreamInternals):
    """A ``ZMQStream`` that sends at once when it can and reads a batch per event (module doc)."""

    @classmethod
    def take_over(cls: type[_Stream], stream: ZMQStream, *args: Any) -> _Stream:
        """A `cls` on `stream`'s socket; `stream` is left closed without closing the socket.

        `args` go to ``cls``'s constructor after the socket and the loop.
        """
        socket = stream.socket
        stream.io_loop.remove_handler(socket)
        stream.socket = None  # type: ignore[assignment]
        return cls(socket, stream.io_loop, *args)

    def send_multipart(
        self,
        msg: Sequence[Any],
        flags: int = 0,
        copy: bool = True,
        track: bool = False,
        callback: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is None and not self.send_callback_set and not kwargs and self.socket is not None \
                and not self.sending():
            try:
                # A multipart message is atomic: only its first frame can meet zmq.Again.
                self.socket.send_multipart(msg, flags | zmq.NOBLOCK, copy=copy, track=track)
            except zmq.Again:
                pass  # the socket is at its high-water mark: queue it, as stock ZMQStream does
            else:
                self.recheck()
                return
        super().send_multipart(msg, flags=flags, copy=copy, track=track, callback=callback, **kwargs)

    def recheck(self) -> None:
        """Look at the socket's events again after using it outside the event loop.

        A ZMQ socket's file descriptor signals edges, and any send, receive or subscription
        change on the socket may consume the edge of a message that has meanwhile arrived; the
        loop would then never hear of it. Stock ZMQStream checks ``ZMQ_EVENTS`` after each of
        its own sends; this does the same (and schedules a read if one is due).
        """
        if self.socket is not None:
            self.rebuild_io_state()

    def discard_pending(self) -> int:
        """Read and drop what the socket has queued (each passed to `_discarded`); how many."""
        count = 0
        while count < DISCARD_LIMIT and self.socket is not None:
            try:
                msg = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._discarded(msg)
            count += 1
        self.recheck()
        return count

    def _discarded(self, msg: list[bytes]) -> None:
        """One message dropped unread by `discard_pending` (subclasses may record it)."""

    def on_io_events(self, fd: Any, events: Any) -> None:
        socket = self.socket
        if not socket:
            return super().on_io_events(fd, events)  # logs it
        try:
            zmq_events = _events(socket)
        except zmq.ZMQError:
            return super().on_io_events(fd, events)  # the stock checks and logs
        try:
            if zmq_events & _POLLIN and self.receiving():
                self.on_readable()
                if not self.socket:
                    return None
            if zmq_events & _POLLOUT and self.sending():
                self.handle_writable()
                if not self.socket:
                    return None
            self.rebuild_io_state()
        except Exception:
            gen_log.error("Uncaught exception in zmqstream callback", exc_info=True)
            raise
        return None

    def on_io_state(self, state: int) -> None:
        socket = self.socket
        if socket is None:
            return
        if int(state) & _events(socket):
            # Events the edge-triggered descriptor will not signal again: handle them next turn.
            self.io_loop.add_callback(lambda: self.on_io_events(self.socket, 0))

    def on_readable(self) -> None:
        # The first message is read even without a callback (and dropped), as stock
        # ZMQStream does: flush() relies on it to empty the socket.
        for index in range(RECEIVE_BATCH):
            if self.flushed or self.socket is None or (index and not self.receiving()):
                return
            try:
                msg = self.socket.recv_multipart(zmq.NOBLOCK, copy=self.recv_copy)
            except zmq.Again:
                return  # drained (or the state changed since the poll event)
            self._received(msg)

    def _received(self, msg: list[Any]) -> None:
        """One message read: pass it to the callback (subclasses do more first)."""
        callback = self.recv_callback
        if callback is not None:
            self.run_callback(callback, msg)


def _events(socket: zmq.Socket[Any]) -> int:
    """``ZMQ_EVENTS`` of `socket` as a plain int (``socket.EVENTS`` is a slow ``IntFlag``)."""
    return cast(int, socket.get(zmq.EVENTS))
