"""ipybox.kernel_mgr for the peer's tests: kernelbox's gateway and client."""

from .client import ExecutionError, ExecutionResult, KernelClient
from .server import KernelGateway

__all__ = ["ExecutionError", "ExecutionResult", "KernelClient", "KernelGateway"]
