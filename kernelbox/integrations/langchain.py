"""A LangChain tool that runs Python in a stateful kernelbox kernel.

``pip install 'kernelbox[langchain]'`` (langchain-core 1.x)::

    from kernelbox.integrations.langchain import execute_code_tool

    async with KernelClient(...) as kc:
        tool = execute_code_tool(kc)
        llm_with_tools = chat_model.bind_tools([tool])
        ...
        message = await tool.ainvoke(tool_call)      # a ToolMessage; .artifact is the result

The tool is async only (``ainvoke``; LangChain's sync ``invoke`` raises ``NotImplementedError``
for coroutine-only tools). Its content is the text a model should read — output, saved plot
paths, or the error with its traceback, so the model can correct itself; its artifact (when
called with a tool call) is the `ExecutionResult`, or None when the code failed. A kernel that
died or a lost gateway is raised, not returned.
"""

from __future__ import annotations

try:
    from langchain_core.tools import StructuredTool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("kernelbox's LangChain tool needs langchain-core: pip install 'kernelbox[langchain]'") from exc
from pydantic import BaseModel, Field

from ..client._results import ExecutionResult
from ..client.kernel_client import KernelClient
from .tool import DEFAULT_TIMEOUT_SECONDS, EXECUTE_CODE_DESCRIPTION, run_code

__all__ = ["ExecuteCodeInput", "execute_code_tool"]


class ExecuteCodeInput(BaseModel):
    """The arguments of ``execute_code``."""

    code: str = Field(description="Python source to run, as in a notebook cell.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the run is interrupted.")


def execute_code_tool(
    client: KernelClient,
    *,
    name: str = "execute_code",
    description: str = EXECUTE_CODE_DESCRIPTION,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> StructuredTool:
    """A LangChain ``execute_code`` tool bound to `client`'s kernel (stateful across calls).

    Args:
        client: a connected `KernelClient`.
        name: the tool's name.
        description: the tool's description for the model.
        timeout: the default and largest timeout, in seconds, a call may use.
    """
    cap = timeout

    async def execute_code(code: str, timeout: float | None = None) -> tuple[str, ExecutionResult | None]:
        limit = cap if timeout is None else min(timeout, cap)
        outcome = await run_code(client, code, timeout=limit)
        return outcome.text or "(no output)", outcome.result

    return StructuredTool.from_function(
        coroutine=execute_code,
        name=name,
        description=description,
        args_schema=ExecuteCodeInput,
        response_format="content_and_artifact",
    )
