"""One execution's state: filed by the channel reader, drained by the caller.

An execution is finished only when *both* the shell ``execute_reply`` and the iopub
``status: idle`` for its ``msg_id`` have arrived; their order is not guaranteed, and ending on
the reply alone loses output that is still in flight (docs/architecture.md, "Completion rule").

`Execution.feed` runs in the reader task and never waits: it applies the output limit (via
`ResultBuilder`) and queues what the caller should see. The caller drains the queue at its own
pace (`take`, then `complete` for each item, which saves a rich output's images in a worker
thread), so a slow caller costs at most the output limit in memory and never stalls the socket.
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from .._errors import InvalidStateError
from ._results import IMAGE_EXTENSIONS, ExecutionResult, OutputChunk, ResultBuilder, save_images

__all__ = ["Execution", "ExecutionStream", "Reply"]


class Reply:
    """A request that waits for one shell reply (e.g. ``kernel_info_reply``)."""

    def __init__(self, msg_id: str, reply_type: str) -> None:
        self.msg_id = msg_id
        self._reply_type = reply_type
        self.content: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = anyio.Event()

    def feed(self, message: dict[str, Any]) -> None:
        if message.get("header", {}).get("msg_type") == self._reply_type:
            self.content = message.get("content") or {}
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class Execution:
    """The messages of one ``execute_request``, as they arrive.

    Attributes:
        msg_id: the request's id; messages are routed here by their parent's id.
        builder: accumulates the result (and applies the output limit).
        reply: the ``execute_reply`` content, once it arrived.
        idle: True once iopub ``status: idle`` for this request arrived.
        error: why the execution cannot finish (kernel death, lost connection), if so.
        done: set when finished (reply and idle) or failed.
    """

    def __init__(self, msg_id: str, builder: ResultBuilder) -> None:
        self.msg_id = msg_id
        self.builder = builder
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.error: BaseException | None = None
        self.done = anyio.Event()
        # True once its caller left before the end; later executions need not wait for it.
        self.abandoned = False
        self._queue: collections.deque[OutputChunk | int] = collections.deque()
        self._wakeup = anyio.Event()
        self.last_message_at = anyio.current_time()
        # Message ids already filed: a replay after a reconnection must not repeat output.
        self._seen: set[str] = set()

    @property
    def finished(self) -> bool:
        """True when both the reply and the idle status have arrived."""
        return self.reply is not None and self.idle

    def feed(self, message: dict[str, Any]) -> None:
        """File one message (called by the reader; never waits)."""
        self.last_message_at = anyio.current_time()
        header = message.get("header") or {}
        msg_id = header.get("msg_id")
        if msg_id is not None:
            if msg_id in self._seen:
                return
            self._seen.add(msg_id)
        msg_type = header.get("msg_type")
        channel = message.get("channel")
        content = message.get("content") or {}
        queued = len(self._queue)
        if channel == "shell":
            if msg_type == "execute_reply":
                self.reply = content
        elif channel == "iopub":
            if msg_type == "status":
                self.idle = self.idle or content.get("execution_state") == "idle"
            elif msg_type == "stream":
                chunk = self.builder.add_stream(content.get("name", "stdout"), content.get("text", ""))
                if chunk:
                    self._queue.append(chunk)
            elif msg_type in ("execute_result", "display_data"):
                handle = self.builder.add_rich(msg_type, content)
                if handle is not None:
                    self._queue.append(handle)
        if self.finished:
            self.done.set()
            self._wakeup.set()
        elif len(self._queue) != queued:
            self._wakeup.set()  # only output or the end wakes the caller; a status need not

    def drop_unreadable(self, size: int, reason: str) -> None:
        """A message of `size` bytes, probably this execution's output, could not be read."""
        self.builder.drop_unreadable(size, reason)
        self._wakeup.set()

    def fail(self, error: BaseException) -> None:
        """End the execution with `error` unless it has already finished."""
        if not self.done.is_set():
            self.error = error
            self.done.set()
        self._wakeup.set()

    @property
    def pending(self) -> bool:
        """True when output is queued for the caller."""
        return bool(self._queue)

    def take(self) -> list[OutputChunk | int]:
        """Everything queued for the caller since the last call: chunks and rich-output handles."""
        items = list(self._queue)
        self._queue.clear()
        if self._wakeup.is_set() and not self.done.is_set():
            self._wakeup = anyio.Event()
        return items

    async def complete(self, item: OutputChunk | int) -> OutputChunk | None:
        """The chunk for one item from `take`: a rich output's images are saved first.

        Saving writes files, so it runs in a worker thread, and only for a bundle that holds
        an image. Returns None for a rich output without text.
        """
        if not isinstance(item, int):
            return item
        builder = self.builder
        data = builder.pending_output(item).data
        images: list[Path] = []
        problems: list[str] = []
        if any(mime in data for mime in IMAGE_EXTENSIONS):
            images, problems = await anyio.to_thread.run_sync(save_images, data, builder.images_dir)
        return builder.complete_rich(item, images, problems)

    async def wait(self, seconds: float) -> None:
        """Wait until something new arrives, or `seconds` pass (``inf``: no limit)."""
        if self._queue or self.done.is_set():
            return
        with anyio.move_on_after(None if math.isinf(seconds) else max(seconds, 0)):
            await self._wakeup.wait()

    async def wait_done(self, seconds: float) -> bool:
        """Wait up to `seconds` for the execution to end; True when it did."""
        with anyio.move_on_after(max(seconds, 0)):
            await self.done.wait()
        return self.done.is_set()


class ExecutionStream:
    """What `KernelClient.stream` returns: an async iterator, and an async context manager.

    As an iterator (the ipybox-compatible form) it yields `OutputChunk`s as output arrives
    and the `ExecutionResult` last::

        async for item in kc.stream(code): ...

    As an async context manager it yields only the chunks, and the result is `result`; the
    execution's resources are released when the block exits::

        async with kc.stream(code) as run:
            async for chunk in run:
                ...
        print(run.result.text)
    """

    def __init__(self, run: Callable[[], AsyncIterator[OutputChunk | ExecutionResult]]) -> None:
        self._run = run
        self._iterator: AsyncIterator[OutputChunk | ExecutionResult] | None = None
        self._entered = False
        self._result: ExecutionResult | None = None

    @property
    def result(self) -> ExecutionResult:
        """The execution's result.

        Raises:
            InvalidStateError: the execution has not finished (iterate to the end first).
        """
        if self._result is None:
            raise InvalidStateError("the execution has not finished; iterate over it to the end first")
        return self._result

    def _start(self) -> AsyncIterator[OutputChunk | ExecutionResult]:
        if self._iterator is not None:
            raise InvalidStateError("an execution stream can be iterated only once")
        self._iterator = self._run()
        return self._iterator

    def __aiter__(self) -> AsyncIterator[Any]:
        iterator = self._start()
        return self._chunks(iterator) if self._entered else iterator

    async def _chunks(self, iterator: AsyncIterator[OutputChunk | ExecutionResult]) -> AsyncIterator[OutputChunk]:
        async for item in iterator:
            if isinstance(item, ExecutionResult):
                self._result = item
            else:
                yield item

    async def __aenter__(self) -> ExecutionStream:
        if self._entered or self._iterator is not None:
            raise InvalidStateError("an execution stream can be entered only once")
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the execution's resources now (as an async generator's ``aclose``)."""
        iterator = self._iterator
        if iterator is not None:
            aclose: Callable[[], Awaitable[None]] | None = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
