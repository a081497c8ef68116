"""Pure code, no processes: cells, results and MIME bundles, environment, public surface."""

from __future__ import annotations

import base64
import types
from pathlib import Path

import pytest
from helpers.results import add_rich_and_save

import kernelbox
from kernelbox._errors import ExecutionError, ExecutionTimeoutError
from kernelbox.cli._cells import split_cells
from kernelbox.client._results import ExecutionResult, ResultBuilder, strip_ansi
from kernelbox.gateway._env import kernel_env, validate_env

pytestmark = pytest.mark.unit


def test_public_all_is_sorted_and_complete() -> None:
    names = kernelbox.__all__
    assert names == sorted(names, key=str)
    public = {
        name for name in dir(kernelbox)
        if not name.startswith("_") and not isinstance(getattr(kernelbox, name), types.ModuleType)
    }
    assert public == set(names) - {"__version__"}


def test_split_cells_percent_format() -> None:
    source = "import os\n# %% first\nx = 1\n\n#%%\n# only a comment\n# %% [markdown]\n# prose\n# %%\ny = 2\n"
    cells = split_cells(source)
    assert [(c.title, c.source, c.line) for c in cells] == [
        ("", "import os", 1),
        ("first", "x = 1", 3),
        ("", "y = 2", 10),
    ]


def test_split_cells_without_markers_is_one_cell() -> None:
    assert [c.source for c in split_cells("a = 1\nb = 2\n")] == ["a = 1\nb = 2"]


def test_result_text_orders_streams_and_displays(tmp_path: Path) -> None:
    builder = ResultBuilder(tmp_path)
    builder.add_stream("stdout", "a")
    add_rich_and_save(builder, "display_data", {"data": {"text/plain": "D"}})
    builder.add_stream("stderr", "warn\n")
    add_rich_and_save(builder, "execute_result", {"data": {"text/plain": "R"}, "execution_count": 7})
    result = builder.build()
    assert result.text == "a\nD\nwarn\nR"
    assert result.stdout == "a"
    assert result.stderr == "warn\n"
    assert result.execution_count == 7
    assert [o.type for o in result.outputs] == ["display_data", "execute_result"]


def test_images_are_saved_with_the_right_extension_and_never_collide(tmp_path: Path) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    builder = ResultBuilder(tmp_path / "images")
    for _ in range(3):
        add_rich_and_save(builder, "display_data", {"data": {"image/png": png, "text/plain": "<Figure>"}})
    add_rich_and_save(builder, "display_data", {"data": {"image/svg+xml": "<svg/>"}})
    result = builder.build()
    assert len({p.name for p in result.images}) == 4
    assert [p.suffix for p in result.images] == [".png", ".png", ".png", ".svg"]
    assert result.images[0].read_bytes() == b"\x89PNG\r\n\x1a\n fake"
    assert result.images[3].read_text() == "<svg/>"


def test_output_limit_truncates_with_a_marker(tmp_path: Path) -> None:
    builder = ResultBuilder(tmp_path, max_output_bytes=10)
    builder.add_stream("stdout", "12345")
    builder.add_stream("stdout", "67890abc")
    assert builder.add_stream("stdout", "dropped") is None
    result = builder.build()
    assert result.truncated
    assert result.text.startswith("1234567890")
    assert "output truncated after 10 bytes" in result.text
    assert "dropped" not in result.text


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m: x") == "ZeroDivisionError: x"


def test_execution_error_str_has_name_value_and_traceback() -> None:
    error = ExecutionError("ValueError", "bad", ["line one", "line two"])
    assert str(error).startswith("ValueError: bad")
    assert "line two" in str(error)


def test_timeout_error_is_a_builtin_timeout_error() -> None:
    assert isinstance(ExecutionTimeoutError("t", timeout=1.0), TimeoutError)
    assert isinstance(ExecutionTimeoutError("t", timeout=1.0), kernelbox.KernelboxError)


def test_kernel_env_is_base_plus_injected_only() -> None:
    parent = {"PATH": "/bin", "HOME": "/home/u", "AWS_SECRET_ACCESS_KEY": "s", "LANG": "C.UTF-8"}
    env = kernel_env({"API_BASE": "x"}, parent)
    assert env == {"PATH": "/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "API_BASE": "x"}


@pytest.mark.parametrize(
    ("env", "error"),
    [({"A": 1}, TypeError), ({1: "a"}, TypeError), ({"A=B": "x"}, ValueError), ({"": "x"}, ValueError),
     ({"A": "x\0"}, ValueError), (["A"], TypeError)],
)
def test_validate_env_rejects_bad_input(env, error) -> None:
    with pytest.raises(error):
        validate_env(env)


def test_fractional_cull_seconds_reach_the_gateway_unrounded() -> None:
    from kernelbox._child.gateway.app import _config_argv
    from kernelbox.gateway.config import GatewayConfig

    argv = _config_argv(GatewayConfig(cull_idle_timeout=0.5, cull_interval=0.25))
    assert "--PooledKernelManager.cull_idle_timeout=0.5" in argv
    assert "--PooledKernelManager.cull_interval=0.25" in argv


def test_kernelspec_lookup_skips_ipythons_directory_only_when_it_holds_no_kernelspecs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_core.paths import jupyter_path

    from kernelbox._child.gateway.app import _skip_empty_ipython_kernel_dir

    unset = object()
    manager = types.SimpleNamespace(kernel_dirs=unset)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    _skip_empty_ipython_kernel_dir(manager)
    assert manager.kernel_dirs == jupyter_path("kernels")  # nothing there: IPython not imported

    manager = types.SimpleNamespace(kernel_dirs=unset)
    (tmp_path / "ipython" / "kernels").mkdir(parents=True)
    _skip_empty_ipython_kernel_dir(manager)
    assert manager.kernel_dirs is unset  # jupyter_client's default, with IPython's directory, stays

    monkeypatch.delenv("IPYTHONDIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for kernels in (tmp_path / "home" / ".ipython" / "kernels", tmp_path / "xdg" / "ipython" / "kernels"):
        kernels.mkdir(parents=True)
        manager = types.SimpleNamespace(kernel_dirs=unset)
        _skip_empty_ipython_kernel_dir(manager)
        assert manager.kernel_dirs is unset, kernels
        kernels.rmdir()


def test_output_chunks_survive_copy_and_pickle() -> None:
    import copy
    import pickle

    from kernelbox import OutputChunk, RichOutput

    output = RichOutput(type="display_data", data={"text/plain": "x"}, metadata={"m": 1})
    chunk = OutputChunk("x\n", "display_data", output)
    for clone in (copy.copy(chunk), copy.deepcopy(chunk), pickle.loads(pickle.dumps(chunk))):
        assert clone == "x\n" and clone.name == "display_data"
        assert clone.output is not None and clone.output.data["text/plain"] == "x"


def test_results_are_immutable(tmp_path: Path) -> None:
    import dataclasses

    builder = ResultBuilder(tmp_path)
    builder.add_stream("stdout", "hi\n")
    add_rich_and_save(builder, "display_data", {"data": {"text/plain": "D"}})
    result = builder.build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.images = []  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.outputs[0].data["text/plain"] = "changed"  # type: ignore[index]
    assert isinstance(result.outputs, tuple)
    # `images` is a list, as in the API kept compatible, and the result's own copy.
    given = [tmp_path / "a.png"]
    copied = ExecutionResult(text=None, images=given)
    given.append(tmp_path / "b.png")
    assert isinstance(copied.images, list) and copied.images == [tmp_path / "a.png"]


def test_rich_output_counts_against_the_output_limit(tmp_path: Path) -> None:
    builder = ResultBuilder(tmp_path, max_output_bytes=1000)
    assert builder.add_rich("display_data", {"data": {"text/plain": "a" * 600}}) is not None
    assert builder.add_rich("display_data", {"data": {"text/plain": "b" * 600}}) is None
    assert builder.add_stream("stdout", "after") is None
    result = builder.build()
    assert result.truncated and result.dropped_bytes == 600 + 5
    assert "output truncated after 1000 bytes" in (result.text or "")


def test_a_token_that_cannot_travel_in_a_header_is_refused_up_front() -> None:
    from kernelbox import KernelClient

    for token in ("a\r\nb", "tökén", " padded "):
        with pytest.raises(ValueError, match="printable ASCII"):
            KernelClient(token=token)


def test_a_sandboxed_gateway_reads_no_jupyter_config_from_its_writable_home(tmp_path: Path) -> None:
    from kernelbox.sandbox import sandbox_env

    env = sandbox_env({"PATH": "/usr/bin"}, tmp_path)
    assert env["JUPYTER_NO_CONFIG"] == "1"
    assert env["HOME"].startswith(str(tmp_path))
