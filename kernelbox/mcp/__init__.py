"""``kernelbox mcp``: one stateful kernel served as Model Context Protocol tools.

Importing this package is cheap and needs no extra; `run` imports the official ``mcp`` SDK
(``pip install 'kernelbox[mcp]'``), and `kernelbox.mcp._server` holds the server itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._options import add_gateway_arguments

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``mcp`` command to an argparse ``add_subparsers()`` object; return its parser."""
    mcp: argparse.ArgumentParser = subparsers.add_parser("mcp", help="serve one stateful kernel as Model Context Protocol tools "
                                          "(needs the 'mcp' extra)")
    mcp.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                     help="stdio (default; what desktop agents launch) or streamable-http")
    mcp.add_argument("--host", default="127.0.0.1", help="streamable-http: interface (default 127.0.0.1)")
    mcp.add_argument("--port", type=int, default=8000, help="streamable-http: TCP port (default 8000)")
    mcp.add_argument("--token-file", type=Path, metavar="PATH",
                     help="streamable-http: write the bearer token every request needs to PATH (mode 0600, "
                          "removed on exit) instead of printing it on stderr; $KERNELBOX_MCP_TOKEN chooses "
                          "the token (default: random per start)")
    mcp.add_argument("--images-dir", type=Path,
                     help="where images are saved (default: images/ in --working-dir, else ./images)")
    mcp.add_argument("--max-output-bytes", type=int, default=1024 * 1024,
                     help="text output kept per execution, in bytes (default 1 MiB)")
    mcp.add_argument("--connection-file", type=Path, metavar="PATH",
                     help="use the gateway of a running 'kernelbox serve --connection-file PATH' "
                          "instead of starting one")
    add_gateway_arguments(mcp, default_log_level="WARNING")
    return mcp


def run(args: argparse.Namespace) -> int:
    """Run ``kernelbox mcp`` with parsed arguments; returns the exit status."""
    from ._server import run as run_server

    return run_server(args)
