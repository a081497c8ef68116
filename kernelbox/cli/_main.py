"""The ``kernelbox`` command: ``serve``, ``run`` and ``doctor``.

Only the CLI installs signal handlers (through anyio's signal receiver, which restores the
previous handlers on exit); the library never does.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from ._cells import split_cells
from ..client.kernel_client import KernelClient
from .._connection_file import published
from .._errors import ExecutionError, KernelboxError
from ..mcp import add_parser as add_mcp_parser
from .._options import add_gateway_arguments, parse_env_assignments
from ..gateway.gateway import KernelGateway
from ..client._results import ExecutionResult, OutputChunk

logger = logging.getLogger("kernelbox.cli")


def _gateway_from_args(args: argparse.Namespace, *, host: str = "localhost", port: int = 0) -> KernelGateway:
    return KernelGateway(
        host=host,
        port=port,
        sandbox=args.sandbox,
        sandbox_config=args.sandbox_config,
        log_level=args.log_level,
        env=parse_env_assignments(args.env),
        working_dir=args.working_dir,
        pool_size=getattr(args, "pool_size", 0),
        max_kernels=getattr(args, "max_kernels", None),
        cull_idle_timeout=getattr(args, "cull_idle_timeout", None),
        kernel_memory_limit=getattr(args, "kernel_memory_limit", None),
        sandbox_user=args.sandbox_user,
        memory_limit=args.memory_limit,
        pids_limit=args.pids_limit,
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernelbox", description="A local, stateful, sandboxed Python runtime for AI agents."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a gateway until SIGINT/SIGTERM")
    serve.add_argument("--host", default="localhost", help="interface to listen on (default localhost)")
    serve.add_argument("--port", type=int, default=8888, help="TCP port; 0 picks a free one (default 8888)")
    serve.add_argument("--json", action="store_true", help="print the URL and token as one JSON line")
    serve.add_argument("--pool-size", type=int, default=0, metavar="N",
                       help="kernels kept started and ready ahead of demand (default 0)")
    serve.add_argument("--max-kernels", type=int, metavar="N", help="refuse more kernels than N")
    serve.add_argument("--cull-idle-timeout", type=float, metavar="SECONDS",
                       help="shut down kernels idle this long (default: never)")
    serve.add_argument("--kernel-memory-limit", type=int, metavar="BYTES",
                       help="memory each kernel may allocate; past it: MemoryError (default: none)")
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

    commands.add_parser("doctor", help="check the sandbox prerequisites and print fixes")

    add_mcp_parser(commands)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    gateway = _gateway_from_args(args, host=args.host, port=args.port)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with gateway, published(args.connection_file, gateway):
            if args.json:
                print(json.dumps({"url": gateway.url, "token": gateway.token, "pid": gateway.pid}), flush=True)
            else:
                print(f"kernelbox gateway running at {gateway.url}", flush=True)
                print(f"token: {gateway.token}", flush=True)
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        logger.info("Received %s; stopping", signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(stop_on_signal)
                await gateway.join()
                tg.cancel_scope.cancel()
    return 0


def _print_chunk(chunk: OutputChunk) -> None:
    if chunk.output is not None and chunk.output.images:
        return  # "<Figure size …>": the saved paths are printed instead
    stream = sys.stderr if chunk.name == "stderr" else sys.stdout
    stream.write(chunk)
    stream.flush()


async def _run(args: argparse.Namespace) -> int:
    try:
        source = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"kernelbox: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    cells = split_cells(source)
    async with _gateway_from_args(args) as gateway:
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
                        else:
                            _print_chunk(item)
                except ExecutionError as exc:
                    print(f"\nkernelbox: cell {index} (line {cell.line}) failed:\n{exc}", file=sys.stderr)
                    return 1
                except TimeoutError as exc:
                    print(f"\nkernelbox: cell {index} (line {cell.line}) timed out: {exc}", file=sys.stderr)
                    return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command == "serve" else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    if args.command == "doctor":
        from ._doctor import doctor

        return doctor()
    if args.command == "mcp":
        from ..mcp import run  # imports the optional mcp SDK only now

        return run(args)
    try:
        if args.command == "serve":
            return anyio.run(_serve, args)
        return anyio.run(_run, args)
    except KernelboxError as exc:
        print(f"kernelbox: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # bad option values, a port in use, ...
        print(f"kernelbox: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
