"""ipybox.kernel_mgr.server.KernelGateway, as kernelbox's `KernelGateway`."""

from __future__ import annotations

from pathlib import Path

import kernelbox

from ._token import TOKEN


class KernelGateway(kernelbox.KernelGateway):
    """kernelbox's gateway with the peer's positional order; the token is the shim's shared one."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        working_dir: Path | None = None,
        sandbox: bool = False,
        sandbox_config: Path | None = None,
        log_level: str = "INFO",
        log_to_stderr: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            host=host, port=port, sandbox=sandbox, sandbox_config=sandbox_config, log_level=log_level,
            log_to_stderr=log_to_stderr, env=env, token=TOKEN, working_dir=working_dir,
        )
