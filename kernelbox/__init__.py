"""kernelbox: a local, stateful, optionally sandboxed Python runtime for AI agents.

It supervises a Jupyter Kernel Gateway process (`KernelGateway`) and pairs it with an async
client (`KernelClient`) that creates IPython kernels, executes code statefully, streams output
as it is produced and saves generated images to disk.
"""

import importlib as _importlib
import typing as _typing

from ._errors import (
    AuthenticationError,
    ClientError,
    ExecutionError,
    ExecutionTimeoutError,
    FileTransferError,
    GatewayConnectionError,
    GatewayError,
    GatewayExitedError,
    GatewayStartError,
    InvalidStateError,
    KernelboxError,
    KernelDiedError,
    KernelStartError,
    KernelStoppedError,
    NotConnectedError,
    SandboxConfigError,
    SandboxError,
    SandboxUnavailableError,
)

if _typing.TYPE_CHECKING:
    from .client._results import ExecutionResult, OutputChunk, RichOutput
    from .client.kernel_client import KernelClient
    from .gateway.gateway import GatewayRestart, KernelGateway

# Imported on first use: the gateway process imports this package (for kernelbox._child) and
# needs neither the client (httpx, httpx-ws: ~40 % of its import time) nor the supervisor.
_LAZY = {
    "ExecutionResult": ".client._results",
    "OutputChunk": ".client._results",
    "RichOutput": ".client._results",
    "KernelClient": ".client.kernel_client",
    "GatewayRestart": ".gateway.gateway",
    "KernelGateway": ".gateway.gateway",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ClientError",
    "ExecutionError",
    "ExecutionResult",
    "ExecutionTimeoutError",
    "FileTransferError",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayExitedError",
    "GatewayRestart",
    "GatewayStartError",
    "InvalidStateError",
    "KernelClient",
    "KernelDiedError",
    "KernelGateway",
    "KernelStartError",
    "KernelStoppedError",
    "KernelboxError",
    "NotConnectedError",
    "OutputChunk",
    "RichOutput",
    "SandboxConfigError",
    "SandboxError",
    "SandboxUnavailableError",
    "__version__",
]
