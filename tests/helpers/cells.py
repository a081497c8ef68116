"""A cell whose printed lines a test can wait for while it still runs.

Attack tests order two kernels by what they print, never by sleeping: the attacker's cell
prints a marker once it is in place (subscribed, polling), the test waits for that line, and
only then makes the victim act. `StreamedCell.run` reads the cell through
`KernelClient.stream`; `wait_for` returns as soon as a matching line has arrived.
"""

from __future__ import annotations

import textwrap

import anyio
import anyio.abc

from kernelbox import ExecutionResult, KernelClient


class CellEndedError(AssertionError):
    """The cell finished without printing the line a test waited for."""


class StreamedCell:
    """The complete lines a running cell has printed so far, and a way to wait for more."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.result: ExecutionResult | None = None
        self._partial = ""
        self._changed = anyio.Event()
        self._ended = False

    @property
    def text(self) -> str:
        """Everything printed so far, a line per line (a last unfinished line included)."""
        return "\n".join([*self.lines, self._partial] if self._partial else self.lines)

    async def run(
        self,
        client: KernelClient,
        code: str,
        timeout: float,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Execute `code` (dedented) on `client` and record its lines until it finishes.

        Raises what `KernelClient.stream` raises (an `ExecutionError` when the cell raised).
        """
        task_status.started()
        try:
            async for item in client.stream(textwrap.dedent(code), timeout=timeout):
                if isinstance(item, ExecutionResult):
                    self.result = item
                else:
                    self._feed(str(item))
        finally:
            if self._partial:
                self.lines.append(self._partial)
                self._partial = ""
            self._ended = True
            self._notify()

    def _feed(self, chunk: str) -> None:
        *complete, self._partial = (self._partial + chunk).split("\n")
        if complete:
            self.lines.extend(complete)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def matching(self, prefix: str) -> list[str]:
        """The lines printed so far that start with `prefix`."""
        return [line for line in self.lines if line.startswith(prefix)]

    async def wait_for(self, prefix: str) -> str:
        """The first line starting with `prefix`, once it has been printed (bound the call).

        Raises:
            CellEndedError: the cell finished without printing one.
        """
        while True:
            found = self.matching(prefix)
            if found:
                return found[0]
            if self._ended:
                raise CellEndedError(f"the cell ended without printing a line starting {prefix!r}:\n{self.text}")
            await self._changed.wait()
