"""The OS sandbox: sandbox-runtime (`srt`) settings, prerequisites and the launch command.

kernelbox runs a sandboxed gateway as ``srt --settings <effective settings> -- <command>``.
This module knows nothing about the gateway: it turns the user's settings (a preset name, a
file or a mapping) into *effective* settings, finds srt, checks that the machine can run it,
and returns the argv and environment to spawn. The supervisor passes the listening socket as
the srt process's stdin; srt hands stdio (and nothing else) through bwrap and its seccomp
helper to the command (measured with srt 0.0.83, bubblewrap 0.8).

Facts this module relies on (srt 0.0.83; "README" is the npm package's README.md, "measured"
means checked on Debian 12, kernel 6.x, as root):

- srt validates settings with zod objects that *strip* unknown keys (``sandbox-config.js``), so
  a typo such as ``allowedDomain`` would silently mean "no rule". kernelbox rejects unknown keys.
- ``~`` in a path is expanded against the srt process's own ``HOME`` (measured). kernelbox sets
  ``HOME`` to the per-gateway state directory, so it expands ``~`` itself, against the real
  home directories, before srt sees the file.
- Relative paths are resolved against srt's working directory (README "All platforms");
  kernelbox makes them absolute against the kernels' working directory.
- On Linux a ``denyRead`` path that does not exist when the command starts hides nothing, and
  globs are expanded once, at start (README "Path Syntax (Linux)"). A denied directory shows as
  an empty directory (ENOENT inside), a denied file as unreadable (EACCES) (measured).
- Writes outside ``allowWrite`` fail with EROFS (measured).
- ``allowAllUnixSockets`` turns the seccomp filter off (README "Unix Socket Restrictions");
  kernelbox refuses it. Without a prebuilt ``apply-seccomp`` helper for the CPU, srt only warns
  and runs unfiltered, so kernelbox checks the helper is there.
- srt passes its own environment through to the command and adds proxy variables
  (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, lower-case forms, ``GRPC_PROXY``,
  ``JAVA_TOOL_OPTIONS``, ``GIT_SSH_COMMAND``, ``SANDBOX_RUNTIME=1``, ...) and sets ``TMPDIR`` to
  ``CLAUDE_CODE_TMPDIR`` (measured), so the caller must pass a minimal environment. The
  proxies answer 403 for hosts not allow-listed. srt's host-side bridge sockets
  (``claude-http-*.sock``) are created in ``CLAUDE_CODE_TMPDIR`` too, i.e. in the state
  directory, and go with it (measured).
- A copy of srt inside a writable path can be rewritten from inside the sandbox and then runs
  unsandboxed next time (README "Security Limitations"); kernelbox denies writes to it, to the
  Python installation and to kernelbox itself whenever they fall inside a writable path.
"""

from __future__ import annotations

import difflib
import json
import os
import platform
import posixpath
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._errors import SandboxConfigError, SandboxUnavailableError

__all__ = [
    "DEFAULT_PRESET",
    "SRT_ENV_VAR",
    "SRT_PACKAGE",
    "SRT_VERSION",
    "SandboxLaunch",
    "SandboxLayout",
    "allow_local_binding",
    "check_sandbox_prerequisites",
    "effective_settings",
    "find_srt",
    "load_sandbox_settings",
    "prepare_sandbox",
    "preset_names",
    "preset_path",
    "sandbox_env",
    "validate_settings",
]

SRT_PACKAGE = "@anthropic-ai/sandbox-runtime"
SRT_VERSION = "0.0.83"
SRT_ENV_VAR = "KERNELBOX_SRT"
DEFAULT_PRESET = "default"
SETTINGS_FILE_NAME = "sandbox-settings.json"

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parent
# Presets: package data in a wheel, the top-level folder in a checkout or editable install.
_PRESET_DIRS = (_PACKAGE_DIR / "sandbox_configs", _SOURCE_ROOT / "sandbox-configs")
_LOCAL_SRT_PREFIX = _SOURCE_ROOT / ".tools" / "srt"
_LOCAL_SRT = _LOCAL_SRT_PREFIX / "node_modules" / ".bin" / "srt"
_INSTALL_SCRIPT = _SOURCE_ROOT / "scripts" / "install-sandbox-prereqs.sh"
_PROBE_TIMEOUT_SECONDS = 10.0

# The per-gateway state directory's layout: subdirectory -> environment variables set to it.
STATE_SUBDIRS: dict[str, tuple[str, ...]] = {
    "home": ("HOME",),
    "runtime": ("JUPYTER_RUNTIME_DIR",),
    "ipython": ("IPYTHONDIR",),
    "matplotlib": ("MPLCONFIGDIR",),
    # srt sets TMPDIR from CLAUDE_CODE_TMPDIR inside; its default /tmp/claude may not exist.
    "tmp": ("CLAUDE_CODE_TMPDIR", "TMPDIR"),
    # `%pip install` cannot write into a read-only site-packages, and a venv ignores the user
    # site; so pip installs here (PIP_TARGET) and the directory is on PYTHONPATH.
    "site-packages": ("PIP_TARGET",),
}


# -- settings: presets, loading and validation ------------------------------------------------

_Kind = Literal["bool", "int", "str", "strings", "paths", "string_map", "object"]

_KIND_TEXT: dict[_Kind, str] = {
    "bool": "true or false",
    "int": "an integer",
    "str": "a string",
    "strings": "a list of strings",
    "paths": 'a list of strings (paths), or of {"path": "...", "literal": true} objects',
    "string_map": "an object mapping strings to strings",
    "object": "an object",
}

# The keys srt 0.0.83 accepts (dist/sandbox/sandbox-config.js), with their JSON types. Nested
# objects marked "object" (credentials, tlsTerminate, ...) are checked by srt itself.
_NETWORK_KEYS: dict[str, _Kind] = {
    "allowedDomains": "strings",
    "deniedDomains": "strings",
    "deniedDomainReasons": "string_map",
    "strictAllowlist": "bool",
    "deniedResolvedAddresses": "strings",
    "allowUnixSockets": "strings",
    "allowAllUnixSockets": "bool",
    "allowLocalBinding": "bool",
    "allowMachLookup": "strings",
    "httpProxyPort": "int",
    "socksProxyPort": "int",
    "mitmProxy": "object",
    "allowPlaintextHeaderSet": "bool",
    "stripResponseHeaders": "strings",
    "refuseOpaqueTunnels": "bool",
    "requireHostMatch": "bool",
    "ambiguousRequestTarget": "str",
    "tlsTerminate": "object",
    "parentProxy": "object",
}
_FILESYSTEM_KEYS: dict[str, _Kind] = {
    "disabled": "bool",
    "denyRead": "paths",
    "allowRead": "paths",
    "allowWrite": "paths",
    "denyWrite": "paths",
    "allowGitConfig": "bool",
}
_TOP_LEVEL_KEYS: dict[str, _Kind | dict[str, _Kind]] = {
    "network": _NETWORK_KEYS,
    "filesystem": _FILESYSTEM_KEYS,
    "credentials": "object",
    "ignoreViolations": "object",
    "enableWeakerNestedSandbox": "bool",
    "allowNestedUserNamespaces": "bool",
    "enableWeakerNetworkIsolation": "bool",
    "allowAppleEvents": "bool",
    "ripgrep": "object",
    "mandatoryDenySearchDepth": "int",
    "allowPty": "bool",
    "seccomp": "object",
    "bwrapPath": "str",
    "socatPath": "str",
    "javaAgentJarPath": "str",
    "windows": "object",
    "git": "object",
}
_PATH_LIST_KEYS = ("denyRead", "allowRead", "allowWrite", "denyWrite")


def preset_names() -> list[str]:
    """The names of the shipped presets (``sandbox-configs/*.json``), sorted."""
    names: set[str] = set()
    for directory in _PRESET_DIRS:
        if directory.is_dir():
            names.update(path.stem for path in directory.glob("*.json"))
    return sorted(names)


def preset_path(name: str) -> Path:
    """The file of the preset `name`.

    Raises:
        SandboxConfigError: there is no such preset; the message lists the presets.
    """
    for directory in _PRESET_DIRS:
        candidate = directory / f"{name}.json"
        if candidate.is_file():
            return candidate
    available = ", ".join(preset_names()) or "none found"
    raise SandboxConfigError(
        f"unknown sandbox preset {name!r}; presets: {available} "
        f"(or pass the path of an srt settings JSON file)"
    )


def _is_preset_name(config: str | os.PathLike[str]) -> bool:
    """A plain string with no path separator and no ``.json`` suffix names a preset."""
    if not isinstance(config, str):
        return False
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return not any(sep in config for sep in separators) and not config.endswith(".json")


def load_sandbox_settings(
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Load and validate the user's sandbox settings (srt's settings format).

    Args:
        config: None for the ``default`` preset; a preset name (a str with no path separator
            and no ``.json`` suffix, e.g. ``"pypi"``); a path to a JSON file (``~`` allowed);
            or a mapping holding the settings themselves.

    Returns:
        A new dict with the validated settings, as given (nothing merged yet).

    Raises:
        SandboxConfigError: unknown preset, unreadable file, invalid JSON, an unknown key, a
            value of the wrong type, or a setting kernelbox refuses; the message names the
            file (or preset) and the key.
    """
    if config is None:
        config = DEFAULT_PRESET
    if isinstance(config, Mapping):
        return validate_settings(_json_copy(config), source="sandbox_config mapping")
    if _is_preset_name(config):
        path = preset_path(str(config))
        source = f"sandbox preset {config!r} ({path})"
    else:
        path = Path(os.path.expanduser(os.fspath(config))).absolute()
        source = f"sandbox settings file {path}"
    return validate_settings(_read_json(path, source), source=source)


def _json_copy(settings: Mapping[str, Any]) -> Any:
    try:
        return json.loads(json.dumps(settings))
    except (TypeError, ValueError) as exc:
        raise SandboxConfigError(
            f"sandbox_config mapping: not JSON-serialisable ({exc}); use str, number, bool, "
            f"list and dict values only"
        ) from exc


def _read_json(path: Path, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SandboxConfigError(f"{source}: cannot be read ({reason})") from exc
    except UnicodeDecodeError as exc:
        raise SandboxConfigError(f"{source}: is not UTF-8 text ({exc.reason})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SandboxConfigError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def validate_settings(settings: Any, *, source: str) -> dict[str, Any]:
    """Check the structure and types of srt settings; reject what kernelbox must refuse.

    Deeper checks (domain pattern syntax, the nested ``credentials`` and ``tlsTerminate``
    objects) are srt's own, at launch.

    Args:
        settings: parsed JSON.
        source: how to name the settings in messages, e.g. ``"sandbox settings file /x.json"``.

    Returns:
        `settings`, now known to be a dict of the right shape.

    Raises:
        SandboxConfigError: the first problem found, naming `source` and the key.
    """
    if not isinstance(settings, dict):
        raise SandboxConfigError(f"{source}: the settings must be a JSON object at top level")
    _check_object(settings, _TOP_LEVEL_KEYS, prefix="", source=source)
    _refuse_weakening(settings, source)
    return settings


def _check_object(
    value: dict[str, Any],
    schema: Mapping[str, _Kind | dict[str, _Kind]],
    *,
    prefix: str,
    source: str,
) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if key not in schema:
            raise SandboxConfigError(f"{source}: unknown key {name!r}{_suggestion(key, schema)}")
        kind = schema[key]
        if isinstance(kind, dict):
            if not isinstance(item, dict):
                raise SandboxConfigError(f"{source}: {name} must be an object")
            _check_object(item, kind, prefix=f"{name}.", source=source)
        else:
            _check_value(item, kind, name=name, source=source)


def _suggestion(key: str, schema: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key, list(schema), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; known keys here: {', '.join(sorted(schema))}"


def _check_value(value: Any, kind: _Kind, *, name: str, source: str) -> None:
    if not _has_kind(value, kind):
        raise SandboxConfigError(
            f"{source}: {name} must be {_KIND_TEXT[kind]} (got {_json_type(value)})"
        )
    if kind == "strings" and name.startswith("network.") and "Domains" in name:
        for entry in value:
            if "/" in entry:
                raise SandboxConfigError(
                    f"{source}: {name} entry {entry!r} must be a host name pattern such as "
                    f"'pypi.org' or '*.example.com' (no scheme or path)"
                )


def _has_kind(value: Any, kind: _Kind) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "paths":
        return isinstance(value, list) and all(_is_path_entry(v) for v in value)
    if kind == "string_map":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return isinstance(value, dict)


def _is_path_entry(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, dict)
        and set(value) == {"path", "literal"}
        and isinstance(value["path"], str)
        and bool(value["path"])
        and value["literal"] is True
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list with an entry of another type" if value else "a list"
    return "an object"


def _refuse_weakening(settings: dict[str, Any], source: str) -> None:
    network = settings.get("network", {})
    if network.get("allowAllUnixSockets") is True:
        raise SandboxConfigError(
            f"{source}: network.allowAllUnixSockets=true is refused: on Linux it turns off "
            f"srt's seccomp filter, which is part of what keeps kernel code in the sandbox "
            f"(remove the key; the gateway needs no Unix sockets)"
        )
    if settings.get("filesystem", {}).get("disabled") is True:
        raise SandboxConfigError(
            f"{source}: filesystem.disabled=true is refused: it removes every read and write "
            f"rule (run with sandbox=False instead if that is what you want)"
        )


# -- effective settings (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class SandboxLayout:
    """The host paths that shape the effective settings.

    Attributes:
        working_dir: the kernels' working directory (absolute); writable inside.
        state_dir: the per-gateway state directory (absolute); writable inside.
        settings_path: where the effective settings are written (inside `state_dir`); kept
            read-only inside, so kernel code cannot change the rules of a restarted gateway.
        home_dirs: the real home directories that ``~`` in a path expands to (each of them).
        runtime_dirs: what the gateway needs to run (Python installation, kernelbox, srt):
            always readable, and read-only when inside a writable path.
    """

    working_dir: Path
    state_dir: Path
    settings_path: Path
    home_dirs: tuple[Path, ...]
    runtime_dirs: tuple[Path, ...] = ()


def effective_settings(settings: Mapping[str, Any], layout: SandboxLayout) -> dict[str, Any]:
    """Combine validated user settings with what the gateway needs.

    - ``~`` is expanded against every real home directory, and relative paths are made
      absolute against the working directory (srt would use its own ``HOME`` and cwd).
    - The working and state directories are added to ``allowWrite`` and ``allowRead``.
    - The runtime directories are added to ``allowRead``; those (and the settings file) that
      fall inside a writable path are added to ``denyWrite``.
    - The required srt keys are filled in with empty lists. Nothing else changes: in particular
      ``allowAllUnixSockets`` is never set.

    Args:
        settings: the output of `load_sandbox_settings`.
        layout: the host paths.

    Returns:
        A new dict, ready to be written as srt settings JSON.
    """
    result: dict[str, Any] = json.loads(json.dumps(settings))
    network = result.setdefault("network", {})
    network.setdefault("allowedDomains", [])
    network.setdefault("deniedDomains", [])
    filesystem = result.setdefault("filesystem", {})
    for key in _PATH_LIST_KEYS:
        entries = filesystem.get(key, [])
        filesystem[key] = _absolute_entries(entries, layout.home_dirs, layout.working_dir)
    writable = [str(layout.working_dir), str(layout.state_dir)]
    filesystem["allowWrite"] = _unique(filesystem["allowWrite"] + writable)
    readable = writable + [str(path) for path in layout.runtime_dirs]
    filesystem["allowRead"] = _unique(filesystem["allowRead"] + readable)
    roots = [Path(_entry_path(entry)) for entry in filesystem["allowWrite"]]
    protected = [layout.settings_path, *layout.runtime_dirs]
    read_only = [str(path) for path in protected if any(_is_within(path, r) for r in roots)]
    filesystem["denyWrite"] = _unique(filesystem["denyWrite"] + read_only)
    return result


def _entry_path(entry: str | dict[str, Any]) -> str:
    return entry if isinstance(entry, str) else str(entry["path"])


def _absolute_entries(
    entries: Sequence[str | dict[str, Any]], homes: Sequence[Path], base: Path
) -> list[str | dict[str, Any]]:
    result: list[str | dict[str, Any]] = []
    for entry in entries:
        for path in _absolute_paths(_entry_path(entry), homes, base):
            result.append(path if isinstance(entry, str) else {**entry, "path": path})
    return result


def _absolute_paths(path: str, homes: Sequence[Path], base: Path) -> list[str]:
    """``~`` -> each home; relative -> under `base`; glob characters are kept as they are."""
    if path == "~" or path.startswith("~/"):
        return [posixpath.normpath(str(home) + path[1:]) for home in homes]
    if posixpath.isabs(path):
        return [path]
    return [posixpath.normpath(posixpath.join(str(base), path))]


def _unique(entries: Sequence[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    seen: set[str] = set()
    result: list[str | dict[str, Any]] = []
    for entry in entries:
        key = json.dumps(entry, sort_keys=True)
        if key not in seen:
            seen.add(key)
            result.append(entry)
    return result


def _is_within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def sandbox_env(env: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The srt process's environment: `env` with the state directories set.

    srt passes its environment on to the command (adding its proxy variables), so this is
    also the gateway's and its kernels' base environment.

    Args:
        env: the environment the gateway would get unsandboxed.
        state_dir: the per-gateway state directory.

    Returns:
        A new dict: `env`, ``PATH`` (when `env` has none), and ``HOME``, ``JUPYTER_RUNTIME_DIR``,
        ``IPYTHONDIR``, ``MPLCONFIGDIR``, ``CLAUDE_CODE_TMPDIR``, ``TMPDIR``, ``PIP_TARGET``
        pointing into `state_dir`, with ``PIP_TARGET`` first on ``PYTHONPATH``.
    """
    result = dict(env)
    result.setdefault("PATH", os.environ.get("PATH", os.defpath))
    for subdir, names in STATE_SUBDIRS.items():
        for name in names:
            result[name] = str(state_dir / subdir)
    python_path = [result["PIP_TARGET"]]
    if result.get("PYTHONPATH"):
        python_path.append(result["PYTHONPATH"])
    result["PYTHONPATH"] = os.pathsep.join(python_path)
    return result


# -- finding srt ----------------------------------------------------------------------------


def _srt_install_hint() -> str:
    if _INSTALL_SCRIPT.is_file():
        local = f"bash {_INSTALL_SCRIPT} (installs it into {_LOCAL_SRT_PREFIX}), or "
    else:
        local = ""
    package = f"{SRT_PACKAGE}@{SRT_VERSION}"
    return f"install it with {local}npm install -g {package} (needs Node.js >= 20)"


def find_srt(explicit: str | os.PathLike[str] | None = None) -> list[str]:
    """Locate sandbox-runtime's ``srt`` and return the argv prefix that runs it.

    Looks, in order, at `explicit`, ``$KERNELBOX_SRT``, the project-local install
    (``<checkout>/.tools/srt/node_modules/.bin/srt``, made by
    ``scripts/install-sandbox-prereqs.sh``) and ``srt`` on ``PATH``. An explicit path or a set
    variable that does not exist is an error, not a reason to look further.

    Args:
        explicit: a path to the srt executable (or its ``cli.js``), or None.

    Returns:
        ``[node, /abs/path/dist/cli.js]`` for the npm package (so the srt process does not
        depend on ``node`` being on its ``PATH``), or ``[/abs/path/srt]`` for anything else.

    Raises:
        SandboxUnavailableError: srt (or the Node.js it needs) was not found; the message says
            where it looked and how to install it.
    """
    if explicit is not None:
        return _srt_argv(Path(os.fspath(explicit)).expanduser(), "the srt_path argument")
    from_env = os.environ.get(SRT_ENV_VAR)
    if from_env:
        return _srt_argv(Path(from_env).expanduser(), f"${SRT_ENV_VAR}")
    if _LOCAL_SRT.exists():
        return _srt_argv(_LOCAL_SRT, "the project-local install")
    on_path = shutil.which("srt")
    if on_path:
        return _srt_argv(Path(on_path), "PATH")
    raise SandboxUnavailableError(
        f"sandbox-runtime (srt) was not found: looked at the srt_path argument (not given), "
        f"${SRT_ENV_VAR} (not set), {_LOCAL_SRT} (missing) and `srt` on PATH (not found); "
        f"{_srt_install_hint()}"
    )


def _srt_argv(path: Path, origin: str) -> list[str]:
    if not path.is_file():
        raise SandboxUnavailableError(
            f"srt from {origin} does not exist or is not a file: {path}; {_srt_install_hint()}"
        )
    real = path.resolve()
    if not _is_node_script(real):
        if not os.access(real, os.X_OK):
            raise SandboxUnavailableError(f"srt from {origin} is not executable: {path}")
        return [str(real)]
    node = shutil.which("node")
    if node is None:
        raise SandboxUnavailableError(
            f"srt ({real}) needs Node.js, but `node` is not on PATH; install Node.js >= 20 "
            f"(Debian: apt-get install nodejs npm)"
        )
    return [node, str(real)]


def _is_node_script(path: Path) -> bool:
    if path.suffix in (".js", ".mjs", ".cjs"):
        return True
    try:
        with path.open("rb") as file:
            first_line = file.readline(200)
    except OSError:
        return False
    return first_line.startswith(b"#!") and b"node" in first_line


def srt_package_root(srt: Sequence[str]) -> Path | None:
    """The npm package directory of an srt argv from `find_srt` (None if not the npm package)."""
    script = Path(srt[-1])
    if script.name == "cli.js" and script.parent.name == "dist":
        root = script.parent.parent
        if (root / "package.json").is_file():
            return root
    return None


# -- prerequisites --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A missing prerequisite and how to fix it."""

    what: str
    fix: str


_DEBIAN_PACKAGES = {"bwrap": "bubblewrap", "socat": "socat", "rg": "ripgrep"}
_SECCOMP_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_USERNS_FIX = (
    "allow unprivileged user namespaces (sysctl -w user.max_user_namespaces=15000; "
    "Debian before 11: sysctl -w kernel.unprivileged_userns_clone=1; Ubuntu 24.04+: "
    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0; as root, keep CAP_SETFCAP; in "
    "a container, allow unshare/clone of user namespaces)"
)
_verified: set[tuple[str, ...]] = set()
_userns_usable: set[str] = set()


def check_sandbox_prerequisites(srt: Sequence[str]) -> None:
    """Check that this machine can run srt, quickly (no network; ~20 ms on Linux).

    Linux: ``bwrap``, ``socat`` and ``rg`` on ``PATH``, Node.js for the npm package, a
    prebuilt seccomp helper for this CPU, and user namespaces that bubblewrap can use
    (``bwrap --unshare-user --unshare-net --ro-bind / / true``). macOS: ``sandbox-exec`` and
    ``rg``. A successful check is remembered for the life of the process.

    Args:
        srt: the argv prefix from `find_srt`.

    Raises:
        SandboxUnavailableError: listing every missing prerequisite with its fix.
    """
    key = (sys.platform, os.environ.get("PATH", ""), *srt)
    if key in _verified:
        return
    problems = missing_prerequisites(srt)
    if problems:
        lines = "\n".join(f"  - {p.what}; fix: {p.fix}" for p in problems)
        raise SandboxUnavailableError(
            f"the sandbox cannot run on this machine:\n{lines}\n"
            f"(`kernelbox doctor` checks every prerequisite)"
        )
    _verified.add(key)


def missing_prerequisites(srt: Sequence[str]) -> list[Problem]:
    """Every prerequisite of `srt` that this machine lacks (empty when it can run)."""
    if sys.platform.startswith("linux"):
        return _linux_problems(srt)
    if sys.platform == "darwin":
        return _macos_problems(srt)
    return [
        Problem(
            f"kernelbox's sandbox runs on Linux and macOS, not on {sys.platform}",
            "use sandbox=False on this platform, or run kernelbox on Linux or macOS",
        )
    ]


def _linux_problems(srt: Sequence[str]) -> list[Problem]:
    problems = _node_problems(srt)
    missing = [tool for tool in _DEBIAN_PACKAGES if shutil.which(tool) is None]
    if missing:
        packages = " ".join(_DEBIAN_PACKAGES[tool] for tool in missing)
        problems.append(
            Problem(
                f"{', '.join(missing)} not found on PATH",
                f"apt-get install {packages} (Fedora: dnf install {packages}; "
                f"Arch: pacman -S {packages})",
            )
        )
    problems += _seccomp_problems(srt)
    bwrap = shutil.which("bwrap")
    if bwrap is not None:
        failure = user_namespace_failure(bwrap)
        if failure is not None:
            what = f"bubblewrap cannot create namespaces ({failure})"
            problems.append(Problem(what, _USERNS_FIX))
    return problems


def _macos_problems(srt: Sequence[str]) -> list[Problem]:
    problems = _node_problems(srt)
    if not Path("/usr/bin/sandbox-exec").exists() and shutil.which("sandbox-exec") is None:
        problems.append(Problem("sandbox-exec (Seatbelt) not found", "it ships with macOS"))
    if shutil.which("rg") is None:
        problems.append(Problem("rg (ripgrep) not found on PATH", "brew install ripgrep"))
    return problems


def _node_problems(srt: Sequence[str]) -> list[Problem]:
    if len(srt) >= 2 and not Path(srt[0]).is_file():
        return [Problem(f"Node.js not found at {srt[0]}", "install Node.js >= 20")]
    return []


def seccomp_helper(package_root: Path, machine: str | None = None) -> Path | None:
    """srt's prebuilt ``apply-seccomp`` for this CPU, or None when srt ships none for it.

    Source: ``getVendorArchitecture()`` in srt's ``generate-seccomp-filter.js`` (x64, arm64).
    """
    arch = _SECCOMP_ARCH.get((machine or platform.machine()).lower())
    if arch is None:
        return None
    return package_root / "vendor" / "seccomp" / arch / "apply-seccomp"


def _seccomp_problems(srt: Sequence[str]) -> list[Problem]:
    root = srt_package_root(srt)
    if root is None:
        return []  # not the npm package (e.g. a single-file build): srt checks for itself
    helper = seccomp_helper(root)
    if helper is None:
        return [
            Problem(
                f"srt ships no seccomp helper for this CPU ({platform.machine()}); without it "
                f"Unix sockets are not blocked",
                "run kernelbox on x86-64 or arm64 for a sandbox",
            )
        ]
    if not os.access(helper, os.X_OK):
        return [
            Problem(
                f"srt's seccomp helper is missing or not executable: {helper}",
                f"reinstall srt: {_srt_install_hint()}",
            )
        ]
    return []


def user_namespace_failure(bwrap: str) -> str | None:
    """Why bubblewrap cannot create user and network namespaces here, or None when it can.

    Mirrors srt's own probe (``bwrap --unshare-user --dev-bind / / true`` in
    ``linux-sandbox-utils.js``), plus a network namespace, which srt also needs. Takes ~20 ms;
    a success is remembered for the life of the process (a failure is not: it can be fixed).
    """
    if bwrap in _userns_usable:
        return None
    argv = [bwrap, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/", "true"]
    try:
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if completed.returncode != 0:
        return completed.stderr.strip() or f"exit status {completed.returncode}"
    _userns_usable.add(bwrap)
    return None


# -- putting it together --------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxLaunch:
    """What to spawn for a sandboxed command.

    Attributes:
        argv: the full argv: the srt prefix, ``--settings <settings_path> --`` and the command.
        env: the srt process's environment; srt passes it (plus its proxy variables) to the
            command, so the gateway and its kernels inherit it.
        settings_path: the effective settings JSON, written inside the state directory.
    """

    argv: list[str]
    env: dict[str, str]
    settings_path: Path


def prepare_sandbox(
    command: Sequence[str],
    *,
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
    srt_path: str | os.PathLike[str] | None,
    working_dir: Path,
    state_dir: Path,
    env: Mapping[str, str],
) -> SandboxLaunch:
    """Validate the settings, check the machine, write the effective settings, build the launch.

    Call it for every (re)start: it rewrites the settings file from the validated source, so
    a restarted gateway never runs under a file that something else changed.

    Args:
        command: the command to run inside, e.g.
            ``[sys.executable, "-m", "kernelbox._gateway_app"]``. Pass the listening socket as
            the spawned process's stdin; srt hands it on.
        config: see `load_sandbox_settings`.
        srt_path: see `find_srt`.
        working_dir: the kernels' working directory; writable inside. Spawn srt with this cwd.
        state_dir: an existing per-gateway directory; writable inside. Gets the subdirectories
            ``home``, ``runtime``, ``ipython``, ``matplotlib``, ``tmp``, ``site-packages`` and the
            settings file ``sandbox-settings.json``.
        env: the environment the command would get unsandboxed (see `sandbox_env`).

    Returns:
        The argv, environment and settings path to spawn with.

    Raises:
        ValueError: `command` is empty.
        SandboxConfigError: the settings are invalid (nothing has been written or spawned).
        SandboxUnavailableError: srt or a prerequisite is missing.
    """
    if not command:
        raise ValueError("prepare_sandbox() needs a command to run inside the sandbox")
    settings = load_sandbox_settings(config)
    srt = find_srt(srt_path)
    check_sandbox_prerequisites(srt)
    working_dir = Path(working_dir).resolve()
    state_dir = Path(state_dir).resolve()
    for subdir in STATE_SUBDIRS:
        (state_dir / subdir).mkdir(parents=True, exist_ok=True)
    layout = SandboxLayout(
        working_dir=working_dir,
        state_dir=state_dir,
        settings_path=state_dir / SETTINGS_FILE_NAME,
        home_dirs=real_home_dirs(env),
        runtime_dirs=runtime_dirs(srt),
    )
    effective = effective_settings(settings, layout)
    if sys.platform.startswith("linux"):
        effective = pin_linux_tools(effective)
    elif sys.platform == "darwin":
        effective = allow_local_binding(effective)
    _write_json_atomically(layout.settings_path, effective)
    argv = [*srt, "--settings", str(layout.settings_path), "--", *command]
    launch_env = sandbox_env(env, state_dir)
    return SandboxLaunch(argv=argv, env=launch_env, settings_path=layout.settings_path)


def real_home_dirs(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The home directories that ``~`` stands for: this process's, `env`'s and the account's."""
    candidates = [os.path.expanduser("~"), env.get("HOME", ""), _account_home()]
    homes: list[Path] = []
    for candidate in candidates:
        if candidate and candidate != "~" and Path(candidate).is_absolute():
            home = Path(candidate)
            if home not in homes:
                homes.append(home)
    return tuple(homes)


def _account_home() -> str:
    """The home directory in the user database ("" where there is none, e.g. Windows)."""
    try:
        import pwd  # POSIX only; sandboxing is refused elsewhere, after this runs

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return ""


def runtime_dirs(srt: Sequence[str]) -> tuple[Path, ...]:
    """The Python installation, the kernelbox package and srt's package (when known)."""
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), _PACKAGE_DIR]
    root = srt_package_root(srt)
    if root is not None:
        paths.append(root)
    result: list[Path] = []
    for path in paths:
        resolved = path.resolve()
        if resolved not in result:
            result.append(resolved)
    return tuple(result)


def pin_linux_tools(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Pin ``bwrapPath``, ``socatPath`` and ``ripgrep`` to absolute paths found on our PATH.

    srt would otherwise look them up on the srt process's ``PATH``, which is the kernels'
    ``PATH`` and may differ from ours. Keys the user set are kept.
    """
    result = dict(settings)
    for key, tool in (("bwrapPath", "bwrap"), ("socatPath", "socat")):
        found = shutil.which(tool)
        if found and key not in result:
            result[key] = os.path.abspath(found)
    rg = shutil.which("rg")
    if rg and "ripgrep" not in result:
        result["ripgrep"] = {"command": os.path.abspath(rg)}
    return result


def allow_local_binding(settings: Mapping[str, Any]) -> dict[str, Any]:
    """macOS: let the gateway accept on its socket and its kernels use loopback TCP (ZMQ).

    Seatbelt has no network namespace: without ``network.allowLocalBinding`` the profile
    srt generates allows loopback only to its proxy ports (``macos-sandbox-utils.js``), so
    neither the gateway's ``accept()`` nor the kernels' ZMQ sockets would work. The price,
    on macOS only, is that kernel code can also connect to services on the host's loopback.
    Not verified on a Mac (none here). An explicit setting in the user's file is kept.
    """
    result: dict[str, Any] = json.loads(json.dumps(settings))
    result.setdefault("network", {}).setdefault("allowLocalBinding", True)
    return result


def _write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` to `path` via a new file and a rename.

    The rename replaces the directory entry itself, so a symlink planted at `path` (the state
    directory is writable from inside the sandbox) is replaced, never followed.
    """
    fd, temporary = tempfile.mkstemp(prefix=".sandbox-settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
