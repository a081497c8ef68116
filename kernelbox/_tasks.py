"""Background tasks that belong to an object rather than to the call that started them.

`KernelGateway` and `KernelClient` keep work running between calls (the gateway's log pump
and exit watch, the client's WebSocket reader). Holding an anyio task group open across
``start()``/``stop()`` would tie both calls to one task and one cancel-scope nesting: a user's
``with anyio.fail_after(...): await client.reset()`` would then fail with "Attempted to exit a
cancel scope that isn't the current task's current cancel scope". So each object runs its
long-lived work in one task of its own, spawned on the running event loop (an asyncio task, or
a trio system task), owned and always awaited by the object: `stop()` cancels it and waits.
All cancel scopes and task groups used by that work live inside that task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import sniffio

from ._errors import InvalidStateError


class BackgroundTask:
    """One task running `fn()` until it returns or `cancel()` is called.

    Exceptions raised by `fn` are kept in `error` (never lost, never crashing the loop) for the
    owner to report.
    """

    def __init__(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        self._fn = fn
        self._name = name
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._asyncio_task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """Spawn the task on the current event loop (asyncio or trio)."""
        library = sniffio.current_async_library()
        if library == "asyncio":
            # Keep a reference: the event loop holds tasks only weakly.
            self._asyncio_task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        elif library == "trio":
            import trio

            trio.lowlevel.spawn_system_task(self._run, name=self._name)
        else:  # pragma: no cover - anyio supports only these two
            raise InvalidStateError(f"unsupported async library {library!r}")

    async def _run(self) -> None:
        try:
            with self._scope:
                await self._fn()
        except BaseException as exc:  # noqa: BLE001 - kept for the owner; must not crash the loop
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self.error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Ask the task to stop; it sees a cancellation at its next checkpoint."""
        self._scope.cancel()

    async def wait(self) -> None:
        """Wait until the task has finished."""
        await self._done.wait()
