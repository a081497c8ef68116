"""`GatewayConfig`: every option of a `KernelGateway`, validated up front (pure).

A bad value raises `TypeError` or `ValueError` here, before a socket is bound or a process
started; nothing later has to re-check it. Durations are float seconds, sizes are bytes,
``None`` means "no limit" or "Jupyter's default", as each field says.

`GatewayConfig` is the gateway process's own options type (`GatewayProcessOptions`, which
that process reads back from its command line) plus what only the supervisor uses. The
command line builds it too (`from_options`), so every default is declared once, here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .._child.gateway.options import GatewayProcessOptions
from .._validate import check_int, check_seconds
from ._env import validate_env

__all__ = [
    "DEFAULT_SANDBOX_PIDS_LIMIT",
    "DEFAULT_SANDBOX_SHM_BYTES",
    "MIN_GATEWAY_MEMORY_BYTES",
    "MIN_KERNEL_MEMORY_BYTES",
    "MIN_PIDS_LIMIT",
    "MIN_SHM_BYTES",
    "GatewayConfig",
]

DEFAULT_STARTUP_TIMEOUT_SECONDS = 60.0
MIN_KERNEL_MEMORY_BYTES = 256 * 1024 * 1024
# srt (~60 MB), the gateway (~80 MB) and one kernel (~100 MB) must fit.
MIN_GATEWAY_MEMORY_BYTES = 384 * 1024 * 1024
# Tasks count threads: srt's node has ~11, the gateway ~10, each kernel ~8 (measured).
MIN_PIDS_LIMIT = 64
# A sandboxed gateway's bounds unless the caller says otherwise ("default"; None lifts them):
# processes and threads of the whole tree (an idle kernel has ~8 tasks, so hundreds of kernels
# fit), and the sandbox's own /dev/shm.
DEFAULT_SANDBOX_PIDS_LIMIT = 4096
DEFAULT_SANDBOX_SHM_BYTES = 1024 * 1024 * 1024
MIN_SHM_BYTES = 1024 * 1024


def _check_paths(name: str, value: object, *, sandbox: bool, directories: bool) -> tuple[Path, ...]:
    if isinstance(value, (str, os.PathLike)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of paths, not {type(value).__name__}")
    if value and not sandbox:
        raise ValueError(f"{name} applies to a sandboxed gateway only (sandbox=True)")
    result: list[Path] = []
    for entry in value:
        if not isinstance(entry, (str, os.PathLike)):
            raise TypeError(f"{name} entries must be paths, not {type(entry).__name__}")
        path = Path(entry).resolve()
        if directories and not path.is_dir():
            raise ValueError(f"{name}: {path} is not an existing directory")
        if not directories and not path.exists():
            raise ValueError(f"{name}: {path} does not exist")
        result.append(path)
    return tuple(result)


@dataclass(frozen=True, kw_only=True)
class GatewayConfig(GatewayProcessOptions):
    """The options of one gateway; see `KernelGateway` for what each does.

    The fields of `GatewayProcessOptions` (``log_level``, ``max_kernels``, the ``cull_*``
    options, ``pool_size``) plus the supervisor's own. Construction validates and normalises
    every field (``log_level`` upper-cased, ``working_dir`` made absolute, ``token`` generated
    when None, numbers as float seconds); ``"default"`` bounds stay ``"default"`` and the
    ``resolved_*`` properties give their values. Keyword arguments only.

    Raises:
        TypeError: a field has the wrong type (e.g. ``sandbox`` is not a bool).
        ValueError: a field has an invalid value (a negative or NaN duration, a port out of
            range, a working directory that is not a directory, ...).
    """

    host: str = "localhost"
    port: int = 8888
    sandbox: bool = False
    sandbox_config: str | os.PathLike[str] | Mapping[str, Any] | None = None
    log_to_stderr: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None
    working_dir: str | os.PathLike[str] | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS
    srt_path: str | os.PathLike[str] | None = None
    kernel_memory_limit: int | None = None
    restart_limit: int = 5
    stable_uptime: float = 30.0
    sandbox_user: str | None = None
    memory_limit: int | None = None
    pids_limit: int | None | Literal["default"] = "default"
    shm_size: int | None | Literal["default"] = "default"
    read_paths: tuple[Path, ...] = ()
    write_paths: tuple[Path, ...] = ()
    isolate_kernels: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        super().__post_init__()
        if not isinstance(self.host, str):
            raise TypeError(f"host must be a str, not {type(self.host).__name__}")
        check_int("port", self.port, minimum=0)
        if self.port > 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if not isinstance(self.sandbox, bool):
            # A positional argument in the wrong place (e.g. a Path) must not turn it on.
            raise TypeError(
                f"sandbox must be True or False, not {type(self.sandbox).__name__} {self.sandbox!r} "
                f"(the settings go in sandbox_config=)"
            )
        if self.sandbox_config is not None and not isinstance(
            self.sandbox_config, (str, os.PathLike, Mapping)
        ):
            raise TypeError(
                f"sandbox_config must be a preset name, a path or a mapping, not "
                f"{type(self.sandbox_config).__name__}"
            )
        if not isinstance(self.log_to_stderr, bool):
            raise TypeError(f"log_to_stderr must be True or False, not {self.log_to_stderr!r}")
        put("env", validate_env(self.env))
        if self.token is None:
            put("token", secrets.token_urlsafe(32))
        elif not isinstance(self.token, str) or not self.token or not self.token.isprintable() or (
            self.token != self.token.strip()
        ):
            raise ValueError("token must be a non-empty printable str without surrounding spaces, or None")
        working_dir = Path(self.working_dir if self.working_dir is not None else os.getcwd())
        put("working_dir", working_dir.resolve())
        put("startup_timeout", check_seconds("startup_timeout", self.startup_timeout))
        if self.kernel_memory_limit is not None:
            check_int("kernel_memory_limit", self.kernel_memory_limit, minimum=0)
            assert self.kernel_memory_limit is not None
            if self.kernel_memory_limit < MIN_KERNEL_MEMORY_BYTES:
                raise ValueError(
                    f"kernel_memory_limit must be None or at least {MIN_KERNEL_MEMORY_BYTES} bytes "
                    f"(a Python kernel needs about 100 MB to start), not {self.kernel_memory_limit!r}"
                )
        if self.sandbox_user is not None:
            if not isinstance(self.sandbox_user, str) or not self.sandbox_user or ":" in self.sandbox_user:
                raise ValueError(f"sandbox_user must be a user name or None, not {self.sandbox_user!r}")
            if not self.sandbox:
                raise ValueError("sandbox_user applies to a sandboxed gateway only (sandbox=True)")
        put("read_paths", _check_paths("read_paths", self.read_paths, sandbox=self.sandbox, directories=False))
        put("write_paths", _check_paths("write_paths", self.write_paths, sandbox=self.sandbox, directories=True))
        if not isinstance(self.isolate_kernels, bool):
            raise TypeError(f"isolate_kernels must be True or False, not {self.isolate_kernels!r}")
        if self.isolate_kernels and not self.sandbox:
            raise ValueError("isolate_kernels applies to a sandboxed gateway only (sandbox=True)")
        check_int("memory_limit", self.memory_limit, minimum=MIN_GATEWAY_MEMORY_BYTES, allow_none=True)
        if self.pids_limit != "default":
            check_int("pids_limit", self.pids_limit, minimum=MIN_PIDS_LIMIT, allow_none=True)
        if self.shm_size != "default":
            check_int("shm_size", self.shm_size, minimum=MIN_SHM_BYTES, allow_none=True)
        if self.resolved_shm_size is not None and not self.sandbox:
            raise ValueError("shm_size applies to a sandboxed gateway only (sandbox=True)")
        check_int("restart_limit", self.restart_limit, minimum=0)
        put("stable_uptime", check_seconds("stable_uptime", self.stable_uptime, allow_zero=True))

    @property
    def resolved_working_dir(self) -> Path:
        """`working_dir` as the absolute `Path` it was normalised to."""
        assert isinstance(self.working_dir, Path)
        return self.working_dir

    @property
    def resolved_pids_limit(self) -> int | None:
        """The process bound in tasks (``"default"`` resolved: 4,096 sandboxed), or None."""
        if self.pids_limit == "default":
            return DEFAULT_SANDBOX_PIDS_LIMIT if self.sandbox else None
        return self.pids_limit

    @property
    def pids_limit_is_default(self) -> bool:
        """True for the default bound of a sandboxed gateway: enforced by the best means
        available (a cgroup as root, else ``RLIMIT_NPROC``), never refused."""
        return self.pids_limit == "default" and self.sandbox

    @property
    def resolved_shm_size(self) -> int | None:
        """Bytes of the sandbox's ``/dev/shm`` (``"default"`` resolved: 1 GiB), or None."""
        if self.shm_size == "default":
            return DEFAULT_SANDBOX_SHM_BYTES if self.sandbox else None
        return self.shm_size

    @property
    def resolved_token(self) -> str:
        """The token, generated at construction when none was given."""
        assert self.token is not None
        return self.token

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments that build this config again (``GatewayConfig(**arguments)``)."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **fixed: Any) -> GatewayConfig:
        """A config from a command's options: the entries of `options` named like a field (the
        command's other options are left out), then `fixed`, which take precedence.

        An option the command line did not give must be absent from `options` (argparse's
        ``default=SUPPRESS``), so that the field's own default applies.

        Raises:
            TypeError, ValueError: as the constructor.
        """
        names = {item.name for item in fields(cls)}
        return cls(**{**{name: value for name, value in options.items() if name in names}, **fixed})
