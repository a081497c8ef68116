"""Command-line options shared by ``kernelbox serve/run`` and ``kernelbox mcp`` (argparse only).

Lives below both commands so that neither imports the other. Every gateway option's ``dest``
is the name of a `GatewayConfig` field and, unless the command line gives it, the option is
absent from the parsed namespace (``default=SUPPRESS``): ``GatewayConfig.from_options(vars(args))``
then takes the field's own default, declared once in the config.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["add_gateway_arguments", "parse_env_assignments"]


def parse_env_assignments(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"kernelbox: --env expects KEY=VALUE, got {pair!r}")
        env[name] = value
    return env


class _EnvAssignment(argparse.Action):
    """``--env KEY=VALUE``, repeatable, collected into one dict (the ``env`` field)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        env = dict(getattr(namespace, self.dest, None) or {})
        env.update(parse_env_assignments([values]))
        setattr(namespace, self.dest, env)


def add_gateway_arguments(parser: argparse.ArgumentParser, *, default_log_level: str) -> None:
    """The options of the gateway every command starts (see the module docstring)."""
    unless_given = argparse.SUPPRESS
    parser.add_argument("--env", action=_EnvAssignment, default=unless_given, metavar="KEY=VALUE",
                        help="inject a variable into every kernel's environment (repeatable)")
    parser.add_argument("--sandbox", action="store_true", default=unless_given,
                        help="run the gateway and kernels inside the OS sandbox (srt)")
    parser.add_argument("--sandbox-config", default=unless_given, metavar="NAME_OR_PATH",
                        help="sandbox preset name (default, pypi, ...) or settings JSON path")
    parser.add_argument("--sandbox-user", default=unless_given, metavar="USER",
                        help="as root: the unprivileged user the sandbox runs as "
                             "(default $KERNELBOX_SANDBOX_USER or kernelbox-sandbox)")
    parser.add_argument("--memory-limit", type=int, default=unless_given, metavar="BYTES",
                        help="memory of the gateway's whole process tree, via a cgroup (needs root)")
    parser.add_argument("--pids-limit", type=int, default=unless_given, metavar="N",
                        help="processes and threads of the gateway's whole tree, via a cgroup (needs root); "
                             "with --sandbox a default bound applies without it")
    parser.add_argument("--read-path", action="append", default=unless_given, metavar="PATH", dest="read_paths",
                        help="with --sandbox: a host path the kernels may also read (repeatable); "
                             "they see nothing else outside their runtime and directories")
    parser.add_argument("--write-path", action="append", default=unless_given, metavar="DIR", dest="write_paths",
                        help="with --sandbox: a host directory the kernels may also write (repeatable)")
    parser.add_argument("--working-dir", default=unless_given, metavar="DIR", help="the kernels' working directory")
    parser.add_argument("--log-level", default=default_log_level,
                        help=f"gateway log level (default {default_log_level})")
