"""Framework adapters against the real packages: the neutral tool, AutoGen and LangChain.

No language model is involved: AutoGen's ``CodeExecutorAgent`` is fed messages holding fixed
code blocks, and the LangChain tool is called as a model's tool call would call it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import anyio
import pytest
from autogen_agentchat.agents import CodeExecutorAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from langchain_core.messages import ToolMessage

from kernelbox import ExecutionResult, KernelClient, KernelGateway
from kernelbox.integrations.autogen import KernelboxCodeExecutor
from kernelbox.integrations.langchain import execute_code_tool as langchain_tool
from kernelbox.integrations.tool import execute_code_tool, run_code

TIMEOUT = 60


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # AutoGen and LangChain run on asyncio only


# -- framework-neutral -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_neutral_tool_describes_itself_and_keeps_state(client: KernelClient) -> None:
    tool = execute_code_tool(client, timeout=30)
    assert tool.name == "execute_code"
    assert tool.parameters["required"] == ["code"]
    assert tool.parameters["properties"]["timeout"]["maximum"] == 30
    json.dumps(tool.parameters)  # plain JSON, ready for any function-calling API
    with anyio.fail_after(TIMEOUT):
        assert await tool.call(code="base = 40") == "(no output)"
        assert await tool.call(**json.loads('{"code": "base + 2"}')) == "42"
        failed = await tool.call(code="print('partial')\nbase / 0", timeout=10)
    assert failed.startswith("partial\n\nZeroDivisionError: division by zero")


@pytest.mark.anyio
async def test_run_code_streams_output_and_reports_timeouts(client: KernelClient) -> None:
    seen: list[str] = []
    with anyio.fail_after(TIMEOUT):
        outcome = await run_code(client, "for i in range(3): print(i)", on_output=seen.append)
        assert outcome.ok and "".join(seen) == "0\n1\n2\n"
        slow = await run_code(client, "print('begun', flush=True)\nimport time\ntime.sleep(60)", timeout=1)
    assert not slow.ok and slow.result is None
    assert slow.text.startswith("begun\n\nthe execution did not finish within 1 seconds")


# -- AutoGen ---------------------------------------------------------------------------------


def agent_for(executor: KernelboxCodeExecutor) -> CodeExecutorAgent:
    with warnings.catch_warnings():  # "no approval function": these are the test's own blocks
        warnings.simplefilter("ignore", UserWarning)
        return CodeExecutorAgent("runner", code_executor=executor)


async def run_agent(agent: CodeExecutorAgent, markdown: str) -> str:
    with anyio.fail_after(TIMEOUT):
        response = await agent.on_messages([TextMessage(content=markdown, source="user")], CancellationToken())
    content = response.chat_message.content
    assert isinstance(content, str)
    return content


@pytest.mark.anyio
async def test_autogen_agent_runs_blocks_statefully_in_its_own_gateway(tmp_path: Path) -> None:
    executor = KernelboxCodeExecutor(working_dir=tmp_path, images_dir=tmp_path / "images", timeout=20)
    with anyio.fail_after(TIMEOUT):
        await executor.start()
    try:
        agent = agent_for(executor)
        first = await run_agent(agent, "Load it:\n```python\nrows = [3, 4, 5]\nprint('loaded', len(rows))\n```")
        assert first == "loaded 3"
        second = await run_agent(
            agent,
            "```python\ntotal = sum(rows)\nprint(total)\n```\nthen\n```sh\necho from-shell; pwd\n```",
        )
        assert second == f"12\nfrom-shell\n{tmp_path}"
        failed = await run_agent(agent, "```python\nprint('ok so far')\nrows[10]\n```")
        assert "exited with an error (POSIX exit code: 1)" in failed
        assert "ok so far" in failed and "IndexError: list index out of range" in failed
        shell_failed = await run_agent(agent, "```sh\nexit 3\n```")
        assert "POSIX exit code: 3" in shell_failed
    finally:
        with anyio.fail_after(TIMEOUT):
            await executor.stop()


@pytest.mark.anyio
async def test_autogen_executor_on_a_given_client(client: KernelClient) -> None:
    async with KernelboxCodeExecutor(client, timeout=2) as executor:
        token = CancellationToken()
        with anyio.fail_after(TIMEOUT):
            plotted = await executor.execute_code_blocks([CodeBlock(
                "import matplotlib.pyplot as plt\nkept = 'yes'\nplt.plot([1, 2])\nplt.show()", "python",
            )], token)
            assert plotted.exit_code == 0
            assert [p.suffix for p in plotted.output_files] == [".png"] and plotted.output_files[0].exists()
            timed_out = await executor.execute_code_blocks([CodeBlock("import time\ntime.sleep(60)", "python")], token)
            assert timed_out.exit_code == 124
            unknown = await executor.execute_code_blocks([CodeBlock("puts 1", "ruby")], token)
            assert unknown.exit_code == 1 and "unsupported language 'ruby'" in unknown.output
            survived = await executor.execute_code_blocks([CodeBlock("print(kept)", "python")], token)
            assert survived.output == "yes"  # the timeout interrupted the kernel but kept its state
            await executor.restart()
            after_restart = await executor.execute_code_blocks([CodeBlock("kept", "python")], token)
            assert after_restart.exit_code == 1 and "NameError" in after_restart.output
    assert client.connected  # the executor leaves a client it did not connect alone


def test_autogen_component_config_round_trips(tmp_path: Path) -> None:
    executor = KernelboxCodeExecutor(timeout=5, working_dir=tmp_path, env={"A": "1"})
    model = executor.dump_component()
    assert model.provider == "kernelbox.integrations.autogen.KernelboxCodeExecutor"
    loaded = KernelboxCodeExecutor.load_component(model)
    assert isinstance(loaded, KernelboxCodeExecutor) and loaded.timeout == 5
    with pytest.raises(ValueError, match="cannot be serialised"):
        KernelboxCodeExecutor(KernelClient(port=1)).dump_component()


# -- LangChain -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_langchain_tool_is_stateful_and_returns_the_result_as_artifact(client: KernelClient) -> None:
    tool = langchain_tool(client, timeout=30)
    assert tool.name == "execute_code"
    assert set(tool.args) == {"code", "timeout"}
    with anyio.fail_after(TIMEOUT):
        assert await tool.ainvoke({"code": "factor = 6"}) == "(no output)"
        assert await tool.ainvoke({"code": "print(factor * 7)"}) == "42"
        message = await tool.ainvoke(
            {"type": "tool_call", "id": "call-1", "name": "execute_code", "args": {"code": "factor + 1"}}
        )
    assert isinstance(message, ToolMessage)
    assert message.tool_call_id == "call-1" and message.content == "7"
    assert isinstance(message.artifact, ExecutionResult) and message.artifact.execution_count is not None


@pytest.mark.anyio
async def test_langchain_tool_returns_errors_for_the_model_to_read(client: KernelClient) -> None:
    tool = langchain_tool(client)
    with anyio.fail_after(TIMEOUT):
        message = await tool.ainvoke(
            {"type": "tool_call", "id": "call-2", "name": "execute_code", "args": {"code": "undefined_name"}}
        )
        slow = await tool.ainvoke({"code": "import time\ntime.sleep(60)", "timeout": 1})
    assert isinstance(message, ToolMessage)
    assert "NameError: name 'undefined_name' is not defined" in message.content
    assert message.artifact is None
    assert "did not finish within 1 seconds" in slow
    with pytest.raises(NotImplementedError):
        tool.invoke({"code": "1"})


@pytest.mark.anyio
async def test_adapters_share_one_kernel_with_the_client(gateway: KernelGateway, tmp_path: Path) -> None:
    async with KernelClient(base_url=gateway.url, token=gateway.token, images_dir=tmp_path) as kc:
        with anyio.fail_after(TIMEOUT):
            await langchain_tool(kc).ainvoke({"code": "shared = 'one kernel'"})
            assert await execute_code_tool(kc).call(code="print(shared)") == "one kernel"
            assert (await kc.execute("shared")).text == "'one kernel'"


def test_importing_kernelbox_imports_no_optional_framework() -> None:
    code = (
        "import sys, kernelbox, kernelbox.integrations, kernelbox.integrations.tool\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'mcp', 'mcp_types', 'autogen_core', 'autogen_agentchat', 'langchain_core', 'pydantic'})\n"
        "print(loaded)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
