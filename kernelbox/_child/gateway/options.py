"""`GatewayProcessOptions`: what the gateway process takes from its supervisor (pure).

One type on both sides of the process boundary. The supervisor's `GatewayConfig`
(`kernelbox.gateway.config`) extends it with what only the supervisor uses (the socket, the
sandbox, the token, the environment, ...); `process_argument` writes these fields alone as the
gateway process's one command-line argument, and the gateway process reads them back with
`from_process_argument` (`kernelbox._child.gateway.__main__`), validated by the same code.

Only the standard library and `kernelbox._validate` are imported here: the gateway process
reads its options before it imports Jupyter.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from kernelbox._validate import check_int, check_seconds

__all__ = ["LOG_LEVELS", "GatewayProcessOptions"]

LOG_LEVELS = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")


def _check_optional_bool(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, not {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class GatewayProcessOptions:
    """The options the gateway process reads; see `KernelGateway` for what each does.

    Construction validates and normalises every field (``log_level`` upper-cased with
    ``"WARNING"`` as ``"WARN"``, durations as float seconds).

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a field has an invalid value (an unknown log level, a negative or NaN
            duration, a negative pool size, ...).
    """

    log_level: str = "INFO"
    max_kernels: int | None = None
    cull_idle_timeout: float | None = None
    cull_interval: float | None = None
    cull_connected: bool | None = None
    cull_busy: bool | None = None
    pool_size: int = 0

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.log_level, str) or self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        put("log_level", "WARN" if self.log_level.upper() == "WARNING" else self.log_level.upper())
        put("max_kernels", check_int("max_kernels", self.max_kernels, minimum=1, allow_none=True))
        put("cull_idle_timeout", check_seconds("cull_idle_timeout", self.cull_idle_timeout, allow_none=True))
        put("cull_interval", check_seconds("cull_interval", self.cull_interval, allow_none=True))
        _check_optional_bool("cull_connected", self.cull_connected)
        _check_optional_bool("cull_busy", self.cull_busy)
        check_int("pool_size", self.pool_size, minimum=0)

    def process_argument(self) -> str:
        """The gateway process's command-line argument: the fields of `GatewayProcessOptions` as
        JSON, only these (also on a subclass: a `GatewayConfig`'s token never goes there)."""
        return json.dumps({field.name: getattr(self, field.name) for field in dataclasses.fields(GatewayProcessOptions)})

    @staticmethod
    def from_process_argument(text: str) -> GatewayProcessOptions:
        """The options `process_argument` wrote.

        Raises:
            ValueError: `text` is not a JSON object, or names a field this type does not have
                (a supervisor and a gateway of different kernelbox versions); or a value is invalid.
            TypeError: a value has the wrong type.
        """
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"the gateway process options must be a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - {field.name for field in dataclasses.fields(GatewayProcessOptions)})
        if unknown:
            raise ValueError(f"unknown gateway process options: {', '.join(map(str, unknown))}")
        return GatewayProcessOptions(**data)
