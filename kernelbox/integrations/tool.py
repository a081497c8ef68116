"""A framework-neutral ``execute_code`` tool: name, description, JSON Schema, async callable.

Any agent framework that does function calling can wrap it in a few lines::

    tool = execute_code_tool(client)
    openai_tool = {"type": "function", "function": {
        "name": tool.name, "description": tool.description, "parameters": tool.parameters}}
    ...
    text = await tool.call(**json.loads(tool_call.function.arguments))

Errors in the user's code (and timeouts) come back as text, traceback included, so the model can
correct itself; problems with the kernel itself (it died, the gateway is gone) are raised.
`run_code` is the shared core of the AutoGen, LangChain and MCP adapters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ExecutionError, ExecutionTimeoutError
from ..client._results import ExecutionResult, OutputChunk
from ..client.kernel_client import DEFAULT_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS  # the client's, re-exported
from ..client.kernel_client import KernelClient

__all__ = ["CodeOutcome", "Tool", "execute_code_tool", "render_result", "run_code"]

EXECUTE_CODE_DESCRIPTION = (
    "Run Python code in a stateful Jupyter (IPython) kernel, like a notebook cell: variables, "
    "imports and definitions persist between calls. Returns printed output, the value of the last "
    "expression, errors with their traceback, and the paths of saved plots."
)


@dataclass(frozen=True)
class Tool:
    """A tool any framework can register.

    Attributes:
        name: the tool's name, e.g. ``"execute_code"``.
        description: what it does, for the model.
        parameters: the JSON Schema (draft 2020-12 subset used by function calling) of its
            arguments object.
        call: the implementation: ``await call(**arguments)`` returns the text for the model.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    call: Callable[..., Awaitable[str]]


@dataclass
class CodeOutcome:
    """One execution as an agent sees it.

    Attributes:
        text: the rendered output for a model: text output, saved image paths, and on failure
            the output printed before it followed by the error and traceback.
        ok: True when the code ran to completion.
        result: the `ExecutionResult` when it did.
        error: the `ExecutionError` or `ExecutionTimeoutError` when it did not.
        images: paths of the saved images (empty on failure).
    """

    text: str
    ok: bool
    result: ExecutionResult | None = None
    error: ExecutionError | ExecutionTimeoutError | None = None
    images: list[Path] = field(default_factory=list)


def render_result(result: ExecutionResult) -> str:
    """The text a model should see for a finished execution."""
    lines = [result.text] if result.text else []
    lines += [f"[image saved: {path}]" for path in result.images]
    if result.truncated:
        lines.append("[output truncated: the client's max_output_bytes limit was reached]")
    return "\n".join(lines)


async def run_code(
    client: KernelClient,
    code: str,
    *,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    on_output: Callable[[OutputChunk], object] | None = None,
) -> CodeOutcome:
    """Execute `code`, keeping what it printed even when it fails.

    Args:
        client: a connected `KernelClient`.
        code: Python source.
        timeout: seconds; the kernel is interrupted after it (state kept).
        on_output: called with each `OutputChunk` as it arrives.

    Raises:
        KernelDiedError, GatewayConnectionError, NotConnectedError: the kernel itself failed.
    """
    printed: list[str] = []
    result: ExecutionResult | None = None
    try:
        async with client.stream(code, timeout=timeout) as run:
            async for chunk in run:
                printed.append(chunk)
                if on_output is not None:
                    on_output(chunk)
        result = run.result
    except (ExecutionError, ExecutionTimeoutError) as exc:
        before = "".join(printed).rstrip()
        return CodeOutcome(text=(before + "\n\n" if before else "") + str(exc), ok=False, error=exc)
    assert result is not None
    return CodeOutcome(text=render_result(result), ok=True, result=result, images=list(result.images))


def execute_code_tool(
    client: KernelClient,
    *,
    name: str = "execute_code",
    description: str = EXECUTE_CODE_DESCRIPTION,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Tool:
    """The ``execute_code`` tool for `client`'s kernel.

    Args:
        client: a connected `KernelClient`; the tool shares its kernel (and its state).
        name: the tool's name.
        description: the tool's description for the model.
        timeout: the default and largest timeout, in seconds, a call may use.
    """
    parameters = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python source to run, as in a notebook cell."},
            "timeout": {
                "type": "number", "exclusiveMinimum": 0, "maximum": timeout,
                "description": f"Seconds before the run is interrupted (default {timeout:g}).",
            },
        },
        "required": ["code"],
        "additionalProperties": False,
    }

    cap = timeout

    async def call(code: str, timeout: float | None = None) -> str:
        limit = cap if timeout is None else min(float(timeout), cap)
        outcome = await run_code(client, code, timeout=limit)
        return outcome.text or "(no output)"

    return Tool(name=name, description=description, parameters=parameters, call=call)
