"""Sandbox settings: presets, loading, validation and the effective settings srt runs with.

Pure code apart from reading files. The user's settings (a preset name, a file or a mapping)
are validated against the keys srt 0.0.83 accepts (`SETTINGS_SCHEMA`, a JSON Schema checked with
`jsonschema`), then combined with what the gateway needs
(`effective_settings`). Facts about srt that this module relies on are listed in
`kernelbox.sandbox` (the package docstring).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._errors import SandboxConfigError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

__all__ = [
    "DEFAULT_PRESET",
    "SETTINGS_SCHEMA",
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

# The keys srt 0.0.83 accepts (dist/sandbox/sandbox-config.js), as a JSON Schema (draft 2020-12)
# checked with `jsonschema`. Each kind of value is one entry of ``$defs``, whose ``description``
# says what a value must be in error messages. Nested objects of kind "object" (credentials,
# tlsTerminate, ...) are checked by srt itself.
_PATH_ENTRY = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "properties": {"path": {"type": "string", "minLength": 1}, "literal": {"const": True}},
            "required": ["path", "literal"],
            "additionalProperties": False,
        },
    ]
}
_DEFS: dict[str, dict[str, Any]] = {
    "bool": {"type": "boolean", "description": "true or false"},
    "int": {"type": "integer", "description": "an integer"},
    "str": {"type": "string", "description": "a string"},
    "strings": {"type": "array", "items": {"type": "string"}, "description": "a list of strings"},
    # Host name patterns: srt takes 'pypi.org' or '*.example.com', never a URL.
    "domains": {"type": "array", "items": {"type": "string", "pattern": "^[^/]*$"}, "description": "a list of strings"},
    "paths": {
        "type": "array",
        "items": _PATH_ENTRY,
        "description": 'a list of strings (paths), or of {"path": "...", "literal": true} objects',
    },
    "string_map": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "an object mapping strings to strings",
    },
    "object": {"type": "object", "description": "an object"},
}


def _ref(kind: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{kind}"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False, "description": "an object"}


_NETWORK = _object({
    "allowedDomains": _ref("domains"),
    "deniedDomains": _ref("domains"),
    "deniedDomainReasons": _ref("string_map"),
    "strictAllowlist": _ref("bool"),
    "deniedResolvedAddresses": _ref("strings"),
    "allowUnixSockets": _ref("strings"),
    "allowAllUnixSockets": _ref("bool"),
    "allowLocalBinding": _ref("bool"),
    "allowMachLookup": _ref("strings"),
    "httpProxyPort": _ref("int"),
    "socksProxyPort": _ref("int"),
    "mitmProxy": _ref("object"),
    "allowPlaintextHeaderSet": _ref("bool"),
    "stripResponseHeaders": _ref("strings"),
    "refuseOpaqueTunnels": _ref("bool"),
    "requireHostMatch": _ref("bool"),
    "ambiguousRequestTarget": _ref("str"),
    "tlsTerminate": _ref("object"),
    "parentProxy": _ref("object"),
})
_FILESYSTEM = _object({
    "disabled": _ref("bool"),
    "denyRead": _ref("paths"),
    "allowRead": _ref("paths"),
    "allowWrite": _ref("paths"),
    "denyWrite": _ref("paths"),
    "allowGitConfig": _ref("bool"),
})
SETTINGS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": _DEFS,
    **_object({
        "network": _NETWORK,
        "filesystem": _FILESYSTEM,
        "credentials": _ref("object"),
        "ignoreViolations": _ref("object"),
        "enableWeakerNestedSandbox": _ref("bool"),
        "allowNestedUserNamespaces": _ref("bool"),
        "enableWeakerNetworkIsolation": _ref("bool"),
        "allowAppleEvents": _ref("bool"),
        "ripgrep": _ref("object"),
        "mandatoryDenySearchDepth": _ref("int"),
        "allowPty": _ref("bool"),
        "seccomp": _ref("object"),
        "bwrapPath": _ref("str"),
        "socatPath": _ref("str"),
        "javaAgentJarPath": _ref("str"),
        "windows": _ref("object"),
        "git": _ref("object"),
    }),
}
@functools.cache
def _validator() -> Draft202012Validator:
    """The schema's validator, made on first use.

    Importing ``jsonschema`` costs about 1.2 s of CPU here (measured): with the optional format
    checkers Jupyter's own dependencies install, ``rfc3987_syntax`` builds a grammar at import.
    The shipped presets are checked against the schema by the test suite, not at run time, so
    a gateway started with a preset (the common case) never pays it; a settings file or mapping
    of the caller's is validated here.
    """
    from jsonschema import Draft202012Validator

    return Draft202012Validator(SETTINGS_SCHEMA)
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
        f"(or pass the path of an srt settings JSON file)",
        source=name,
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
            file (or preset) and the key, and so do its ``source`` (the file's path) and
            ``key`` (dotted) attributes.
    """
    if config is None:
        config = DEFAULT_PRESET
    if isinstance(config, Mapping):
        return validate_settings(_json_copy(config), source="sandbox_config mapping")
    if _is_preset_name(config):
        path = preset_path(str(config))
        source = f"sandbox preset {config!r} ({path})"
        # Package data, checked against the schema by the test suite (see `_validator`).
        settings = _read_json(path, source)
        _refuse_weakening(settings, source, os.fspath(path))
        return cast("dict[str, Any]", settings)
    else:
        path = Path(os.path.expanduser(os.fspath(config))).absolute()
        source = f"sandbox settings file {path}"
    return validate_settings(_read_json(path, source), source=source, path=path)


def _json_copy(settings: Mapping[str, Any]) -> Any:
    try:
        return json.loads(json.dumps(settings))
    except (TypeError, ValueError) as exc:
        raise SandboxConfigError(
            f"sandbox_config mapping: not JSON-serialisable ({exc}); use str, number, bool, "
            f"list and dict values only",
            source="sandbox_config mapping",
        ) from exc


def _read_json(path: Path, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SandboxConfigError(f"{source}: cannot be read ({reason})", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise SandboxConfigError(f"{source}: is not UTF-8 text ({exc.reason})", source=str(path)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SandboxConfigError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=str(path)
        ) from exc


def validate_settings(settings: Any, *, source: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Check srt settings against `SETTINGS_SCHEMA`; reject what kernelbox must refuse.

    Deeper checks (domain pattern syntax, the nested ``credentials`` and ``tlsTerminate``
    objects) are srt's own, at launch.

    Args:
        settings: parsed JSON.
        source: how to name the settings in messages, e.g. ``"sandbox settings file /x.json"``.
        path: the settings file, if they came from one (the error's ``source`` attribute).

    Returns:
        `settings`, now known to be a dict of the right shape.

    Raises:
        SandboxConfigError: the first problem found (in the file's order), naming `source`
            and the key; its ``key`` attribute is the key, dotted.
    """
    origin = os.fspath(path) if path is not None else source
    errors = sorted(_validator().iter_errors(settings), key=lambda error: _document_order(settings, error))
    if errors:
        message, key = _describe(errors[0], settings)
        raise SandboxConfigError(f"{source}: {message}", source=origin, key=key)
    _refuse_weakening(settings, source, origin)
    return cast("dict[str, Any]", settings)


def _document_order(settings: Any, error: ValidationError) -> list[int]:
    """Where `error` is in `settings`, as indices in the file's order (the first problem first)."""
    order: list[int] = []
    node = settings
    for part in error.absolute_path:
        order.append(list(node).index(part) if isinstance(node, dict) else int(part))
        node = node[part]
    if error.validator == "additionalProperties" and isinstance(node, dict):
        order.append(min(index for index, key in enumerate(node) if key in _unknown_keys(error)))
    return order


def _unknown_keys(error: ValidationError) -> list[str]:
    """The keys an ``additionalProperties`` error is about, in the file's order."""
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [key for key in instance if key not in known]


def _describe(error: ValidationError, settings: Any) -> tuple[str, str | None]:
    """The message for a schema error in `settings`, and the dotted key it is about."""
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = _unknown_keys(error)[0]
        key = ".".join([*map(str, parts), unknown])
        return f"unknown key {key!r}{_suggestion(unknown, known)}", key
    if not parts:
        return "the settings must be a JSON object at top level", None
    # The setting is the longest start of the path that the schema names; the rest of the
    # path is list indices or a map's own keys.
    schema: dict[str, Any] = SETTINGS_SCHEMA
    value = settings
    names: list[str] = []
    for part in parts:
        properties = _resolve(schema).get("properties", {})
        if not isinstance(part, str) or part not in properties:
            break
        schema, value = properties[part], value[part]
        names.append(part)
    name = ".".join(names)
    if error.validator == "pattern":
        return (
            f"{name} entry {error.instance!r} must be a host name pattern such as 'pypi.org' or "
            f"'*.example.com' (no scheme or path)",
            name,
        )
    return f"{name} must be {_resolve(schema)['description']} (got {_json_type(value)})", name


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or the ``$defs`` entry it refers to."""
    ref = schema.get("$ref")
    return _DEFS[ref.rpartition("/")[2]] if isinstance(ref, str) else schema


def _suggestion(key: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; known keys here: {', '.join(sorted(known))}"


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


def _refuse_weakening(settings: dict[str, Any], source: str, origin: str) -> None:
    network = settings.get("network", {})
    if network.get("allowAllUnixSockets") is True:
        raise SandboxConfigError(
            f"{source}: network.allowAllUnixSockets=true is refused: on Linux it turns off "
            f"srt's seccomp filter, which is part of what keeps kernel code in the sandbox "
            f"(remove the key; the gateway needs no Unix sockets)",
            source=origin,
            key="network.allowAllUnixSockets",
        )
    if settings.get("filesystem", {}).get("disabled") is True:
        raise SandboxConfigError(
            f"{source}: filesystem.disabled=true is refused: it removes every read and write "
            f"rule (run with sandbox=False instead if that is what you want)",
            source=origin,
            key="filesystem.disabled",
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
        extra_roots: the directories the caller adds (``read_paths`` and ``write_paths``):
            relative ``denyRead`` entries such as ``**/.env`` apply under each of them too.
    """

    working_dir: Path
    state_dir: Path
    settings_path: Path
    home_dirs: tuple[Path, ...]
    runtime_dirs: tuple[Path, ...] = ()
    read_only_dirs: tuple[Path, ...] = ()
    view: tuple[Path, ...] = ()
    write_paths: tuple[Path, ...] = ()
    extra_roots: tuple[Path, ...] = ()


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
    # A relative deny (``**/.env``) protects every directory the caller adds as well, not only
    # the working directory.
    for root in layout.extra_roots:
        relative = [entry for entry in settings.get("filesystem", {}).get("denyRead", [])
                    if not posixpath.isabs(_entry_path(entry)) and not _entry_path(entry).startswith("~")]
        filesystem["denyRead"] += _absolute_entries(relative, layout.home_dirs, root)
    writable = [str(layout.working_dir), str(layout.state_dir), *map(str, layout.write_paths)]
    filesystem["allowWrite"] = _unique(filesystem["allowWrite"] + writable)
    readable = writable + [str(path) for path in (*layout.runtime_dirs, *layout.view)]
    filesystem["allowRead"] = _unique(filesystem["allowRead"] + readable)
    if layout.view:
        filesystem["denyRead"] = _unique(["/", *filesystem["denyRead"]])
        # With the view, srt binds each allowRead path back read-only after the writable ones:
        # one that contains a writable directory (an editable checkout on sys.path holding the
        # working directory) would cover it read-only. The writable directory is shown anyway.
        write_roots = [Path(_entry_path(entry)) for entry in filesystem["allowWrite"]]
        filesystem["allowRead"] = [
            entry for entry in filesystem["allowRead"]
            if not any(root != Path(_entry_path(entry)) and _is_within(root, Path(_entry_path(entry)))
                       for root in write_roots)
        ]
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
