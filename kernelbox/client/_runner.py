"""Running executions on a kernel: one at a time, with the timeout, liveness and interrupt policy.

`Runner.run` submits an ``execute_request`` through the `KernelSession`, hands the caller each
chunk as the `Execution` completes it, and applies the policy:

- **timeout**: interrupt the kernel; if it is still busy `INTERRUPT_GRACE_SECONDS` later,
  restart it (the state is lost); either way raise `ExecutionTimeoutError`.
- **liveness**: after `LIVENESS_PROBE_SECONDS` of silence ask the gateway whether the kernel
  still exists and runs (Jupyter Server keeps the WebSocket open when a kernel is shut down or
  culled, and a stopped process sends nothing, so nothing else would ever arrive).
- **cancellation**: a cancelled caller's code is interrupted, so the next call starts on a free
  kernel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from .. import _protocol
from .._errors import ClientError, ExecutionError, ExecutionTimeoutError, KernelStoppedError
from ._execution import Execution
from ._http import CONTROL_TIMEOUT_SECONDS
from ._results import ExecutionResult, OutputChunk, ResultBuilder, strip_ansi
from ._session import KERNEL_GONE, KernelSession

logger = logging.getLogger("kernelbox.client")

__all__ = ["INTERRUPT_GRACE_SECONDS", "KERNEL_READY_TIMEOUT_SECONDS", "LIVENESS_PROBE_SECONDS", "Runner"]

# How long a kernel started by the gateway may take to answer and be set up.
KERNEL_READY_TIMEOUT_SECONDS = 60.0
# After a timeout's interrupt: how long the kernel may stay busy before it is restarted.
INTERRUPT_GRACE_SECONDS = 5.0
# Seconds of silence during an execution after which the client checks the kernel still exists.
LIVENESS_PROBE_SECONDS = 2.0

_KERNEL_STOPPED = (
    "the kernel process is stopped (SIGSTOP or SIGTSTP) and runs nothing; its state is intact: "
    "sent SIGCONT, it resumes and runs this request (whose output is then discarded), or call "
    "reset() for a fresh kernel"
)


class Runner:
    """Runs the executions of one `KernelSession`, one at a time.

    Executions are serialised at *submission*: a new request is sent once the previous
    execution has finished or its caller has left; the turn is never held while a caller
    consumes output.
    """

    def __init__(self, session: KernelSession) -> None:
        self._session = session
        self._turn = anyio.Lock()

    async def run(
        self,
        code: str,
        timeout: float | None,
        *,
        store_history: bool,
        limit: int | None,
        images_dir: Path,
    ) -> AsyncIterator[OutputChunk | ExecutionResult]:
        """Execute `code`: yield `OutputChunk`s as they come, then the `ExecutionResult`.

        Args:
            code: checked source (`KernelClient.stream` checks it).
            timeout: seconds from now until the execution must have finished; None: no limit.
            store_history: as ``execute_request``'s ``store_history``.
            limit: the output limit in bytes; None: no limit.
            images_dir: where images are saved.

        Raises:
            The errors of `KernelClient.execute`.
        """
        session = self._session
        kernel_id = session.kernel_id
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        request = _protocol.execute_request(code, session=session.session_id, store_history=store_history)
        execution = Execution(request["header"]["msg_id"], ResultBuilder(images_dir, limit))
        sent = False
        try:
            async with self._turn:
                previous = session.last
                if previous is not None:
                    if not previous.done.is_set() and not previous.abandoned:
                        # Another task is still reading an earlier execution: one at a time.
                        if not await previous.wait_done(deadline - anyio.current_time()):
                            await self._handle_timeout(previous, timeout)
                    if previous.done.is_set() or previous.abandoned:
                        # Nobody reads an abandoned execution; the kernel runs requests in order.
                        session.forget(previous.msg_id)
                if session.kernel_died:
                    raise session.died_error()
                frame = session.frame(request)
                session.register(execution)
                session.last = execution
                try:
                    await session.send_frame(frame)
                except BaseException:
                    session.last = previous
                    raise
                sent = True
            while True:
                for item in execution.take():
                    chunk = await execution.complete(item)
                    if chunk:
                        yield chunk
                if execution.done.is_set() and not execution.pending:
                    break
                now = anyio.current_time()
                if now >= deadline:
                    await self._handle_timeout(execution, timeout)
                if now - execution.last_message_at >= LIVENESS_PROBE_SECONDS:
                    await self._probe_liveness(execution, deadline)
                    execution.last_message_at = anyio.current_time()
                    continue
                await execution.wait(min(deadline, execution.last_message_at + LIVENESS_PROBE_SECONDS) - now)
        except anyio.get_cancelled_exc_class():
            if sent and not execution.done.is_set():
                await self._interrupt_abandoned(kernel_id)
            raise
        finally:
            if execution.done.is_set() or not sent:
                session.forget(execution.msg_id)
            else:
                # Left early (timeout, cancellation, a loop that stopped): nobody reads it now.
                execution.abandoned = True
        if execution.error is not None:
            raise execution.error
        assert execution.reply is not None
        self._raise_for_reply(execution.reply)
        builder = execution.builder
        if builder.execution_count is None:
            count = execution.reply.get("execution_count")
            builder.execution_count = count if isinstance(count, int) else None
        session.forget(execution.msg_id)
        yield builder.build()

    def _raise_for_reply(self, reply: dict[str, Any]) -> None:
        status = reply.get("status")
        context = {"url": self._session.url, "kernel_id": self._session.kernel_id}
        if status == "error":
            raise ExecutionError(
                str(reply.get("ename", "Error")),
                str(reply.get("evalue", "")),
                [strip_ansi(line) for frame in reply.get("traceback", []) for line in str(frame).splitlines()],
                **context,
            )
        if status == "aborted":
            raise ExecutionError("ExecutionAborted", "the kernel aborted the execution", **context)

    async def _probe_liveness(self, execution: Execution, deadline: float) -> None:
        """After a silence, ask the gateway whether the kernel still exists and runs."""
        session = self._session
        if session.disconnected:
            return
        with anyio.move_on_after(max(min(deadline - anyio.current_time(), CONTROL_TIMEOUT_SECONDS), 0)):
            probe = await session.api.probe_kernel(session.kernel_id)
            if probe == "gone":
                session.kernel_gone(KERNEL_GONE)
            elif probe == "stopped":
                logger.warning("Kernel %s: its process is stopped (SIGSTOP or SIGTSTP)", session.kernel_id)
                execution.fail(session.context(KernelStoppedError(_KERNEL_STOPPED)))

    async def _interrupt_abandoned(self, kernel_id: str) -> None:
        """A cancelled execution: interrupt its code so the next call starts on a free kernel."""
        if self._session.disconnected:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CONTROL_TIMEOUT_SECONDS):
            try:
                await self._session.api.control(kernel_id, "interrupt")
            except ClientError as exc:
                logger.warning("Kernel %s: could not interrupt a cancelled execution: %s", kernel_id, exc)

    async def _handle_timeout(self, execution: Execution, timeout: float | None) -> None:
        """Interrupt; if the kernel stays busy, restart it. Always raises a `TimeoutError`."""
        session = self._session
        session.check_connected()
        kernel_id = session.kernel_id
        seconds = float(timeout or 0)
        prefix = f"the execution did not finish within {seconds:g} seconds"

        def timeout_error(message: str, state_kept: bool | None) -> ExecutionTimeoutError:
            error = ExecutionTimeoutError(message, timeout=seconds, state_kept=state_kept)
            error.with_context(url=session.url, kernel_id=kernel_id)
            return error

        try:
            await session.api.control(kernel_id, "interrupt")
            if await execution.wait_done(INTERRUPT_GRACE_SECONDS):
                raise timeout_error(f"{prefix}; the kernel was interrupted and its state is kept", True)
            logger.warning("Kernel %s ignored the interrupt for %gs; restarting it", kernel_id, INTERRUPT_GRACE_SECONDS)
            await session.api.control(kernel_id, "restart")
            execution.fail(timeout_error(f"{prefix}; the kernel was restarted", False))
            await session.wait_ready(KERNEL_READY_TIMEOUT_SECONDS)
        except ClientError as exc:
            if isinstance(exc, ExecutionTimeoutError):
                raise
            raise timeout_error(f"{prefix}, and stopping it failed ({exc}); the kernel's state is unknown", None) from exc
        raise timeout_error(f"{prefix} and it ignored the interrupt; the kernel was restarted and its state is lost", False)
