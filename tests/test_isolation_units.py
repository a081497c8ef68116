"""The pure and up-front parts of isolation: refusals before anything starts, and the wrappers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import kernelbox
from kernelbox import SandboxConfigError, SandboxUnavailableError
from kernelbox.gateway._cgroups import CgroupLimits, GatewayCgroups
from kernelbox.gateway.config import GatewayConfig
from kernelbox.sandbox.srt import host_code_in, host_code_paths
from kernelbox.sandbox.user import resolve_sandbox_user

CHECKOUT = Path(kernelbox.__file__).resolve().parent.parent
FAKE_SRT = ["/usr/bin/node", "/opt/npm/node_modules/@anthropic-ai/sandbox-runtime/dist/cli.js"]


@pytest.mark.parametrize("directory", [str(CHECKOUT), sys.prefix, str(Path(kernelbox.__file__).parent)])
def test_a_working_dir_that_is_host_code_is_refused(directory: str) -> None:
    with pytest.raises(SandboxConfigError, match="which this host runs outside the sandbox"):
        host_code_in(Path(directory), FAKE_SRT, {"HOME": "/nonexistent-home"})


def test_the_root_directory_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="root directory"):
        host_code_in(Path("/"), FAKE_SRT, {"HOME": "/nonexistent-home"})


def test_a_home_directory_is_refused_and_srts_node_modules_inside_is_made_read_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(SandboxConfigError):
        host_code_in(home, FAKE_SRT, {"HOME": str(home)})
    package = tmp_path / "tools" / "node_modules" / "@anthropic-ai" / "sandbox-runtime"
    (package / "dist").mkdir(parents=True)
    (package / "package.json").write_text("{}")
    srt = ["/usr/bin/node", str(package / "dist" / "cli.js")]
    assert tmp_path / "tools" / "node_modules" in host_code_paths(srt, {})
    # node loads srt's dependencies from there: shown read-only inside, not refused
    protected = host_code_in(tmp_path / "tools", srt, {})
    assert tmp_path / "tools" / "node_modules" in protected


def test_a_project_holding_its_virtual_environment_gets_it_read_only() -> None:
    venv = Path(sys.prefix)
    project = venv.parent
    if project in host_code_paths(FAKE_SRT, {"HOME": "/nonexistent-home"}):
        pytest.skip(f"{project} is itself on sys.path here (an editable install)")
    protected = host_code_in(project, FAKE_SRT, {"HOME": "/nonexistent-home"})
    assert Path(os.path.realpath(venv)) in protected


def test_host_code_inside_that_does_not_exist_yet_is_refused(tmp_path: Path) -> None:
    node = tmp_path / "bin" / "node"  # the node that runs srt, as root, outside the sandbox
    with pytest.raises(SandboxConfigError, match="does not exist yet"):
        host_code_in(tmp_path, [str(node), FAKE_SRT[1]], {"HOME": "/nonexistent-home"})


def test_a_fresh_directory_is_accepted(tmp_path: Path) -> None:
    assert host_code_in(tmp_path, FAKE_SRT, {"HOME": "/nonexistent-home"}) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only")
def test_as_root_a_missing_sandbox_user_is_refused_with_the_fix() -> None:
    with pytest.raises(SandboxUnavailableError, match="useradd --system"):
        resolve_sandbox_user("kernelbox-no-such-user")


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only")
def test_as_root_root_is_never_the_sandbox_user() -> None:
    with pytest.raises(SandboxConfigError, match="never runs as root"):
        resolve_sandbox_user("root")


@pytest.mark.skipif(os.geteuid() == 0, reason="as a normal user only")
def test_without_root_another_sandbox_user_is_refused() -> None:
    assert resolve_sandbox_user(None) is None
    with pytest.raises(SandboxConfigError, match="needs root"):
        resolve_sandbox_user("root")


def test_limits_and_the_sandbox_user_are_validated() -> None:
    with pytest.raises(ValueError, match="sandbox=True"):
        GatewayConfig(sandbox_user="someone")
    with pytest.raises(ValueError, match="memory_limit"):
        GatewayConfig(memory_limit=1024)
    with pytest.raises(ValueError, match="pids_limit"):
        GatewayConfig(pids_limit=3)
    config = GatewayConfig(sandbox=True, sandbox_user="someone", memory_limit=1 << 30, pids_limit=512)
    assert (config.memory_limit, config.pids_limit) == (1 << 30, 512)


def test_the_cgroup_wrapper_joins_every_group_before_the_command() -> None:
    groups = GatewayCgroups(CgroupLimits(pids=100))
    assert groups.wrap(["srt", "x"]) == ["srt", "x"]  # no groups: unchanged
    groups.paths = [Path("/sys/fs/cgroup/pids/kb")]
    argv = groups.wrap(["srt", "--", "x"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == ["sh", "/sys/fs/cgroup/pids/kb", "--", "srt", "--", "x"]
    assert "|| exit 125" in argv[2]


def test_view_and_tenant_options_need_a_sandbox_and_existing_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sandboxed gateway only"):
        GatewayConfig(isolate_kernels=True)
    with pytest.raises(ValueError, match="sandboxed gateway only"):
        GatewayConfig(read_paths=(tmp_path,))
    with pytest.raises(ValueError, match="does not exist"):
        GatewayConfig(sandbox=True, read_paths=(tmp_path / "missing",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not an existing directory"):
        GatewayConfig(sandbox=True, write_paths=(tmp_path / "file",))
    with pytest.raises(TypeError):
        GatewayConfig(sandbox=True, read_paths=str(tmp_path))  # type: ignore[arg-type]
    config = GatewayConfig(sandbox=True, read_paths=(tmp_path / "file",), write_paths=(tmp_path,), isolate_kernels=True)
    assert config.read_paths == ((tmp_path / "file").resolve(),)
    assert config.isolate_kernels is True


def test_the_view_names_the_os_and_python_runtime_and_nothing_of_home() -> None:
    from kernelbox.sandbox.view import view_read_paths

    view = view_read_paths()
    assert Path("/usr") in view
    assert Path(sys.prefix) in view or Path(os.path.realpath(sys.prefix)) in view
    assert Path(kernelbox.__file__).resolve().parent in view
    for hidden in ("/home", "/root", "/tmp", "/var", "/opt", "/srv", "/etc", "/"):
        assert Path(hidden) not in view
    assert not any(path == Path.home() for path in view)
