"""ipybox.kernel_mgr.server.KernelGateway, as kernelbox's `KernelGateway`."""

from __future__ import annotations

from typing import Any

import kernelbox

from ._token import TOKEN


class KernelGateway(kernelbox.KernelGateway):
    """kernelbox's gateway with the peer's signature; the token is the shim's shared one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("token", TOKEN)
        super().__init__(*args, **kwargs)
