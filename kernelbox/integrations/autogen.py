"""An AutoGen code executor that runs code blocks in a stateful kernelbox kernel.

``pip install 'kernelbox[autogen]'`` (autogen-core / autogen-agentchat 0.7). Use it wherever
AutoGen takes a `CodeExecutor`, e.g. with ``CodeExecutorAgent``::

    from autogen_agentchat.agents import CodeExecutorAgent
    from kernelbox.integrations.autogen import KernelboxCodeExecutor

    async with KernelboxCodeExecutor(working_dir="work") as executor:
        agent = CodeExecutorAgent("runner", code_executor=executor)
        ...

Unlike AutoGen's command-line executors, state persists across blocks and calls (one kernel,
as in a notebook) until `restart()`. ``python`` blocks run as Python; ``sh``/``bash`` blocks run
through IPython's ``%%sh``/``%%bash`` cell magics in the same kernel's working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

try:
    from autogen_core import CancellationToken, Component
    from autogen_core.code_executor import CodeBlock, CodeExecutor, CodeResult
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("kernelbox's AutoGen executor needs AutoGen: pip install 'kernelbox[autogen]'") from exc
from typing import Self

from pydantic import BaseModel, Field

from .._errors import ExecutionError, ExecutionTimeoutError, InvalidStateError, KernelboxError
from ..client.kernel_client import KernelClient
from ..gateway.gateway import KernelGateway
from .tool import run_code

__all__ = ["KernelboxCodeExecutor", "KernelboxCodeExecutorConfig", "KernelboxCodeResult"]

PYTHON_LANGUAGES = frozenset({"python", "py", "python3", "ipython", ""})
# Shell blocks become IPython script cell magics, which raise on a non-zero exit status.
SHELL_MAGICS = {"sh": "%%sh", "shell": "%%sh", "bash": "%%bash"}
# The exit code AutoGen's command-line executors report for a timeout (coreutils' timeout(1)).
TIMEOUT_EXIT_CODE = 124
_INTERRUPT_TIMEOUT_SECONDS = 5.0


@dataclass
class KernelboxCodeResult(CodeResult):
    """A `CodeResult` plus the images the code saved (plots), like AutoGen's Jupyter executor."""

    output_files: list[Path] = field(default_factory=list)


class KernelboxCodeExecutorConfig(BaseModel):
    """The serialisable configuration of a `KernelboxCodeExecutor` (AutoGen components)."""

    timeout: float = Field(default=60.0, gt=0)
    images_dir: str | None = None
    working_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    sandbox: bool = False
    sandbox_config: str | None = None
    connection_file: str | None = None


class KernelboxCodeExecutor(CodeExecutor, Component[KernelboxCodeExecutorConfig]):
    """Executes code blocks in one kernelbox kernel; variables persist across calls.

    Either pass a connected (or connectable) `client`, or let the executor start its own
    gateway on loopback when it starts (`start()` / ``async with``) and stop it on `stop()`.

    Args:
        client: an existing `KernelClient`; the executor connects it if needed and
            disconnects on `stop()` only what it connected. Not serialisable.
        timeout: seconds each code block may run; then it is interrupted (exit code 124).
        images_dir: where plots are saved (own-gateway mode).
        working_dir: the kernel's working directory (own-gateway mode).
        env: variables for the kernel's environment (own-gateway mode).
        sandbox: run the gateway and kernel in the OS sandbox (own-gateway mode).
        sandbox_config: the sandbox preset name or settings file (own-gateway mode).
        connection_file: instead of starting a gateway, use the one a running
            ``kernelbox serve --connection-file PATH`` describes.
    """

    component_config_schema = KernelboxCodeExecutorConfig
    component_provider_override = "kernelbox.integrations.autogen.KernelboxCodeExecutor"

    def __init__(
        self,
        client: KernelClient | None = None,
        *,
        timeout: float = 60.0,
        images_dir: str | Path | None = None,
        working_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        sandbox: bool = False,
        sandbox_config: str | None = None,
        connection_file: str | Path | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout}")
        if client is not None and connection_file is not None:
            raise ValueError("pass either client or connection_file, not both")
        self._config = KernelboxCodeExecutorConfig(
            timeout=timeout,
            images_dir=None if images_dir is None else str(images_dir),
            working_dir=None if working_dir is None else str(working_dir),
            env=dict(env or {}),
            sandbox=sandbox,
            sandbox_config=sandbox_config,
            connection_file=None if connection_file is None else str(connection_file),
        )
        self._given_client = client
        self._client: KernelClient | None = None
        self._gateway: KernelGateway | None = None
        self._connected_here = False

    @property
    def timeout(self) -> float:
        """Seconds each code block may run."""
        return self._config.timeout

    @property
    def client(self) -> KernelClient:
        """The kernel client, once started.

        Raises:
            InvalidStateError: `start()` was not called.
        """
        if self._client is None:
            raise InvalidStateError("the executor is not started; call start() or use 'async with'")
        return self._client

    async def start(self) -> None:
        """Connect the kernel (starting a gateway first in own-gateway mode). Idempotent."""
        if self._client is not None:
            return
        config = self._config
        images_dir = None if config.images_dir is None else Path(config.images_dir)
        client = self._given_client
        try:
            if client is None and config.connection_file is not None:
                client = KernelClient.from_connection_file(config.connection_file, images_dir=images_dir)
            elif client is None:
                self._gateway = KernelGateway(
                    host="127.0.0.1", port=0, env=config.env, working_dir=config.working_dir,
                    sandbox=config.sandbox, sandbox_config=config.sandbox_config, log_level="WARNING",
                )
                await self._gateway.start()
                client = KernelClient(base_url=self._gateway.url, token=self._gateway.token, images_dir=images_dir)
            if not client.connected:
                await client.connect()
                self._connected_here = True
        except BaseException:
            await self.stop()
            raise
        self._client = client

    async def stop(self) -> None:
        """Disconnect what `start()` connected and stop the gateway it started. Idempotent."""
        client, self._client = self._client or self._given_client, None
        gateway, self._gateway = self._gateway, None
        if client is not None and self._connected_here:
            await client.disconnect()
        self._connected_here = False
        if gateway is not None:
            await gateway.stop()

    async def restart(self) -> None:
        """Replace the kernel with a fresh one (AutoGen calls this when the agent is reset)."""
        await self.client.reset()

    async def execute_code_blocks(
        self, code_blocks: list[CodeBlock], cancellation_token: CancellationToken
    ) -> KernelboxCodeResult:
        """Run the blocks in order in the kernel; stop at the first that fails.

        Returns:
            Exit code 0 when all blocks ran; 1 when one raised (the output ends with its
            traceback) or its language is not supported; a shell block's own non-zero exit
            status; 124 when one timed out (the kernel was interrupted and keeps its state).
            ``output_files`` lists saved plots.

        Raises:
            asyncio.CancelledError: `cancellation_token` was cancelled; the running block is
                interrupted in the kernel.
            KernelboxError: the kernel itself failed (died, gateway gone).
        """
        client = self.client
        outputs: list[str] = []
        files: list[Path] = []
        for block in code_blocks:
            code = _as_kernel_code(block)
            if code is None:
                outputs.append(f"unsupported language {block.language!r}: use python, sh or bash")
                return KernelboxCodeResult(exit_code=1, output="\n".join(outputs), output_files=files)
            task = asyncio.ensure_future(run_code(client, code, timeout=self.timeout))
            cancellation_token.link_future(task)
            try:
                outcome = await task
            except asyncio.CancelledError:
                with contextlib.suppress(KernelboxError, asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(client.interrupt()), _INTERRUPT_TIMEOUT_SECONDS)
                raise
            if outcome.text:
                outputs.append(outcome.text)
            files.extend(outcome.images)
            if not outcome.ok:
                exit_code = _exit_code(outcome.error)
                return KernelboxCodeResult(exit_code=exit_code, output="\n".join(outputs), output_files=files)
        return KernelboxCodeResult(exit_code=0, output="\n".join(outputs), output_files=files)

    def _to_config(self) -> KernelboxCodeExecutorConfig:
        if self._given_client is not None:
            raise ValueError(
                "an executor built around your own KernelClient cannot be serialised; build it "
                "from options (or connection_file) instead"
            )
        return self._config.model_copy()

    @classmethod
    def _from_config(cls, config: KernelboxCodeExecutorConfig) -> Self:
        return cls(**config.model_dump())

    def __repr__(self) -> str:
        state = "started" if self._client is not None else "stopped"
        return f"<KernelboxCodeExecutor {state} timeout={self.timeout:g}>"


def _as_kernel_code(block: CodeBlock) -> str | None:
    """The cell to run for a code block, or None when its language is not supported."""
    language = block.language.strip().lower()
    if language in PYTHON_LANGUAGES:
        return block.code
    magic = SHELL_MAGICS.get(language)
    if magic is not None:
        return f"{magic}\n{block.code}"
    return None


def _exit_code(error: BaseException | None) -> int:
    """124 for a timeout; a shell block's own exit status; 1 for any other error."""
    if isinstance(error, ExecutionTimeoutError):
        return TIMEOUT_EXIT_CODE
    if isinstance(error, ExecutionError) and error.ename == "CalledProcessError":
        match = re.search(r"non-zero exit status (\d+)", error.evalue)
        if match:
            return int(match.group(1))
    return 1
