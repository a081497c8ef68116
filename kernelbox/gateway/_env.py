"""The kernel environment: a small documented base plus exactly what the caller injects.

Kernels inherit the gateway process's environment, so the supervisor starts the gateway with
this environment and nothing else from its own (a secret in the agent's environment never
reaches kernel code).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# What Python and common libraries need to behave normally. Copied from the supervisor's
# environment when set there; documented in the README ("Kernel environment").
BASE_ENV_NAMES: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "SHELL",
)

_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def validate_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Check user-injected variables and return them as a new dict.

    Args:
        env: variable name to value, or None for none.

    Raises:
        TypeError: `env` is not a mapping, or a name or value is not a `str`.
        ValueError: a name is empty or contains ``=`` or NUL, a value contains NUL, or either
            has a lone surrogate (not encodable as UTF-8).
    """
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, not {type(env).__name__}")
    checked: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"env entries must be str to str; got {name!r}: {type(value).__name__} "
                f"(convert values with str() first)"
            )
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"invalid environment variable name {name!r} (empty, '=' or NUL)")
        if "\0" in value:
            raise ValueError(f"environment variable {name!r} contains a NUL byte")
        for text in (name, value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"environment variable {name!r} is not valid Unicode text ({exc.reason} at "
                    f"index {exc.start}); an environment holds bytes, so a lone surrogate cannot pass"
                ) from None
        checked[name] = value
    return checked


def kernel_env(
    injected: Mapping[str, str], parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Build the kernel (and gateway) environment.

    Args:
        injected: validated user variables; they win over the base.
        parent: the environment to take base variables from; `os.environ` by default.

    Returns:
        The base variables that are set in `parent` (PATH always), updated with `injected`.
    """
    source = os.environ if parent is None else parent
    env = {name: source[name] for name in BASE_ENV_NAMES if name in source}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(injected)
    return env
