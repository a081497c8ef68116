"""Unit tests of the sandbox layer's pure parts: presets, validation, merging, finding srt.

No sandbox runs here; `tests/test_sandbox.py` runs the real thing.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from kernelbox import SandboxConfigError, SandboxUnavailableError
from kernelbox.cli._doctor import _judge_probe
from kernelbox.sandbox import (
    SandboxLayout,
    _locate,
    allow_local_binding,
    check_sandbox_prerequisites,
    effective_settings,
    find_srt,
    load_sandbox_settings,
    prepare_sandbox,
    preset_names,
    preset_path,
    sandbox_env,
    seccomp_helper,
    validate_settings,
)
from kernelbox.sandbox import srt as _srt

pytestmark = pytest.mark.unit

CREDENTIAL_STORES = [
    "~/.ssh",
    "~/.aws",
    "~/.config/gcloud",
    "~/.azure",
    "~/.kube",
    "~/.docker",
    "~/.netrc",
    "~/.git-credentials",
    "**/.env",
]


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def layout_for(tmp_path: Path, **overrides: Any) -> SandboxLayout:
    fields: dict[str, Any] = {
        "working_dir": tmp_path / "work",
        "state_dir": tmp_path / "state",
        "settings_path": tmp_path / "state" / "sandbox-settings.json",
        "home_dirs": (Path("/home/alice"),),
        "runtime_dirs": (),
    }
    fields.update(overrides)
    return SandboxLayout(**fields)


# -- presets ------------------------------------------------------------------------------


def test_shipped_presets_are_found_from_the_checkout() -> None:
    assert {"default", "pypi", "github", "strict"} <= set(preset_names())


def test_none_means_the_default_preset() -> None:
    assert load_sandbox_settings(None) == load_sandbox_settings("default")


@pytest.mark.parametrize("name", ["default", "pypi", "github", "strict"])
def test_every_preset_denies_the_credential_stores(name: str) -> None:
    settings = load_sandbox_settings(name)
    assert set(CREDENTIAL_STORES) <= set(settings["filesystem"]["denyRead"])


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_is_valid_against_the_schema(name: str) -> None:
    """Presets are not schema-checked at run time (importing jsonschema costs ~1.2 s): here."""
    path = preset_path(name)
    settings = json.loads(path.read_text(encoding="utf-8"))
    assert validate_settings(settings, source=f"preset {name}", path=path) == settings
    assert load_sandbox_settings(name) == settings


@pytest.mark.parametrize("name", ["default", "pypi", "github", "strict"])
def test_no_preset_weakens_the_sandbox(name: str) -> None:
    settings = load_sandbox_settings(name)
    assert "allowAllUnixSockets" not in settings["network"]
    assert settings["filesystem"]["allowWrite"] == []  # kernelbox adds the only writable dirs
    assert not {"enableWeakerNestedSandbox", "allowNestedUserNamespaces"} & set(settings)


def test_default_preset_allows_no_network_and_pypi_allows_the_package_index() -> None:
    assert load_sandbox_settings("default")["network"]["allowedDomains"] == []
    pypi = load_sandbox_settings("pypi")["network"]["allowedDomains"]
    # Port 443 only: a host without a port would be open on every port (srt 0.0.83).
    assert set(pypi) == {"pypi.org:443", "files.pythonhosted.org:443"}


def test_strict_preset_hides_home_directories() -> None:
    deny = load_sandbox_settings("strict")["filesystem"]["denyRead"]
    assert {"~", "/home", "/root"} <= set(deny)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SandboxConfigError, match="unknown sandbox preset 'nope'.*default.*pypi"):
        load_sandbox_settings("nope")


@pytest.mark.parametrize("config", ["settings.json", "./default", "dir/default"])
def test_a_str_with_a_separator_or_json_suffix_is_a_path(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SandboxConfigError, match="cannot be read"):
        load_sandbox_settings(config)


def test_a_path_object_is_read_as_a_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "mine.json", {"network": {"allowedDomains": ["example.org"]}})
    assert load_sandbox_settings(path)["network"]["allowedDomains"] == ["example.org"]


def test_a_mapping_is_validated_and_copied() -> None:
    original = {"filesystem": {"denyRead": ["~/.ssh"]}}
    loaded = load_sandbox_settings(original)
    loaded["filesystem"]["denyRead"].append("x")
    assert original == {"filesystem": {"denyRead": ["~/.ssh"]}}


# -- validation errors name the file and the key --------------------------------------------


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "settings.json"
    directory.mkdir()
    with pytest.raises(SandboxConfigError, match=f"{directory}.*cannot be read"):
        load_sandbox_settings(directory)


def test_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"network": {"allowedDomains": [}}', encoding="utf-8")
    with pytest.raises(SandboxConfigError, match=f"{path}: invalid JSON at line 1 column"):
        load_sandbox_settings(path)


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write_json(tmp_path / "typo.json", {"network": {"allowedDomain": ["pypi.org"]}})
    with pytest.raises(SandboxConfigError) as info:
        load_sandbox_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown key 'network.allowedDomain'" in message
    assert "did you mean 'allowedDomains'" in message


def test_unknown_top_level_key_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="unknown key 'filesytem'.*'filesystem'"):
        load_sandbox_settings({"filesytem": {}})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"filesystem": {"allowWrite": "/tmp"}}, "filesystem.allowWrite must be a list of str"),
        ({"filesystem": {"denyRead": [1]}}, "filesystem.denyRead must be a list of strings"),
        ({"filesystem": {"denyRead": [""]}}, "filesystem.denyRead must be a list of strings"),
        ({"network": {"allowedDomains": "a.org"}}, "network.allowedDomains must be a list of str"),
        ({"network": {"allowLocalBinding": "yes"}}, "network.allowLocalBinding must be true or"),
        ({"mandatoryDenySearchDepth": True}, "mandatoryDenySearchDepth must be an integer"),
        ({"network": []}, "network must be an object"),
        ({"network": {"deniedDomainReasons": {"a": 1}}}, "network.deniedDomainReasons must be an"),
    ],
)
def test_wrong_types_name_the_key(
    settings: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = write_json(tmp_path / "types.json", settings)
    with pytest.raises(SandboxConfigError, match=f"{path}: {message}"):
        load_sandbox_settings(path)


def test_literal_path_entries_are_accepted() -> None:
    entry = {"path": "/data/[raw]", "literal": True}
    loaded = load_sandbox_settings({"filesystem": {"denyRead": [entry]}})
    assert loaded["filesystem"]["denyRead"] == [entry]


def test_literal_entry_with_extra_keys_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="filesystem.allowWrite"):
        load_sandbox_settings({"filesystem": {"allowWrite": [{"path": "/x", "literal": False}]}})


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = write_json(tmp_path / "list.json", [])
    with pytest.raises(SandboxConfigError, match=f"{path}: the settings must be a JSON object"):
        load_sandbox_settings(path)


def test_a_domain_with_a_scheme_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="'https://pypi.org' must be a host name pattern"):
        load_sandbox_settings({"network": {"allowedDomains": ["https://pypi.org"]}})


def test_allow_all_unix_sockets_is_refused(tmp_path: Path) -> None:
    path = write_json(tmp_path / "weak.json", {"network": {"allowAllUnixSockets": True}})
    expected = f"{path}: network.allowAllUnixSockets=true is refused.*seccomp"
    with pytest.raises(SandboxConfigError, match=expected):
        load_sandbox_settings(path)


def test_allow_all_unix_sockets_false_is_fine() -> None:
    load_sandbox_settings({"network": {"allowAllUnixSockets": False}})


def test_disabling_the_filesystem_rules_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="filesystem.disabled=true is refused"):
        load_sandbox_settings({"filesystem": {"disabled": True}})


def test_a_mapping_that_is_not_json_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="not JSON-serialisable"):
        load_sandbox_settings({"network": {"allowedDomains": {"a"}}})


# -- effective settings -----------------------------------------------------------------------


def test_merge_makes_working_and_state_dirs_writable_and_readable(tmp_path: Path) -> None:
    layout = layout_for(tmp_path)
    merged = effective_settings(load_sandbox_settings("default"), layout)
    fs = merged["filesystem"]
    assert fs["allowWrite"] == [str(layout.working_dir), str(layout.state_dir)]
    assert {str(layout.working_dir), str(layout.state_dir)} <= set(fs["allowRead"])
    assert merged["network"] == {"allowedDomains": [], "deniedDomains": []}


def test_merge_keeps_the_users_writable_paths(tmp_path: Path) -> None:
    layout = layout_for(tmp_path)
    merged = effective_settings({"filesystem": {"allowWrite": ["/data/out"]}}, layout)
    assert merged["filesystem"]["allowWrite"][0] == "/data/out"


def test_merge_expands_tilde_against_every_real_home(tmp_path: Path) -> None:
    homes = (Path("/home/alice"), Path("/root"))
    merged = effective_settings(
        {"filesystem": {"denyRead": ["~/.ssh", "~", {"path": "~/[x]", "literal": True}]}},
        layout_for(tmp_path, home_dirs=homes),
    )
    assert merged["filesystem"]["denyRead"] == [
        "/home/alice/.ssh",
        "/root/.ssh",
        "/home/alice",
        "/root",
        {"path": "/home/alice/[x]", "literal": True},
        {"path": "/root/[x]", "literal": True},
    ]


def test_merge_anchors_relative_paths_and_globs_at_the_working_dir(tmp_path: Path) -> None:
    layout = layout_for(tmp_path)
    merged = effective_settings({"filesystem": {"denyRead": ["**/.env", "./secrets"]}}, layout)
    assert merged["filesystem"]["denyRead"] == [
        f"{layout.working_dir}/**/.env",
        f"{layout.working_dir}/secrets",
    ]


def test_merge_makes_the_settings_file_read_only_inside(tmp_path: Path) -> None:
    layout = layout_for(tmp_path)
    merged = effective_settings({}, layout)
    assert merged["filesystem"]["denyWrite"] == [str(layout.settings_path)]


def test_merge_protects_runtime_dirs_only_inside_writable_paths(tmp_path: Path) -> None:
    venv = tmp_path / "work" / ".venv"
    elsewhere = Path("/opt/python")
    layout = layout_for(tmp_path, runtime_dirs=(venv, elsewhere))
    fs = effective_settings({}, layout)["filesystem"]
    assert str(venv) in fs["denyWrite"]
    assert str(elsewhere) not in fs["denyWrite"]
    assert {str(venv), str(elsewhere)} <= set(fs["allowRead"])


def test_merge_never_turns_seccomp_off_and_leaves_input_alone(tmp_path: Path) -> None:
    settings = load_sandbox_settings("pypi")
    before = json.dumps(settings, sort_keys=True)
    merged = effective_settings(settings, layout_for(tmp_path))
    assert "allowAllUnixSockets" not in merged["network"]
    assert json.dumps(settings, sort_keys=True) == before


def test_merge_removes_duplicates(tmp_path: Path) -> None:
    layout = layout_for(tmp_path)
    merged = effective_settings({"filesystem": {"allowWrite": [str(layout.working_dir)]}}, layout)
    assert merged["filesystem"]["allowWrite"] == [str(layout.working_dir), str(layout.state_dir)]


def test_sandbox_env_points_state_variables_into_the_state_dir(tmp_path: Path) -> None:
    given = {"PATH": "/bin", "INJECTED": "1", "HOME": "/root", "PYTHONPATH": "/x"}
    env = sandbox_env(given, tmp_path)
    assert env["INJECTED"] == "1"
    assert env["PATH"] == "/bin"
    expected = {
        "HOME": "home",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
        "MPLCONFIGDIR": "matplotlib",
        "CLAUDE_CODE_TMPDIR": "tmp",
        "TMPDIR": "tmp",
        "PIP_TARGET": "site-packages",
    }
    for name, subdir in expected.items():
        assert env[name] == str(tmp_path / subdir)
    # PIP_TARGET goes on the kernels' sys.path in the kernel launcher, never in the gateway's env.
    assert env["PYTHONPATH"] == "/x"


def test_sandbox_env_supplies_a_path(tmp_path: Path) -> None:
    assert sandbox_env({}, tmp_path)["PATH"]


def test_macos_settings_allow_local_binding_unless_the_user_decided() -> None:
    assert allow_local_binding({})["network"]["allowLocalBinding"] is True
    decided = {"network": {"allowLocalBinding": False}}
    assert allow_local_binding(decided)["network"]["allowLocalBinding"] is False


# -- finding srt --------------------------------------------------------------------------


def make_executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_srt_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH directory, no $KERNELBOX_SRT, no checkout or per-user install."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("KERNELBOX_SRT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "data"))  # root installs to the site data dir
    monkeypatch.setattr(_locate, "_LOCAL_SRT", tmp_path / "no-local-srt")
    return empty


def test_the_per_user_install_comes_after_the_checkout_and_before_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_srt_anywhere: Path
) -> None:
    on_path = make_executable(no_srt_anywhere / "srt", "#!/bin/sh\n")
    user = _locate.user_srt_path()
    assert user.is_relative_to(tmp_path / "data" / "kernelbox" / "srt")
    user.parent.mkdir(parents=True)
    make_executable(user, "#!/bin/sh\n")
    assert find_srt() == [str(user.resolve())]
    local = make_executable(tmp_path / "srt-local", "#!/bin/sh\n")
    monkeypatch.setattr(_locate, "_LOCAL_SRT", local)
    assert find_srt() == [str(local.resolve())]
    monkeypatch.setattr(_locate, "_LOCAL_SRT", tmp_path / "no-local-srt")
    user.unlink()
    assert find_srt() == [str(on_path.resolve())]


def test_system_package_commands_per_platform() -> None:
    from kernelbox.sandbox._install import system_package_command

    missing = ["bwrap", "rg", "node"]
    assert system_package_command(missing, "apt-get") == "sudo apt-get install -y bubblewrap nodejs ripgrep"
    assert system_package_command(missing, "dnf") == "sudo dnf install -y bubblewrap nodejs ripgrep"
    assert system_package_command(missing, "pacman") == "sudo pacman -S --needed bubblewrap nodejs ripgrep"
    assert system_package_command(missing, "brew") == "brew install node ripgrep"
    assert system_package_command([], "apt-get") is None


def test_explicit_path_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_srt_anywhere: Path
) -> None:
    explicit = make_executable(tmp_path / "srt-explicit", "#!/bin/sh\n")
    from_env = make_executable(tmp_path / "srt-env", "#!/bin/sh\n")
    monkeypatch.setenv("KERNELBOX_SRT", str(from_env))
    assert find_srt(explicit) == [str(explicit.resolve())]
    assert find_srt() == [str(from_env.resolve())]


def test_environment_wins_over_the_local_install_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_srt_anywhere: Path
) -> None:
    local = make_executable(tmp_path / "srt-local", "#!/bin/sh\n")
    on_path = make_executable(no_srt_anywhere / "srt", "#!/bin/sh\n")
    monkeypatch.setattr(_locate, "_LOCAL_SRT", local)
    assert find_srt() == [str(local.resolve())]
    local.unlink()
    assert find_srt() == [str(on_path.resolve())]
    from_env = make_executable(tmp_path / "srt-env", "#!/bin/sh\n")
    monkeypatch.setenv("KERNELBOX_SRT", str(from_env))
    assert find_srt() == [str(from_env.resolve())]


def test_a_node_script_runs_through_node(
    tmp_path: Path, no_srt_anywhere: Path
) -> None:
    node = make_executable(no_srt_anywhere / "node", "#!/bin/sh\n")
    script = make_executable(tmp_path / "cli.js", "#!/usr/bin/env node\n")
    link = no_srt_anywhere / "srt"
    link.symlink_to(script)
    assert find_srt() == [str(node), str(script.resolve())]


def test_a_node_script_without_node_is_unavailable(tmp_path: Path, no_srt_anywhere: Path) -> None:
    script = make_executable(tmp_path / "cli.js", "#!/usr/bin/env node\n")
    with pytest.raises(SandboxUnavailableError, match="needs Node.js"):
        find_srt(script)


def test_a_missing_explicit_path_is_an_error_not_a_fallback(
    tmp_path: Path, no_srt_anywhere: Path
) -> None:
    make_executable(no_srt_anywhere / "srt", "#!/bin/sh\n")
    with pytest.raises(SandboxUnavailableError, match="srt_path argument does not exist.*/missing"):
        find_srt(tmp_path / "missing")


def test_a_missing_environment_path_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_srt_anywhere: Path
) -> None:
    monkeypatch.setenv("KERNELBOX_SRT", str(tmp_path / "gone"))
    with pytest.raises(SandboxUnavailableError, match=r"\$KERNELBOX_SRT does not exist"):
        find_srt()


def test_no_srt_anywhere_says_where_it_looked_and_how_to_install(no_srt_anywhere: Path) -> None:
    with pytest.raises(SandboxUnavailableError) as info:
        find_srt()
    message = str(info.value)
    assert "KERNELBOX_SRT" in message
    assert "`srt` on PATH" in message
    assert "`kernelbox sandbox install`" in message and "@anthropic-ai/sandbox-runtime@0.0.83" in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prerequisites")
def test_missing_linux_tools_are_listed_with_the_apt_command(no_srt_anywhere: Path) -> None:
    with pytest.raises(SandboxUnavailableError) as info:
        check_sandbox_prerequisites(["/nonexistent/srt"])
    message = str(info.value)
    assert "bwrap, socat, rg not found on PATH" in message
    assert "apt-get install bubblewrap socat ripgrep" in message


def test_seccomp_helper_exists_only_for_x64_and_arm64(tmp_path: Path) -> None:
    assert seccomp_helper(tmp_path, "x86_64") == tmp_path / "vendor/seccomp/x64/apply-seccomp"
    assert seccomp_helper(tmp_path, "aarch64") == tmp_path / "vendor/seccomp/arm64/apply-seccomp"
    assert seccomp_helper(tmp_path, "riscv64") is None


# -- prepare_sandbox, with the machine checks stubbed out ------------------------------------


@pytest.fixture
def fake_srt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(_srt, "check_sandbox_prerequisites", lambda srt: None)
    return make_executable(tmp_path / "fake-srt", "#!/bin/sh\n")


def test_prepare_builds_the_srt_command_and_writes_effective_settings(
    tmp_path: Path, fake_srt: Path
) -> None:
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    state.mkdir()
    launch = prepare_sandbox(
        ["python", "-m", "gateway"],
        config="pypi",
        srt_path=fake_srt,
        working_dir=work,
        state_dir=state,
        env={"PATH": "/bin", "SECRET": "kept-only-if-the-caller-passes-it"},
    )
    assert launch.argv == [
        str(fake_srt.resolve()), "--settings", str(launch.settings_path), "--",
        "python", "-m", "gateway",
    ]
    assert launch.settings_path == state.resolve() / "sandbox-settings.json"
    written = json.loads(launch.settings_path.read_text(encoding="utf-8"))
    assert written["network"]["allowedDomains"] == ["pypi.org:443", "files.pythonhosted.org:443"]
    assert str(work.resolve()) in written["filesystem"]["allowWrite"]
    for subdir in ("home", "runtime", "ipython", "matplotlib", "tmp", "site-packages"):
        assert (state / subdir).is_dir()
    assert launch.env["HOME"] == str(state.resolve() / "home")


def test_prepare_validates_before_writing_anything(tmp_path: Path, fake_srt: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(SandboxConfigError):
        prepare_sandbox(
            ["true"],
            config={"network": {"allowAllUnixSockets": True}},
            srt_path=fake_srt,
            working_dir=tmp_path,
            state_dir=state,
            env={},
        )
    assert list(state.iterdir()) == []


def test_prepare_replaces_a_planted_symlink_instead_of_following_it(
    tmp_path: Path, fake_srt: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched", encoding="utf-8")
    (state / "sandbox-settings.json").symlink_to(victim)
    launch = prepare_sandbox(
        ["true"], config=None, srt_path=fake_srt, working_dir=tmp_path, state_dir=state, env={}
    )
    assert victim.read_text(encoding="utf-8") == "untouched"
    assert not launch.settings_path.is_symlink()


def test_prepare_refuses_an_empty_command(tmp_path: Path, fake_srt: Path) -> None:
    with pytest.raises(ValueError, match="needs a command"):
        prepare_sandbox(
            [], config=None, srt_path=fake_srt, working_dir=tmp_path, state_dir=tmp_path, env={}
        )


# -- doctor's verdict on the sandboxed probe ------------------------------------------------


def probe_output(unix_socket: str, write_outside: str, stdin_socket: str) -> str:
    fields = {"unix_socket": unix_socket, "write_outside": write_outside}
    return json.dumps({**fields, "stdin_socket": stdin_socket})


def test_doctor_accepts_a_probe_that_was_contained() -> None:
    output = probe_output("refused (EPERM)", "refused (EROFS)", "listening")
    assert _judge_probe(output, escaped=False).status == "OK"


@pytest.mark.parametrize(
    ("output", "escaped"),
    [
        (probe_output("allowed", "refused", "listening"), False),
        (probe_output("refused", "allowed", "listening"), False),
        (probe_output("refused", "refused", "listening"), True),
        (probe_output("refused", "refused", "missing (Bad file descriptor)"), False),
        ("Error: bwrap: setting up uid map: Permission denied", False),
    ],
)
def test_doctor_fails_a_weak_or_broken_sandbox(output: str, escaped: bool) -> None:
    assert _judge_probe(output, escaped=escaped).status == "FAIL"


def test_errors_name_the_file_and_the_key_as_attributes(tmp_path: Path) -> None:
    path = write_json(tmp_path / "typo.json", {"network": {"allowedDomain": ["pypi.org"]}})
    with pytest.raises(SandboxConfigError) as info:
        load_sandbox_settings(path)
    assert info.value.source == str(path)
    assert info.value.key == "network.allowedDomain"


def test_a_wrong_type_names_the_setting_not_the_entry(tmp_path: Path) -> None:
    path = write_json(tmp_path / "types.json", {"filesystem": {"denyRead": ["/a", 1]}})
    with pytest.raises(SandboxConfigError) as info:
        load_sandbox_settings(path)
    assert (info.value.source, info.value.key) == (str(path), "filesystem.denyRead")


def test_the_first_problem_in_the_file_is_the_one_reported() -> None:
    settings = {"network": {"allowLocalBinding": 1}, "filesytem": {}}
    with pytest.raises(SandboxConfigError, match="network.allowLocalBinding must be true or false") as info:
        load_sandbox_settings(settings)
    assert info.value.key == "network.allowLocalBinding"
    assert info.value.source == "sandbox_config mapping"


def test_a_refused_setting_names_its_key(tmp_path: Path) -> None:
    path = write_json(tmp_path / "weak.json", {"network": {"allowAllUnixSockets": True}})
    with pytest.raises(SandboxConfigError) as info:
        load_sandbox_settings(path)
    assert (info.value.source, info.value.key) == (str(path), "network.allowAllUnixSockets")


def test_invalid_json_names_the_file_and_no_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(SandboxConfigError) as info:
        load_sandbox_settings(path)
    assert info.value.source == str(path) and info.value.key is None


def test_the_schema_is_a_valid_json_schema() -> None:
    from jsonschema import Draft202012Validator

    from kernelbox.sandbox.settings import SETTINGS_SCHEMA

    Draft202012Validator.check_schema(SETTINGS_SCHEMA)
    assert SETTINGS_SCHEMA["additionalProperties"] is False


def test_a_shown_path_holding_the_working_directory_is_not_bound_over_it(tmp_path: Path) -> None:
    """`make demo`: the working directory inside an editable checkout (a sys.path entry, so in
    the view) was bound read-only by the checkout's own read bind, and bwrap could not start."""
    checkout = tmp_path / "checkout"
    work = checkout / "demo-workspace"
    layout = SandboxLayout(
        working_dir=work, state_dir=tmp_path / "state", settings_path=tmp_path / "state" / "s.json",
        home_dirs=(), view=(Path("/usr"), checkout, checkout / "kernelbox"),
    )
    allow_read = effective_settings({}, layout)["filesystem"]["allowRead"]
    assert str(checkout) not in allow_read
    assert {str(work), "/usr", str(checkout / "kernelbox")} <= set(allow_read)
