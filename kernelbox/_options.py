"""Command-line options shared by ``kernelbox serve/run`` and ``kernelbox mcp`` (argparse only).

Lives below both commands so that neither imports the other.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["add_gateway_arguments", "parse_env_assignments"]


def parse_env_assignments(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"kernelbox: --env expects KEY=VALUE, got {pair!r}")
        env[name] = value
    return env


def add_gateway_arguments(parser: argparse.ArgumentParser, *, default_log_level: str) -> None:
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="inject a variable into every kernel's environment (repeatable)")
    parser.add_argument("--sandbox", action="store_true",
                        help="run the gateway and kernels inside the OS sandbox (srt)")
    parser.add_argument("--sandbox-config", metavar="NAME_OR_PATH",
                        help="sandbox preset name (default, pypi, ...) or settings JSON path")
    parser.add_argument("--sandbox-user", metavar="USER",
                        help="as root: the unprivileged user the sandbox runs as "
                             "(default $KERNELBOX_SANDBOX_USER or kernelbox-sandbox)")
    parser.add_argument("--memory-limit", type=int, metavar="BYTES",
                        help="memory of the gateway's whole process tree, via a cgroup (needs root)")
    parser.add_argument("--pids-limit", type=int, metavar="N",
                        help="processes and threads of the gateway's whole tree, via a cgroup (needs root)")
    parser.add_argument("--read-path", action="append", default=[], metavar="PATH", dest="read_paths",
                        help="with --sandbox: a host path the kernels may also read (repeatable); "
                             "they see nothing else outside their runtime and directories")
    parser.add_argument("--write-path", action="append", default=[], metavar="DIR", dest="write_paths",
                        help="with --sandbox: a host directory the kernels may also write (repeatable)")
    parser.add_argument("--working-dir", metavar="DIR", help="the kernels' working directory")
    parser.add_argument("--log-level", default=default_log_level,
                        help=f"gateway log level (default {default_log_level})")
