"""The ``kernelbox`` command: ``serve``, ``run``, ``mcp``, ``doctor`` and ``sandbox install``.

Only the CLI installs signal handlers (through anyio's signal receiver, which restores the
previous handlers on exit); the library never does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from .._connection_file import published
from .._errors import ExecutionError, GatewayError, GatewayExitedError, KernelboxError
from .._options import add_gateway_arguments
from .._terminal import neutralise_controls
from ..client._results import ExecutionResult, OutputChunk
from ..client.kernel_client import KernelClient
from ..gateway.config import GatewayConfig
from ..gateway.gateway import KernelGateway
from ..mcp import add_parser as add_mcp_parser
from . import _systemd
from ._cells import split_cells

logger = logging.getLogger("kernelbox.cli")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# The watchdog is fed only when the gateway answered the supervisor's liveness probe (every
# 2 s) at most this many seconds ago.
WATCHDOG_FRESH_SECONDS = 5.0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernelbox", description="A local, stateful, sandboxed Python runtime for AI agents."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a gateway until SIGINT/SIGTERM")
    # Gateway options: absent unless given, so GatewayConfig's defaults apply (`kernelbox._options`).
    unless_given = argparse.SUPPRESS
    serve.add_argument("--host", default=unless_given,
                       help=f"interface to listen on (default {GatewayConfig.host})")
    serve.add_argument("--port", type=int, default=unless_given,
                       help=f"TCP port; 0 picks a free one (default {GatewayConfig.port})")
    serve.add_argument("--json", action="store_true", help="print the URL and token as one JSON line")
    serve.add_argument("--isolate-kernels", action="store_true", default=unless_given,
                       help="with --sandbox: each kernel its own working directory, HOME and "
                            "%%pip target, unreadable to the others (Landlock)")
    serve.add_argument("--pool-size", type=int, default=unless_given, metavar="N",
                       help=f"kernels kept started and ready ahead of demand (default {GatewayConfig.pool_size})")
    serve.add_argument("--max-kernels", type=int, default=unless_given, metavar="N",
                       help="refuse more kernels than N")
    serve.add_argument("--cull-idle-timeout", type=float, default=unless_given, metavar="SECONDS",
                       help="shut down kernels idle this long (default: never)")
    serve.add_argument("--kernel-memory-limit", type=int, default=unless_given, metavar="BYTES",
                       help="memory each kernel may allocate; past it: MemoryError (default: none)")
    serve.add_argument("--restart-limit", type=int, default=unless_given, metavar="N",
                       help="consecutive gateway restarts before serve gives up and exits 1 "
                            f"(default {GatewayConfig.restart_limit})")
    serve.add_argument("--connection-file", type=Path, metavar="PATH",
                       help="write {url, token, pid} to PATH (mode 0600) for other local processes; "
                            "removed on exit")
    add_gateway_arguments(serve, default_log_level="INFO")

    run = commands.add_parser("run", help="run a Python file cell by cell (# %% cells) in one kernel")
    run.add_argument("file", type=Path, help="the Python file; cells are split on '# %%' lines")
    run.add_argument("--images-dir", type=Path, default=Path("images"),
                     help="where images are saved (default ./images)")
    run.add_argument("--timeout", type=float, default=600.0,
                     help="seconds each cell may run (default 600)")
    add_gateway_arguments(run, default_log_level="WARNING")

    doctor = commands.add_parser("doctor", help="check the sandbox prerequisites and print fixes")
    doctor.add_argument("--fix", action="store_true",
                        help="first install the pinned srt for this user (kernelbox sandbox install)")

    sandbox = commands.add_parser("sandbox", help="set up the OS sandbox")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    install = sandbox_commands.add_parser(
        "install",
        help="install the pinned srt into this user's data directory; print the command for "
             "system packages that need root",
    )
    install.add_argument("--force", action="store_true", help="reinstall even when present")

    add_mcp_parser(commands)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    # systemd: a socket passed by socket activation, readiness and status, a watchdog. All are
    # read (and removed from the environment, so the gateway and kernels do not see them)
    # before anything starts; without systemd, none is set and nothing changes.
    sockets = _systemd.listen_sockets()
    if len(sockets) > 1:
        raise ValueError(f"systemd passed {len(sockets)} sockets; kernelbox serve listens on one")
    watchdog_seconds = _systemd.watchdog_interval_seconds()
    failure: GatewayExitedError | None = None
    with contextlib.ExitStack() as owned, _systemd.Notifier.from_environment() as notifier:
        for sock in sockets:
            owned.enter_context(sock)
        runtime: dict[str, Any] = {}
        if sockets:
            runtime["listen_socket"] = sockets[0]
            logger.info("Using the socket passed by systemd (%s); --host and --port are ignored",
                        _format_address(sockets[0]))
        if notifier.enabled:
            runtime["on_restart"] = lambda event: notifier.notify(
                STATUS=f"Serving kernels; gateway restarted (restart {event.count}, pid {event.pid})"
            )
        gateway = KernelGateway.from_config(GatewayConfig.from_options(vars(args)), **runtime)
        notifier.notify(STATUS="Starting the gateway")
        # Every signal that asks a daemon to stop ends in the same clean stop (connection file
        # and state directory removed, kernels stopped); SIGHUP too: there is nothing to reload.
        with anyio.open_signal_receiver(*_STOP_SIGNALS) as signals:
            async with gateway, published(args.connection_file, gateway):
                if args.json:
                    print(json.dumps({"url": gateway.url, "token": gateway.token, "pid": gateway.pid}), flush=True)
                else:
                    print(f"kernelbox gateway running at {gateway.url}", flush=True)
                    print(f"token: {gateway.token}", flush=True)
                notifier.notify(READY=1, STATUS=f"Serving kernels at {gateway.url}")
                async with anyio.create_task_group() as tg:

                    async def stop_on_signal() -> None:
                        async for signum in signals:
                            logger.info("Received %s; stopping", signal.Signals(signum).name)
                            notifier.notify(STOPPING=1, STATUS="Stopping the gateway and its kernels")
                            tg.cancel_scope.cancel()
                            return

                    async def keep_watchdog_fed(interval: float) -> None:
                        # Fed only right after the gateway answered the supervisor's liveness
                        # probe (every 2 s): a hung or restarting gateway stops the pings.
                        while True:
                            age = gateway.seconds_since_answer
                            if gateway.state == "running" and age is not None and age <= WATCHDOG_FRESH_SECONDS:
                                notifier.notify(WATCHDOG=1)
                            await anyio.sleep(interval)  # a period, not a readiness signal

                    tg.start_soon(stop_on_signal)
                    if watchdog_seconds is not None and notifier.enabled:
                        tg.start_soon(keep_watchdog_fed, watchdog_seconds)
                    try:
                        await gateway.join()
                    except GatewayExitedError as exc:
                        failure = exc  # raised below, outside the task group: one readable line
                    finally:
                        notifier.notify(STOPPING=1, STATUS="Stopping the gateway and its kernels")
                    tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return 0


def _format_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_kernel_text(stream: TextIO, text: str) -> None:
    """Write text that came from a kernel: it may keep colour on a terminal, and nothing else.

    Kernel output could otherwise drive the operator's terminal (OSC 52 writes the clipboard,
    cursor moves rewrite what was shown); the rules are in `kernelbox._terminal`.
    """
    stream.write(neutralise_controls(text, tty=stream.isatty()))
    stream.flush()


def _print_chunk(chunk: OutputChunk) -> None:
    if chunk.output is not None and chunk.output.images:
        return  # "<Figure size …>": the saved paths are printed instead
    _write_kernel_text(sys.stderr if chunk.name == "stderr" else sys.stdout, chunk)


async def _run(args: argparse.Namespace) -> int:
    try:
        source = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"kernelbox: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    cells = split_cells(source)
    # A port of its own for each run (never serve's 8888).
    async with KernelGateway.from_config(GatewayConfig.from_options(vars(args), port=0)) as gateway:
        async with KernelClient(
            host=gateway.host, port=gateway.port, token=gateway.token, images_dir=args.images_dir
        ) as client:
            for index, cell in enumerate(cells, start=1):
                title = f" {cell.title}" if cell.title else ""
                print(f"\n# %% [{index}/{len(cells)}]{title} (line {cell.line})", flush=True)
                try:
                    async for item in client.stream(cell.source, timeout=args.timeout):
                        if isinstance(item, ExecutionResult):
                            for image in item.images:
                                print(f"[image saved: {image}]", flush=True)
                            for problem in item.output_errors:
                                _write_kernel_text(sys.stderr, f"kernelbox: {problem}\n")
                        else:
                            _print_chunk(item)
                except ExecutionError as exc:
                    print(f"\nkernelbox: cell {index} (line {cell.line}) failed:", file=sys.stderr)
                    _write_kernel_text(sys.stderr, f"{exc}\n")
                    return 1
                except TimeoutError as exc:
                    print(f"\nkernelbox: cell {index} (line {cell.line}) timed out: {exc}", file=sys.stderr)
                    return 1
    return 0


def _configure_logging(level: int) -> None:
    handler = logging.StreamHandler()
    if _systemd.stderr_is_journal():
        handler.setFormatter(_systemd.JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    _configure_logging(logging.INFO if args.command == "serve" else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    if args.command == "doctor":
        from ._doctor import doctor

        if args.fix:
            from ._sandbox import sandbox_install

            sandbox_install()
            print(flush=True)
        return doctor()
    if args.command == "sandbox":
        from ._sandbox import sandbox_install

        return sandbox_install(force=args.force)
    if args.command == "mcp":
        from ..mcp import run  # imports the optional mcp SDK only now

        return run(args)
    try:
        if args.command == "serve":
            return anyio.run(_serve, args)
        return anyio.run(_run, args)
    except BaseExceptionGroup as group:
        leaf = _leaf(group)
        if isinstance(leaf, (KernelboxError, ValueError, OSError)):
            return _fatal(leaf)
        raise
    except (KernelboxError, ValueError, OSError) as exc:  # bad option values, a port in use, ...
        return _fatal(exc)
    except KeyboardInterrupt:
        return 130


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fatal(exc: BaseException) -> int:
    """Report a fatal error on stderr; 1 for kernelbox errors, 2 for bad options and OS errors.

    A gateway error is one line: the gateway's last log lines it carries were logged already.
    Other errors print whole (a sandbox error lists each missing prerequisite with its fix).
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, GatewayError):
        text = text.splitlines()[0]
    # Messages can quote a kernel (a KernelStartError carries the kernel's own error text).
    _write_kernel_text(sys.stderr, f"kernelbox: {text}\n")
    return 1 if isinstance(exc, KernelboxError) else 2


if __name__ == "__main__":
    sys.exit(main())
