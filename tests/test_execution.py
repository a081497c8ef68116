"""Executing code through a real gateway and kernel: state, output, images, errors, timeouts."""

from __future__ import annotations

import time

import anyio
import pytest

from kernelbox import (
    ExecutionError,
    ExecutionResult,
    ExecutionTimeoutError,
    KernelClient,
    KernelGateway,
    OutputChunk,
)

pytestmark = pytest.mark.anyio


async def test_state_persists_across_calls(client: KernelClient) -> None:
    with anyio.fail_after(30):
        await client.execute("x = 20")
        await client.execute("x += 1")
        result = await client.execute("print(x * 2)")
    assert result.text == "42"


async def test_two_clients_do_not_share_state(gateway: KernelGateway, client: KernelClient, tmp_path) -> None:
    with anyio.fail_after(60):
        await client.execute("shared_name = 'first'")
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                images_dir=tmp_path) as other:
            assert other.kernel_id != client.kernel_id
            with pytest.raises(ExecutionError) as info:
                await other.execute("shared_name")
    assert info.value.ename == "NameError"


async def test_reset_clears_state(client: KernelClient) -> None:
    with anyio.fail_after(60):
        await client.execute("value = 1")
        old_id = client.kernel_id
        await client.reset()
        assert client.kernel_id != old_id
        with pytest.raises(ExecutionError) as info:
            await client.execute("value")
    assert info.value.ename == "NameError"


async def test_expression_value_and_execution_count(client: KernelClient) -> None:
    with anyio.fail_after(30):
        first = await client.execute("1 + 1")
        second = await client.execute("'a' * 3")
    assert first.text == "2"
    assert second.text == "'aaa'"
    assert second.execution_count == first.execution_count + 1
    assert second.outputs[0].type == "execute_result"


async def test_empty_output_is_none(client: KernelClient) -> None:
    with anyio.fail_after(30):
        result = await client.execute("y = 3")
    assert result.text is None
    assert result.images == []


async def test_prints_arrive_as_separate_chunks_before_the_next_print(client: KernelClient) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(0.5)\nprint(time.time())"
    received: list[tuple[OutputChunk, float]] = []
    with anyio.fail_after(30):
        async for item in client.stream(code):
            if isinstance(item, OutputChunk):
                received.append((item, time.time()))
    assert [str(chunk) for chunk, _ in received][0] == "first\n"
    assert len(received) == 2
    first_arrival = received[0][1]
    second_printed_at = float(received[1][0])
    assert first_arrival < second_printed_at


async def test_stdout_and_stderr_chunks_are_distinguishable(client: KernelClient) -> None:
    code = "import sys\nprint('out')\nsys.stdout.flush()\nprint('err', file=sys.stderr)"
    chunks: list[OutputChunk] = []
    with anyio.fail_after(30):
        async for item in client.stream(code):
            if isinstance(item, OutputChunk):
                chunks.append(item)
            else:
                result = item
    assert {(c.name, str(c)) for c in chunks} == {("stdout", "out\n"), ("stderr", "err\n")}
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


async def test_stream_ends_with_the_result(client: KernelClient) -> None:
    items = []
    with anyio.fail_after(30):
        async for item in client.stream("print('a')\n'b'"):
            items.append(item)
    assert isinstance(items[-1], ExecutionResult)
    assert all(isinstance(item, str) for item in items[:-1])
    assert items[-1].text == "a\n'b'"


async def test_displays_do_not_run_into_stream_text(client: KernelClient) -> None:
    code = "print('no newline', end='')\ndisplay(1)\nprint('after')\n2"
    with anyio.fail_after(30):
        result = await client.execute(code)
    assert result.text == "no newline\n1\nafter\n2"


async def test_fifty_thousand_lines_come_back_exact(client: KernelClient) -> None:
    with anyio.fail_after(120):
        result = await client.execute("for i in range(50_000):\n    print(i)")
    assert result.text == "\n".join(str(i) for i in range(50_000))


async def test_half_million_character_string_comes_back_exact(client: KernelClient) -> None:
    with anyio.fail_after(60):
        result = await client.execute("import string\nprint((string.ascii_letters * 10_000)[:500_000])")
    expected = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 10_000)[:500_000]
    assert result.text == expected


async def test_thousand_short_prints_lose_no_output(client: KernelClient) -> None:
    with anyio.fail_after(180):
        for i in range(1_000):
            result = await client.execute(f"print({i})")
            assert result.text == str(i)


async def test_matplotlib_figure_becomes_a_png_file(client: KernelClient) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2, 3], [3, 1, 2])\n"
        "plt.show()"
    )
    with anyio.fail_after(60):
        result = await client.execute(code)
    assert len(result.images) == 1
    image = result.images[0]
    assert image.suffix == ".png"
    assert image.parent == client.images_dir
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_svg_jpeg_and_rich_outputs_keep_their_mime_bundles(client: KernelClient) -> None:
    code = (
        "from IPython.display import SVG, HTML, Markdown, Latex, JSON, Image, display\n"
        "import base64\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('# Title'))\n"
        "display(Latex(r'$x^2$'))\n"
        "display(JSON({'a': 1}))\n"
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"></svg>'))\n"
        "display({'image/jpeg': base64.b64encode(b'\\xff\\xd8\\xff\\xe0fake').decode(), 'text/plain': 'jpeg'}, raw=True)\n"
    )
    with anyio.fail_after(60):
        result = await client.execute(code)
    kinds = [o for o in result.outputs]
    assert kinds[0].html == "<b>bold</b>"
    assert kinds[1].markdown == "# Title"
    assert kinds[2].latex == "$x^2$"
    assert kinds[3].json == {"a": 1}
    assert kinds[4].svg.startswith("<svg")
    assert kinds[5].jpeg == b"\xff\xd8\xff\xe0fake"
    suffixes = sorted(p.suffix for p in result.images)
    assert suffixes == [".jpg", ".svg"]
    assert len({p.name for p in result.images}) == 2
    assert (result.images[1] if result.images[1].suffix == ".jpg" else result.images[0]).read_bytes() == b"\xff\xd8\xff\xe0fake"


@pytest.mark.parametrize(
    ("code", "ename", "in_traceback"),
    [
        ("def broken(:\n    pass", "SyntaxError", "broken"),
        ("1 / 0", "ZeroDivisionError", "1 / 0"),
        ("undefined_name + 1", "NameError", "undefined_name"),
    ],
)
async def test_errors_raise_execution_error(client: KernelClient, code: str, ename: str, in_traceback: str) -> None:
    with anyio.fail_after(30):
        with pytest.raises(ExecutionError) as info:
            await client.execute(code)
    error = info.value
    assert error.ename == ename
    assert f"{ename}: {error.evalue}" in str(error)
    assert any(in_traceback in line for line in error.traceback)
    assert not any("\x1b[" in line for line in error.traceback)
    with anyio.fail_after(30):
        assert (await client.execute("'still usable'")).text == "'still usable'"


async def test_output_before_an_error_is_streamed(client: KernelClient) -> None:
    chunks = []
    with anyio.fail_after(30):
        with pytest.raises(ExecutionError):
            async for item in client.stream("print('before')\nraise ValueError('bad')"):
                chunks.append(str(item))
    assert chunks == ["before\n"]


async def test_input_gives_a_clear_error_not_a_hang(client: KernelClient) -> None:
    with anyio.fail_after(30):
        with pytest.raises(ExecutionError) as info:
            await client.execute("input('name? ')")
    assert info.value.ename == "StdinNotImplementedError"


async def test_timeout_interrupts_keeps_state_and_recovers(client: KernelClient) -> None:
    with anyio.fail_after(60):
        await client.execute("kept = 'yes'")
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            await client.execute("import time\nwhile True: time.sleep(0.05)", timeout=1)
        assert time.monotonic() - started < 10
        assert isinstance(info.value, ExecutionTimeoutError)
        assert info.value.state_kept is True
        result = await client.execute("print(kept)")
    assert result.text == "yes"


async def test_concurrent_executes_on_one_client_are_serialised(client: KernelClient) -> None:
    results: dict[int, str | None] = {}

    async def run(i: int) -> None:
        results[i] = (await client.execute(f"import time\ntime.sleep(0.05)\nprint({i})")).text

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(run, i)
    assert results == {i: str(i) for i in range(5)}


async def test_clients_on_one_gateway_run_in_parallel(gateway: KernelGateway, tmp_path) -> None:
    spans: list[tuple[float, float]] = []
    connected = anyio.Event()
    ready: list[int] = []

    async def run(i: int) -> None:
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                images_dir=tmp_path) as kc:
            ready.append(i)
            if len(ready) == 3:
                connected.set()
            await connected.wait()
            start = time.monotonic()
            result = await kc.execute(f"import time\ntime.sleep(1)\nprint({i})")
            spans.append((start, time.monotonic()))
            assert result.text == str(i)

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(run, i)
    assert len(spans) == 3
    # Every execution started before any finished: the three sleeps overlapped.
    assert max(start for start, _ in spans) < min(end for _, end in spans)


async def test_code_must_be_a_string(client: KernelClient) -> None:
    with pytest.raises(TypeError):
        await client.execute(b"1+1")  # type: ignore[arg-type]


async def test_abandoning_a_stream_early_does_not_block_the_client(client: KernelClient) -> None:
    with anyio.fail_after(60):
        async for item in client.stream("import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('rest')"):
            assert str(item) == "first\n"
            break  # the caller stops listening; the code keeps running in the kernel
        result = await client.execute("print('next')")
    assert result.text == "next"
