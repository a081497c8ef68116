"""The wall around upstream internals: the one module of the gateway process that names a
private part of pyzmq, Tornado, Jupyter Server, jupyter_client or Kernel Gateway.

Everything else in `kernelbox._child.gateway` uses the names defined here: base classes whose
private hooks are renamed (the stock behaviour stays the default: a subclass overrides the
kernelbox name and calls ``super()`` for the stock step) and small functions that read or
write one private attribute. `INTERNALS` lists every private name used here, with the upstream
file and the version it mirrors; ``tests/test_upstream_internals.py`` is generated from it and
drives each entry through a small real exchange, so a new upstream release that changes one
fails there, naming it (``make upstream-newest`` runs it against the newest releases the
bounds in ``pyproject.toml`` allow). The README ("How it is built") lists which of these could
become public upstream hooks and what each would need.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
from datetime import UTC, datetime
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from kernel_gateway.gatewayapp import KernelGatewayApp
from kernel_gateway.services.kernels.manager import KernelGatewayIOLoopKernelManager
from tornado.websocket import WebSocketProtocol13
from zmq.eventloop.zmqstream import ZMQStream

from kernelbox._internals import Internal

__all__ = [
    "INTERNALS",
    "AppInternals",
    "ConnectionInternals",
    "KernelManagerInternals",
    "StreamInternals",
    "cache_kernel_info_reply",
    "offline_buffer_session",
    "prepend_offline_messages",
    "record_launched_process",
    "scrub_launch_kwargs",
    "set_activity_stream",
    "utcnow",
    "websocket_compresses",
    "write_websocket_bytes",
]


_PYZMQ = "zmq/eventloop/zmqstream.py, pyzmq 25-27 (read: 27.3)"
_SERVER_CHANNELS = "jupyter_server/services/kernels/connection/channels.py, Jupyter Server 2.14-2.x (read: 2.21)"
_SERVER_KERNELS = "jupyter_server/services/kernels/kernelmanager.py, Jupyter Server 2.14-2.x (read: 2.21)"
_CLIENT = "jupyter_client 8.10-8.x (read: 8.10)"

INTERNALS: tuple[Internal, ...] = (
    Internal("stream-send-at-once", "zmq.eventloop.zmqstream.ZMQStream", ("_send_callback",), _PYZMQ,
             "LeanStream sends at once only when no send callback is set and nothing is queued"),
    Internal("stream-receive-batch", "zmq.eventloop.zmqstream.ZMQStream",
             ("_handle_events", "_handle_recv", "_recv_callback", "_recv_copy", "_flushed", "_run_callback"),
             _PYZMQ, "LeanStream reads a batch of messages per readiness event, as the stock handler reads one"),
    Internal("stream-io-state", "zmq.eventloop.zmqstream.ZMQStream",
             ("_update_handler", "_rebuild_io_state", "_handle_send"), _PYZMQ,
             "LeanStream re-checks the edge-triggered descriptor and falls back to the stock queued send"),
    Internal("stream-close-callback", "zmq.eventloop.zmqstream.ZMQStream", ("_close_callback",), _PYZMQ,
             "IOPubStream keeps a closed stream's socket as the activity tail and still runs its close callback"),
    Internal("websocket-raw-write", "tornado.websocket.WebSocketProtocol13", ("_compressor", "stream"),
             "tornado/websocket.py, Tornado 6.2-6.x (read: 6.6)",
             "batched kernel messages go to the socket as ready-made frames unless permessage-deflate is on"),
    Internal("connection-open-sessions", "jupyter_server.services.kernels.connection.channels."
             "ZMQChannelsWebsocketConnection", ("_open_sessions",), _SERVER_CHANNELS,
             "a reconnecting client's stale connection is retired before the new one looks for its buffer"),
    Internal("connection-zmq-reply", "jupyter_server.services.kernels.connection.channels."
             "ZMQChannelsWebsocketConnection", ("_on_zmq_reply",), _SERVER_CHANNELS,
             "long stream messages are split into bounded pieces after rate limiting and error handling"),
    Internal("kernel-info-cache", "jupyter_client.manager.KernelManager", ("_kernel_info_future",),
             _SERVER_CHANNELS, "a pooled kernel's kernel_info reply is cached where a new connection looks for it"),
    Internal("offline-buffer", "jupyter_server.services.kernels.kernelmanager.MappingKernelManager",
             ("_kernel_buffers",), _SERVER_KERNELS,
             "the replay window of a cut connection goes in front of Jupyter Server's offline buffer"),
    Internal("activity-stream", "jupyter_server.services.kernels.kernelmanager.MappingKernelManager",
             ("_activity_stream",), _SERVER_KERNELS,
             "the activity watcher's stream is stored where stop_watching_activity closes it"),
    Internal("activity-clock", "jupyter_server._tz", ("utcnow",), "jupyter_server/_tz.py (read: 2.21)",
             "activity timestamps are the aware UTC datetimes Jupyter Server's culler subtracts"),
    Internal("private-connection-info", "jupyter_client.connect.ConnectionFileMixin",
             ("_connection_file_written", "_record_random_port_names"), f"jupyter_client/connect.py, {_CLIENT}",
             "ports are chosen as write_connection_file chooses them, and no file is written"),
    Internal("kernel-start-steps", "jupyter_client.manager.KernelManager",
             ("_async_pre_start_kernel", "_async_launch_kernel"), f"jupyter_client/manager.py, {_CLIENT}",
             "a start may take over the pre-launched kernel; a launch gets its stdin and output pipes"),
    Internal("local-launch", "jupyter_client.provisioning.local_provisioner.LocalProvisioner",
             ("_scrub_kwargs", "process", "pid", "pgid", "cwd"),
             f"jupyter_client/provisioning/local_provisioner.py, {_CLIENT}",
             "a taken-over process is recorded as launch_kernel records one it spawned"),
    Internal("app-stop", "kernel_gateway.gatewayapp.KernelGatewayApp",
             ("_stop", "_signal_stop", "_build_ssl_options"),
             "kernel_gateway/gatewayapp.py, Kernel Gateway 3.0.x (read: 3.0.1)",
             "the app serves an inherited socket, stops on SIGINT too, and cleans up around its stop"),
)


# -- pyzmq: ZMQStream ------------------------------------------------------------------------


class StreamInternals(ZMQStream):
    """pyzmq's ``ZMQStream`` with the private steps kernelbox changes under names of its own.

    ``_handle_events`` (a readiness event), ``_update_handler`` (after a state change) and
    ``_handle_recv`` (one receive) call `on_io_events`, `on_io_state` and `on_readable`, which
    do what pyzmq does unless a subclass overrides them.
    """

    def _handle_events(self, fd: Any, events: Any) -> None:
        self.on_io_events(fd, events)

    def on_io_events(self, fd: Any, events: Any) -> None:
        """A readiness event: pyzmq receives one message and sends one queued message."""
        ZMQStream._handle_events(self, fd, events)

    def _update_handler(self, state: int) -> None:
        self.on_io_state(state)

    def on_io_state(self, state: int) -> None:
        """The wanted events changed to `state`: pyzmq schedules a check if any is pending."""
        ZMQStream._update_handler(self, state)

    def _handle_recv(self) -> None:
        self.on_readable()

    def on_readable(self) -> None:
        """The socket is readable: pyzmq receives one message and passes it to the callback."""
        ZMQStream._handle_recv(self)

    def handle_writable(self) -> None:
        """Send one queued message (pyzmq's ``_handle_send``)."""
        self._handle_send()

    def rebuild_io_state(self) -> None:
        """Recompute the wanted events and check pending ones (pyzmq's ``_rebuild_io_state``)."""
        self._rebuild_io_state()

    def run_callback(self, callback: Any, *args: Any) -> None:
        """Run a stream callback as pyzmq does: logged and re-raised on error, awaited if async."""
        self._run_callback(callback, *args)

    @property
    def send_callback_set(self) -> bool:
        """True when ``on_send`` set a callback (then every send goes through the queue)."""
        return self._send_callback is not None

    @property
    def recv_callback(self) -> Any:
        """The ``on_recv`` callback, or None."""
        return self._recv_callback

    @property
    def recv_copy(self) -> bool:
        """The ``copy`` argument ``on_recv`` was given (frames as bytes when True)."""
        return bool(self._recv_copy)

    @property
    def flushed(self) -> bool:
        """True while ``flush()`` has taken over reading (receive events then read nothing)."""
        return bool(self._flushed)

    def run_close_callback(self) -> None:
        """Run the ``set_close_callback`` callback, as ``close()`` does after closing."""
        if self._close_callback:
            self._run_callback(self._close_callback)


# -- Tornado: the WebSocket protocol -----------------------------------------------------------


def websocket_compresses(protocol: WebSocketProtocol13) -> bool:
    """True when the connection negotiated permessage-deflate (frames must then be compressed)."""
    return protocol._compressor is not None


def write_websocket_bytes(protocol: WebSocketProtocol13, data: bytes) -> Any:
    """Write ready-made frames to the connection's socket; Tornado's write future.

    Raises:
        tornado.iostream.StreamClosedError: the socket is closed.
    """
    return protocol.stream.write(data)


# -- Jupyter Server: the kernel WebSocket connection and the mapping kernel manager -------------


class ConnectionInternals(ZMQChannelsWebsocketConnection):
    """Jupyter Server's kernel WebSocket connection, with ``_on_zmq_reply`` (one kernel message,
    after rate limiting and error handling, to be written) as `on_zmq_reply`."""

    def _on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
        self.on_zmq_reply(stream, msg_list)

    def on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
        """Write one kernel message (frames after the signature, or a message dict)."""
        ZMQChannelsWebsocketConnection._on_zmq_reply(self, stream, msg_list)

    def open_session_handler(self, session_key: str) -> Any:
        """The WebSocket handler registered for ``<kernel id>:<session id>``, or None."""
        return self._open_sessions.get(session_key)


def offline_buffer_session(mapping: Any, kernel_id: str) -> str | None:
    """The session key Jupyter Server buffers `kernel_id`'s messages for while its client is
    away (``start_buffering``), or None when it buffers none."""
    buffered = mapping._kernel_buffers.get(kernel_id)
    return buffered.get("session_key") if buffered else None


def prepend_offline_messages(mapping: Any, kernel_id: str, messages: list[tuple[str, list[Any]]]) -> None:
    """Put ``(channel, frames)`` `messages` in front of `kernel_id`'s offline buffer."""
    mapping._kernel_buffers[kernel_id]["buffer"][:0] = messages


def set_activity_stream(kernel: Any, stream: Any) -> None:
    """Make `stream` the kernel's activity watcher stream, which ``stop_watching_activity`` closes."""
    kernel._activity_stream = stream


def cache_kernel_info_reply(kernel_manager: Any, content: dict[str, Any]) -> None:
    """Cache a kernel's ``kernel_info`` reply content where a new WebSocket connection looks for
    it (``request_kernel_info``), so it sends the kernel no request of its own."""
    cached: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
    cached.set_result(content)
    kernel_manager._kernel_info_future = cached


def utcnow() -> datetime:
    """Now, as Jupyter Server's ``jupyter_server._tz.utcnow`` gives it: an aware UTC datetime."""
    return datetime.now(UTC)


# -- jupyter_client: starting a kernel ---------------------------------------------------------


class KernelManagerInternals(KernelGatewayIOLoopKernelManager):
    """Kernel Gateway's kernel manager with jupyter_client's private start steps renamed.

    ``_async_pre_start_kernel`` first calls `prepare_start`; ``_async_launch_kernel`` is
    `launch_process`. ``_connection_file_written`` is `connection_info_chosen`.
    """

    def prepare_start(self, kernel_id: str | None) -> None:
        """Called before jupyter_client prepares the start of `kernel_id` (does nothing)."""

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        self.prepare_start(self.kernel_id or kw.get("kernel_id"))
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        await self.launch_process(kernel_cmd, **kw)

    async def launch_process(self, kernel_cmd: list[str], **kw: Any) -> None:
        """Launch the kernel process through the provisioner; `kw` reach ``Popen``."""
        await KernelGatewayIOLoopKernelManager._async_launch_kernel(self, kernel_cmd, **kw)

    @property
    def connection_info_chosen(self) -> bool:
        """Whether the ports are chosen (jupyter_client: the connection file is written)."""
        return bool(self._connection_file_written)

    @connection_info_chosen.setter
    def connection_info_chosen(self, chosen: bool) -> None:
        self._connection_file_written = chosen

    def record_random_port_names(self) -> None:
        """Remember which ports are to be chosen at random (those still 0), as jupyter_client
        does before it writes a connection file, so a restart chooses them again."""
        self._record_random_port_names()


def scrub_launch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` of a provisioner's ``launch_kernel`` without those ``Popen`` does not take."""
    scrubbed: dict[str, Any] = LocalProvisioner._scrub_kwargs(kwargs)
    return scrubbed


def record_launched_process(provisioner: Any, process: subprocess.Popen[bytes], launch_kwargs: dict[str, Any]) -> None:
    """Record `process` on a ``LocalProvisioner`` as its ``launch_kernel(cmd, **launch_kwargs)``
    records one it spawned (``process``, ``pid``, ``pgid``, ``cwd``), so polling, signals to the
    process group, interrupts and shutdown treat it the same."""
    provisioner.process = process
    provisioner.pid = process.pid
    try:
        provisioner.pgid = os.getpgid(process.pid)
    except OSError:
        provisioner.pgid = None  # as LocalProvisioner: signals then go to the process alone
    provisioner.cwd = launch_kwargs.get("cwd", pathlib.Path.cwd())


# -- Kernel Gateway: the application -------------------------------------------------------------


class AppInternals(KernelGatewayApp):
    """Kernel Gateway's application with its private stop steps renamed: ``_stop`` (the
    asynchronous clean-up) is `stop_async`, ``_signal_stop`` (the SIGTERM handler) is
    `on_stop_signal`."""

    async def _stop(self) -> None:
        await self.stop_async()

    async def stop_async(self) -> None:
        """Shut the kernels down, close every WebSocket and stop the event loop."""
        await KernelGatewayApp._stop(self)

    def _signal_stop(self, sig: int, frame: Any) -> None:
        self.on_stop_signal(sig, frame)

    def on_stop_signal(self, sig: int, frame: Any) -> None:
        """A stop signal arrived (a signal handler): Kernel Gateway logs and stops."""
        KernelGatewayApp._signal_stop(self, sig, frame)

    def build_ssl_options(self) -> dict[str, Any] | None:
        """Tornado's ``ssl_options`` from the app's certificate settings (None: plain HTTP)."""
        options: dict[str, Any] | None = self._build_ssl_options()
        return options
