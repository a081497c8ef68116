"""The private parts of Kernel Gateway, Jupyter Server, jupyter_client and ipykernel that
kernelbox's child processes override or call. If an upgrade moves one, this fails first,
naming it, instead of the gateway misbehaving at run time. Their versions are bounded in
pyproject.toml; raise a bound only after this passes.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

pytestmark = pytest.mark.unit

# (module, class or None, attributes the child processes rely on)
INTERNALS = [
    ("jupyter_server.services.kernels.connection.channels", "ZMQChannelsWebsocketConnection",
     ["connect", "_on_zmq_reply", "websocket_handler", "limit_rate", "subprotocol", "create_stream", "nudge",
      "handle_incoming_message", "handle_outgoing_message", "request_kernel_info", "channels", "session"]),
    # A pooled kernel's first WebSocket takes its channels and kernel_info reply from the pool.
    ("jupyter_server.services.kernels.connection.base", None, ["deserialize_msg_from_ws_v1"]),
    ("jupyter_server.services.kernels.kernelmanager", "MappingKernelManager",
     ["cull_idle_timeout", "cull_interval", "cull_connected", "cull_busy", "cull_kernel_if_idle",
      "kernel_manager_class", "_kernels", "list_kernels", "kernel_model", "shutdown_kernel", "start_kernel",
      "start_watching_activity", "stop_watching_activity", "untracked_message_types",
      "last_kernel_activity", "_kernel_buffers"]),
    # kernelbox._child.gateway.activity.IOPubStream overrides _handle_recv and close.
    ("zmq.eventloop.zmqstream", "ZMQStream",
     ["_handle_recv", "_run_callback", "_rebuild_io_state", "close", "closed", "on_recv", "send_multipart",
      "_handle_events", "_update_handler", "_handle_send", "sending"]),
    ("jupyter_client.session", None, ["DELIM"]),
    # KernelWebsocketConnection._write_batch writes joined frames to the protocol's stream.
    ("tornado.websocket", "WebSocketProtocol13", ["is_closing", "_write_frame", "write_message"]),
    ("kernel_gateway.services.kernels.manager", "SeedingMappingKernelManager", ["start_kernel"]),
    ("kernel_gateway.services.kernels.manager", "KernelGatewayIOLoopKernelManager",
     ["write_connection_file", "cleanup_connection_file", "_async_launch_kernel",
      "_record_random_port_names", "get_connection_info", "restart_kernel", "shutdown_kernel", "provisioner",
      "transport_encryption", "_async_pre_start_kernel", "load_connection_info", "cache_ports", "kernel_spec",
      "session", "ip", "transport"]),
    ("kernel_gateway.gatewayapp", "KernelGatewayApp",
     ["init_http_server", "init_signal", "_signal_stop", "_stop", "_build_ssl_options", "env_process_whitelist",
      "kernel_websocket_connection_class", "kernel_manager_class", "port_retries", "max_kernels"]),
    ("ipykernel.kernelapp", "IPKernelApp",
     ["init_connection_file", "write_connection_file", "cleanup_connection_file", "load_connection_info",
      "start", "close", "control_thread"]),
    ("jupyter_client.provisioning.local_provisioner", "LocalProvisioner", ["pid"]),
    ("httpx_ws", "AsyncWebSocketSession", ["_background_receive", "_read_stream", "close"]),
    ("httpx_ws._api", None, ["EndOfStream"]),
    ("jupyter_client.connect", None, ["port_names"]),
    ("jupyter_client.provisioning.local_provisioner", "LocalProvisioner",
     ["pid", "pgid", "process", "cwd", "ports_cached", "connection_info", "_scrub_kwargs", "pre_launch",
      "launch_kernel"]),
    ("jupyter_client.provisioning.factory", "KernelProvisionerFactory", ["default_provisioner_name", "instance"]),
    ("jupyter_client.connect", "LocalPortCache", ["return_port", "instance"]),
    ("jupyter_server._tz", None, ["utcnow"]),
]


@pytest.mark.parametrize(("module_name", "class_name", "names"), INTERNALS,
                         ids=[f"{m}.{c or ''}" for m, c, _ in INTERNALS])
def test_overridden_upstream_internals_still_exist(module_name: str, class_name: str | None, names: list[str]) -> None:
    module = importlib.import_module(module_name)
    owner = getattr(module, class_name) if class_name else module
    missing = [name for name in names if not hasattr(owner, name) and name not in getattr(owner, "class_trait_names", lambda: [])()]
    assert not missing, (
        f"{module_name}.{class_name or ''} no longer has {missing}: kernelbox's gateway process "
        f"(kernelbox/_child/) relies on them; adapt it before raising the version bound"
    )


def test_zmqstream_still_keeps_the_state_iopubstream_reads() -> None:
    """`IOPubStream` reads these instance attributes, set in ``ZMQStream.__init__``."""
    from zmq.eventloop.zmqstream import ZMQStream

    source = inspect.getsource(ZMQStream.__init__)
    for name in ("socket", "io_loop", "_recv_callback", "_recv_copy", "_flushed", "_close_callback"):
        assert f"self.{name} =" in source, f"ZMQStream no longer sets {name}: adapt kernelbox._child.gateway.activity"


def test_jupyter_servers_activity_rules_are_the_ones_kernelbox_keeps() -> None:
    """kernelbox._child.gateway.activity.KernelActivity.record restates ``record_activity``'s rules."""
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    source = inspect.getsource(MappingKernelManager.start_watching_activity)
    for rule in ('self.track_message_type(msg_type)', 'self.track_message_type(parent_msg_type)',
                 'kernel.execution_state == "busy"', 'kernel.execution_state = execution_state',
                 'kernel.execution_state == "starting" and execution_state != "starting"',
                 'self.last_kernel_activity = kernel.last_activity = utcnow()'):
        assert rule in source, f"Jupyter Server's activity rules changed ({rule!r} is gone): adapt KernelActivity.record"


def test_tornados_websocket_protocol_still_keeps_its_stream_and_compressor() -> None:
    """`_write_batch` reads ``protocol.stream`` and ``protocol._compressor``."""
    from tornado.websocket import WebSocketProtocol13

    source = inspect.getsource(WebSocketProtocol13)
    for name in ("self.stream =", "self._compressor =", "self.stream.write(frame)"):
        assert name in source, f"tornado's WebSocketProtocol13 changed ({name!r}): adapt KernelWebsocketConnection"


def test_the_stream_hook_still_takes_stream_and_message() -> None:
    from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

    parameters = list(inspect.signature(ZMQChannelsWebsocketConnection._on_zmq_reply).parameters)
    assert parameters[:3] == ["self", "stream", "msg_list"], parameters


def test_the_websocket_session_still_has_what_the_bounded_receive_uses() -> None:
    # kernelbox.client._channels.BoundedWebSocketSession replaces httpx-ws's message assembly.
    from httpx_ws import AsyncWebSocketSession, aconnect_ws

    source = inspect.getsource(AsyncWebSocketSession)
    used = ["self._should_close", "self._send_event", "self._write_lock", "self._ping_manager",
            "self.connection", "self.stream", "def _background_receive(self, max_bytes"]
    assert [name for name in used if name not in source] == []
    assert "session_class" in inspect.signature(aconnect_ws).parameters


def test_the_local_provisioner_still_records_only_what_a_takeover_records() -> None:
    # PrelaunchedKernelProvisioner.launch_kernel records a pre-launched process as
    # LocalProvisioner.launch_kernel records one it spawned: these attributes and no others.
    import re

    from jupyter_client.connect import LocalPortCache
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    source = inspect.getsource(LocalProvisioner.launch_kernel)
    assert set(re.findall(r"self\.(\w+) = ", source)) == {"process", "pid", "pgid", "cwd"}
    assert isinstance(LocalPortCache().currently_used_ports, set)


def test_jupyter_client_still_launches_kernels_as_the_prelaunch_does() -> None:
    # kernelbox._child.gateway.prelaunch starts the first kernel as launch_kernel would on POSIX; the
    # takeover compares argv, env and arguments at run time, but not these two.
    from jupyter_client import launcher

    source = inspect.getsource(launcher.launch_kernel)
    assert 'kwargs["start_new_session"] = True' in source
    assert 'env["JPY_PARENT_PID"] = str(os.getpid())' in source


def test_kernelspec_lookup_still_adds_only_ipythons_directory_to_jupyter_path() -> None:
    # app._skip_empty_ipython_kernel_dir sets kernel_dirs to jupyter_path("kernels"),
    # the default without IPython's directory.
    from jupyter_client.kernelspec import KernelSpecManager

    source = inspect.getsource(KernelSpecManager._kernel_dirs_default)
    assert 'dirs = jupyter_path("kernels")' in source
    assert source.count("dirs.append(") == 1 and "get_ipython_dir()" in source
