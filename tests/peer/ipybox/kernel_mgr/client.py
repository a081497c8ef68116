"""ipybox.kernel_mgr.client, as kernelbox's `KernelClient`, `ExecutionError`, `ExecutionResult`."""

from __future__ import annotations

from pathlib import Path

import kernelbox
from kernelbox import ExecutionError, ExecutionResult

from ._token import TOKEN

__all__ = ["ExecutionError", "ExecutionResult", "KernelClient"]


class KernelClient(kernelbox.KernelClient):
    """kernelbox's client with the peer's positional order, defaults and cwd notice."""

    cwd_reset_notice = "[ipybox] cwd reset to {path}"

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        working_dir: Path | None = None,
        images_dir: Path | None = None,
        ping_interval: float = 10,
        approve_shell_cmds: bool = False,
        require_shell_escape: bool = False,
        tool_server_host: str = "localhost",
        tool_server_port: int = 0,
        kernel_init_timeout: float = 10,
    ) -> None:
        if approve_shell_cmds or require_shell_escape:
            raise NotImplementedError("kernelbox has no shell-command approval (ipybox's tool server)")
        super().__init__(
            host=host,
            port=port,
            images_dir=images_dir if images_dir is not None else Path("images"),
            ping_interval=ping_interval,
            token=TOKEN,
            working_dir=Path(working_dir).resolve() if working_dir is not None else None,
            kernel_init_timeout=kernel_init_timeout,
        )
