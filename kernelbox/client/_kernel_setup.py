"""What a client sets up in each kernel it starts: the working directory, the request's env.

Pure: builds code and request bodies; `KernelClient` and its `KernelSession` send them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CWD_RESET_NOTICE", "KERNEL_ENV_PREFIX", "kernel_request", "validate_kernel_env", "working_dir_cell"]

# Printed (as part of a cell's output) after a cell that left the working directory.
CWD_RESET_NOTICE = "[kernelbox] cwd reset to {path}"
# Jupyter Server, Kernel Gateway and Enterprise Gateway pass only these from a request's env.
KERNEL_ENV_PREFIX = "KERNEL_"

_KEEPER_SOURCE = (Path(__file__).resolve().parent.parent / "_kernel_side" / "working_dir.py").read_text(
    encoding="utf-8"
)


def working_dir_cell(path: str | os.PathLike[str], notice: str = CWD_RESET_NOTICE) -> str:
    """The cell that enters `path` and keeps the kernel there; binds nothing in the user's
    namespace (it runs in a throwaway globals dict)."""
    program = _KEEPER_SOURCE + f"\ninstall({os.fspath(path)!r}, {notice!r})\n"
    return f"exec(compile({program!r}, '<kernelbox working directory>', 'exec'), {{}})\n"


def validate_kernel_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Check `env` for ``POST /api/kernels``: names start with ``KERNEL_``, values are str.

    Raises:
        TypeError: a name or value is not a str.
        ValueError: a name does not start with ``KERNEL_`` (gateways would silently drop it).
    """
    result: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"kernel_env names and values must be str, not {name!r}: {value!r}")
        if not name.startswith(KERNEL_ENV_PREFIX):
            raise ValueError(
                f"kernel_env name {name!r} must start with {KERNEL_ENV_PREFIX!r}: gateways pass only "
                f"those from a request to the kernel (for other variables use KernelGateway(env=...))"
            )
        result[name] = value
    return result


def kernel_request(kernel_name: str, env: Mapping[str, str]) -> dict[str, object]:
    """The body of ``POST /api/kernels``."""
    body: dict[str, object] = {"name": kernel_name}
    if env:
        body["env"] = dict(env)
    return body
