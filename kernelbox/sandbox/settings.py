"""Sandbox settings: presets, loading, validation and the effective settings srt runs with.

Pure code apart from reading files. The user's settings (a preset name, a file or a mapping)
are validated against the keys srt 0.0.83 accepts, then combined with what the gateway needs
(`effective_settings`). Facts about srt that this module relies on are listed in
`kernelbox.sandbox` (the package docstring).
"""

from __future__ import annotations

import difflib
import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._errors import SandboxConfigError

__all__ = [
    "DEFAULT_PRESET",
    "SandboxLayout",
    "effective_settings",
    "load_sandbox_settings",
    "preset_names",
    "preset_path",
    "validate_settings",
]

DEFAULT_PRESET = "default"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_SOURCE_ROOT = _PACKAGE_DIR.parent
# Presets: package data in a wheel, the top-level folder in a checkout or editable install.
_PRESET_DIRS = (_PACKAGE_DIR / "sandbox_configs", _SOURCE_ROOT / "sandbox-configs")

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
        read_only_dirs: paths inside writable ones that kernels must not write: the
            kernelspec (the supervisor writes it), and host code inside the working directory
            (a project's ``.venv``): read-only inside.
        view: when not empty (Linux), the sandbox shows only these paths read-only, plus the
            writable ones: ``denyRead: ["/"]`` with these in ``allowRead``
            (`kernelbox.sandbox.view`). Empty: the host stays readable apart from the denies.
        write_paths: more directories writable inside (the caller's ``write_paths``).
    """

    working_dir: Path
    state_dir: Path
    settings_path: Path
    home_dirs: tuple[Path, ...]
    runtime_dirs: tuple[Path, ...] = ()
    read_only_dirs: tuple[Path, ...] = ()
    view: tuple[Path, ...] = ()
    write_paths: tuple[Path, ...] = ()


def effective_settings(settings: Mapping[str, Any], layout: SandboxLayout) -> dict[str, Any]:
    """Combine validated user settings with what the gateway needs.

    - ``~`` is expanded against every real home directory, and relative paths are made
      absolute against the working directory (srt would use its own ``HOME`` and cwd).
    - The working and state directories (and `SandboxLayout.write_paths`) are added to
      ``allowWrite`` and ``allowRead``.
    - With a `SandboxLayout.view`, ``"/"`` is added to ``denyRead`` and the view's paths to
      ``allowRead``: the sandbox shows only those (`kernelbox.sandbox.view`).
    - The runtime directories are added to ``allowRead``; those (and the settings file and
      `SandboxLayout.read_only_dirs`) that fall inside a writable path are added to ``denyWrite``.
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
    writable = [str(layout.working_dir), str(layout.state_dir), *map(str, layout.write_paths)]
    filesystem["allowWrite"] = _unique(filesystem["allowWrite"] + writable)
    readable = writable + [str(path) for path in (*layout.runtime_dirs, *layout.view)]
    filesystem["allowRead"] = _unique(filesystem["allowRead"] + readable)
    if layout.view:
        filesystem["denyRead"] = _unique(["/", *filesystem["denyRead"]])
    roots = [Path(_entry_path(entry)) for entry in filesystem["allowWrite"]]
    protected = [layout.settings_path, *layout.read_only_dirs, *layout.runtime_dirs]
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
