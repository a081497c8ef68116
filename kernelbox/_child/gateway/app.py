"""The gateway process: Jupyter Kernel Gateway on an inherited socket.

Started by `kernelbox._child.gateway.__main__` (``python -I -m kernelbox._child.gateway
OPTIONS_JSON``) once the process is hardened and its first kernel started. It differs from ``jupyter kernelgateway`` in six ways:

- **Socket activation.** The listening socket arrives as standard input (the inetd convention;
  the sandbox passes stdio and nothing else) and is adopted with ``HTTPServer.add_socket``
  instead of binding. fd 0 is then pointed at ``/dev/null``. The port can never move.
- **A faster kernel WebSocket.** ``TCP_NODELAY`` (stock Kernel Gateway leaves Nagle on and
  every execution pays a ~40 ms delayed-ACK stall: 49 ms vs 9.5 ms for ``1+1``), both wire
  formats without re-encoding, loss-free reconnects: see `kernelbox._child.gateway.websocket`.
- **Explicit kernel environment.** This process's environment *is* the kernel environment
  (kernels inherit it); `KernelGateway` builds it. The same names are whitelisted for requests
  that carry their own ``env``, so both paths give kernels the same base.
- **Lean activity tracking and channels.** A kernel's ``last_activity``/``execution_state``
  (culling, the REST model) are kept by the iopub streams already open, and Jupyter Server's
  own watcher socket is unsubscribed meanwhile (`kernelbox._child.gateway.activity`); kernel channels
  send at once and read in batches (`kernelbox._child.gateway.streams`).
- **A pre-launched first kernel.** Before importing Jupyter Server this process starts one
  kernel (`kernelbox._child.gateway.prelaunch`), which imports ipykernel meanwhile; the first kernel
  start that would be served from the warm pool takes that process over
  (`PrelaunchedKernelProvisioner`) once it has checked that the process was started exactly as
  that start would start it. Any other first start, and the gateway's stop, kill it.
- **Kernel output on pipes of its own.** Kernels do not inherit this process's stdout/stderr
  (the supervisor reads them as the gateway's log): each kernel process writes to a pipe of
  its own, read here and passed on escaped, cut and rate-limited, as kernel output records
  that the supervisor never takes for the gateway's own (`kernelbox._child.gateway.kernel_output`).
- **Lifeline.** When the supervisor dies, the read end of our stdout/stderr pipe closes and
  ``poll()`` on our write end reports ``POLLERR``; we then shut down as on SIGTERM, so no
  gateway or kernel outlives a SIGKILLed supervisor.

The token comes in the environment (``KG_AUTH_TOKEN``), never on the command line; Kernel
Gateway removes it from kernel environments.

Isolation (see the README's threat model): before anything else the process made itself
undumpable and joined a new session keyring (`kernelbox._child.gateway.__main__`). Kernels get their connection info (ports, HMAC key, CurveZMQ keys) on a
pipe as their stdin, never in a file, and every ZMQ socket is CurveZMQ-encrypted
(``transport_encryption=required``): a kernel that finds a sibling's ports can neither send to
nor listen to it.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
from typing import Any

from jupyter_core.paths import jupyter_path
from jupyter_server.log import log_request as jupyter_log_request
from kernel_gateway.gatewayapp import KernelGatewayApp
from tornado import httpserver, web
from tornado.log import access_log

from kernelbox._child.gateway._upstream import AppInternals
from kernelbox._child.gateway.options import GatewayProcessOptions
from kernelbox._child.gateway.prelaunch import PrelaunchedKernel
from kernelbox._child.kernel.hardening import landlock_abi

KERNEL_POLL_SECONDS = 0.5
# Variables the gateway process needs but kernels must not see.
_PRIVATE_ENV = ("KG_AUTH_TOKEN",)


class SocketActivatedGatewayApp(AppInternals):
    """`KernelGatewayApp` that serves on an already-listening socket instead of binding one."""

    listening_socket: socket.socket | None = None

    def init_webapp(self) -> None:
        super().init_webapp()
        self.web_app.settings["log_function"] = log_request

    def init_http_server(self) -> None:
        assert self.listening_socket is not None
        self.http_server = httpserver.HTTPServer(
            self.web_app, xheaders=self.trust_xheaders, ssl_options=self.build_ssl_options()
        )
        self.http_server.add_socket(self.listening_socket)
        self.port = self.listening_socket.getsockname()[1]

    async def stop_async(self) -> None:
        self.kernel_manager.discard_prelaunched()
        try:
            await super().stop_async()
        finally:
            self.kernel_manager.kernel_output.close_all()

    def init_signal(self) -> None:
        # SIGINT stops the gateway instead of asking "Shutdown this Jupyter server?" on a TTY.
        super().init_signal()
        signal.signal(signal.SIGINT, self.on_stop_signal)

    def on_stop_signal(self, sig: int, frame: Any) -> None:
        # Only records: Kernel Gateway's handler logs, and a signal that lands while the main
        # thread writes a log line makes that a reentrant write to stderr, which raises
        # RuntimeError in the handler before it stops anything (the signal was lost).
        if getattr(self, "io_loop", None) is None:  # still initializing: nothing to stop yet
            raise SystemExit(128 + sig)
        self.io_loop.add_callback_from_signal(self._stop_on_signal, sig)

    def _stop_on_signal(self, sig: int) -> None:
        self.log.critical("received signal %s, stopping", sig)
        self.stop()


def log_request(handler: web.RequestHandler) -> None:
    """The access log: successes (and WebSocket upgrades) at DEBUG, failures as Jupyter Server logs them.

    Kernel Gateway leaves Tornado's default, one INFO line per request; taking a pooled kernel
    is two requests, and each line costs a write here and a read and a log record in the
    supervising process while the client waits. Jupyter Server logs successes at DEBUG too
    (``jupyter_server.log.log_request``), which still logs every 4xx (WARNING) and 5xx (ERROR).
    """
    status = handler.get_status()
    if status >= 400:
        jupyter_log_request(handler, record_prometheus_metrics=False)
    elif access_log.isEnabledFor(logging.DEBUG):
        request = handler.request  # the path only: a query may carry a token
        access_log.debug("%d %s %s %.2fms", status, request.method, request.path, 1000.0 * request.request_time())


class _ConnectionChatterFilter(logging.Filter):
    """Keep two INFO lines Jupyter Server writes for every kernel WebSocket out of the log.

    ``Connecting to kernel <id>.`` and ``Adapting from protocol version 5.3 ... to 5.4`` (a
    no-op within protocol 5) say nothing an operator acts on, and each costs the supervising
    process a read and a log record while the client waits for its connection; with the
    gateway at DEBUG they are kept.
    """

    PREFIXES = ("Connecting to kernel ", "Adapting from protocol version ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        return not record.msg.startswith(self.PREFIXES) or logging.getLogger().isEnabledFor(logging.DEBUG)


class _JupyterPingMismatchFilter(logging.Filter):
    """Drop Tornado's warning about jupyter_server's WebSocket ping settings.

    jupyter_server's ``WebSocketMixin`` defines ``ping_interval``/``ping_timeout`` in
    milliseconds (30000/90000) and pings on its own schedule; Tornado >= 6.5 reads the same
    property names as seconds and warns that the timeout exceeds the interval on the first
    connection. The warning is false here: Jupyter's own pinging is what runs, and Tornado's
    would only fire after 30000 seconds. Keeping the two equal instead makes Jupyter close
    healthy connections whose pong lands a little late.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "websocket_ping_timeout" not in record.getMessage()


def _adopt_stdin_socket() -> socket.socket:
    """Take the listening socket from fd 0 and point fd 0 at /dev/null."""
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError as exc:
        sys.exit(f"kernelbox gateway: standard input is not a listening socket ({exc})")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sock.setblocking(False)
    return sock


def _watch_lifeline(app: KernelGatewayApp) -> None:
    """Stop the gateway when the supervisor stops reading our stderr (it died)."""
    poller = select.poll()
    poller.register(sys.stderr.fileno(), 0)  # POLLERR and POLLHUP are always reported
    while True:
        for _fd, events in poller.poll():
            if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                app.io_loop.add_callback_from_signal(app.stop)
                return


def _ipython_kernel_dirs(environ: dict[str, str]) -> list[str]:
    """Where IPython's own directory could hold kernelspecs (``IPython.paths.get_ipython_dir``):
    ``$IPYTHONDIR/kernels``, else ``~/.ipython/kernels`` and the XDG ``ipython/kernels``."""
    if environ.get("IPYTHONDIR"):
        return [os.path.join(os.path.expanduser(environ["IPYTHONDIR"]), "kernels")]
    home = os.path.expanduser("~")
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [os.path.join(home, ".ipython", "kernels"), os.path.join(xdg, "ipython", "kernels")]


def _skip_empty_ipython_kernel_dir(kernel_spec_manager: Any) -> None:
    """Leave IPython's directory out of kernelspec lookup when it holds no kernelspecs.

    jupyter_client's default ``kernel_dirs`` is ``jupyter_path("kernels")`` plus IPython's
    directory, found by importing IPython (~35 ms, on the first request, so on every cold
    start). When none of the places that directory can be has a ``kernels`` subdirectory, it
    adds nothing to the lookup, and the same list without it is set instead (decided once,
    at start: kernelspecs put into IPython's directory later need a gateway restart).
    """
    if any(os.path.isdir(path) for path in _ipython_kernel_dirs(dict(os.environ))):
        return
    kernel_spec_manager.kernel_dirs = jupyter_path("kernels")


def _warn_without_landlock(app: KernelGatewayApp) -> None:
    """Say once, in the gateway's own log, what is open when kernels cannot have Landlock.

    Each kernel also prints it (`kernelbox._child.kernel.launcher`), but kernel output is not
    gateway log (`kernelbox._child.gateway.kernel_output`): it reaches the log only at DEBUG.
    """
    if sys.platform.startswith("linux") and landlock_abi() == 0:
        app.log.warning(
            "Landlock is unavailable in this Linux kernel: during its ~50 ms start-up each kernel "
            "is reachable by sibling kernels of the same gateway"
        )


def _config_argv(options: GatewayProcessOptions) -> list[str]:
    """Kernel Gateway's command line (traitlets) for `options` and kernelbox's fixed settings.

    A command line, not a config object: it takes precedence over any Jupyter config file.
    """
    argv = [
        "--KernelGatewayApp.api=kernel_gateway.jupyter_websocket",
        f"--KernelGatewayApp.log_level={options.log_level}",
        "--KernelGatewayApp.port_retries=0",
        "--KernelGatewayApp.kernel_websocket_connection_class="
        "kernelbox._child.gateway.websocket.KernelWebsocketConnection",
        "--JupyterWebsocketPersonality.list_kernels=True",
        # Poll kernel processes every 0.5 s (default 3 s) so a dead kernel is reported fast:
        # clients get a "restarting" status and fail the waiting execution.
        f"--KernelRestarter.time_to_dead={KERNEL_POLL_SECONDS}",
        # Jupyter Server drops iopub output above 1 MB/s or 1,000 messages/s ("IOPub data rate
        # exceeded"): silent loss. The client bounds output itself, with a visible marker.
        "--ZMQChannelsWebsocketConnection.limit_rate=False",
        "--KernelGatewayApp.kernel_manager_class=kernelbox._child.gateway.pool.PooledKernelManager",
        f"--PooledKernelManager.pool_size={options.pool_size}",
        # Every kernel socket CurveZMQ-encrypted; the kernelspec declares "curve" support.
        "--KernelManager.transport_encryption=required",
    ]
    if options.max_kernels is not None:
        argv.append(f"--KernelGatewayApp.max_kernels={options.max_kernels}")
    # Seconds as given (0.5 stays 0.5): PooledKernelManager declares these as floats.
    if options.cull_idle_timeout is not None:
        argv.append(f"--PooledKernelManager.cull_idle_timeout={options.cull_idle_timeout!r}")
    if options.cull_interval is not None:
        argv.append(f"--PooledKernelManager.cull_interval={options.cull_interval!r}")
    if options.cull_connected is not None:
        argv.append(f"--MappingKernelManager.cull_connected={options.cull_connected}")
    if options.cull_busy is not None:
        argv.append(f"--MappingKernelManager.cull_busy={options.cull_busy}")
    return argv


def serve(options: GatewayProcessOptions, prelaunched: PrelaunchedKernel | None = None) -> None:
    """Run the gateway until it is stopped; only in the gateway process, which hardened itself
    first (`kernelbox._child.gateway.__main__`).

    Args:
        options: what the supervisor asked for.
        prelaunched: the kernel started before Jupyter was imported, for the first kernel start.
    """
    sock = _adopt_stdin_socket()
    logging.getLogger("tornado.general").addFilter(_JupyterPingMismatchFilter())
    logging.getLogger("tornado.application").addFilter(_ConnectionChatterFilter())

    kernel_env_names = sorted(name for name in os.environ if name not in _PRIVATE_ENV)
    app = SocketActivatedGatewayApp()
    app.listening_socket = sock
    app.env_process_whitelist = kernel_env_names
    app.initialize(_config_argv(options))
    app.log.addFilter(_ConnectionChatterFilter())
    _skip_empty_ipython_kernel_dir(app.kernel_spec_manager)
    _warn_without_landlock(app)
    if prelaunched is not None:
        app.kernel_manager.hold_prelaunched(prelaunched)
        app.log.info("Pre-launched kernel [pid %d] waits for the first kernel start", prelaunched.process.pid)
    threading.Thread(target=_watch_lifeline, args=(app,), daemon=True, name="lifeline").start()
    app.io_loop.add_callback(app.kernel_manager.fill_pool)
    app.start()
