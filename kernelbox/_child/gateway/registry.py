"""`KernelRegistry`: what kernelbox keeps about each kernel of the gateway, by kernel id.

State that passes between the pool and a kernel's WebSocket connections lives here, in a
mapping kernelbox owns, never as attributes stashed on Jupyter's kernel managers or buffers.
The pool (`kernelbox._child.gateway.pool.PooledKernelManager`) owns one registry and forgets a
kernel when the kernel is removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kernelbox._child.gateway.primed import PrimedChannels

__all__ = ["KernelRegistry", "ReplayWindow"]


@dataclass
class ReplayWindow:
    """What a cut WebSocket connection last sent, for the session that reconnects with
    ``replay=sent`` (`kernelbox._child.gateway.websocket`).

    Attributes:
        session_key: ``<kernel id>:<session id>`` of the connection that sent them.
        messages: ``(channel, frames)`` pairs, oldest first.
    """

    session_key: str
    messages: list[tuple[str, list[Any]]]


@dataclass
class KernelRegistry:
    """Per kernel id: a pooled kernel's primed channels, a handed-out kernel's pool refill and
    a cut connection's replay window. Each is taken (popped) by the one that uses it.

    Attributes:
        primed: set by the pool when a pooled kernel is ready; taken by its first WebSocket
            (or closed when the kernel is shut down before it had one).
        pool_refills: set by the pool when it hands a kernel out; called once that kernel's
            first shell reply other than ``kernel_info_reply`` is written to a client.
        replay_windows: set when a connection that replays what it sent is cut; taken by the
            next connection of the kernel.
    """

    primed: dict[str, PrimedChannels] = field(default_factory=dict)
    pool_refills: dict[str, Callable[[], None]] = field(default_factory=dict)
    replay_windows: dict[str, ReplayWindow] = field(default_factory=dict)

    def forget(self, kernel_id: str) -> None:
        """Drop everything kept for `kernel_id`, closing primed channels nobody took."""
        primed = self.primed.pop(kernel_id, None)
        if primed is not None:
            primed.close()
        self.pool_refills.pop(kernel_id, None)
        self.replay_windows.pop(kernel_id, None)
