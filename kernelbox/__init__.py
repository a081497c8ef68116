"""kernelbox: a local, stateful, optionally sandboxed Python runtime for AI agents.

It supervises a Jupyter Kernel Gateway process (`KernelGateway`) and pairs it with an async
client (`KernelClient`) that creates IPython kernels, executes code statefully, streams output
as it is produced and saves generated images to disk.
"""

from .client.kernel_client import KernelClient
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
    KernelboxError,
    KernelDiedError,
    KernelStartError,
    NotConnectedError,
    SandboxConfigError,
    SandboxError,
    SandboxUnavailableError,
)
from .gateway.gateway import GatewayRestart, KernelGateway
from .client._results import ExecutionResult, OutputChunk, RichOutput

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
    "KernelClient",
    "KernelDiedError",
    "KernelGateway",
    "KernelStartError",
    "KernelboxError",
    "NotConnectedError",
    "OutputChunk",
    "RichOutput",
    "SandboxConfigError",
    "SandboxError",
    "SandboxUnavailableError",
    "__version__",
]
