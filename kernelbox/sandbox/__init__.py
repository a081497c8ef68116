"""The OS sandbox: sandbox-runtime (`srt`) settings, prerequisites and the launch command.

Modules: `settings` (presets, validation, effective settings; pure), `prerequisites` (the one
list of checks, also printed by ``kernelbox doctor``), `srt` (the launch) and `_locate`
(finding srt).

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

from ._locate import SRT_ENV_VAR, SRT_PACKAGE, SRT_VERSION, find_srt, srt_package_root
from .prerequisites import (
    Problem,
    check_sandbox_prerequisites,
    missing_prerequisites,
    seccomp_helper,
    user_namespace_failure,
)
from .settings import (
    DEFAULT_PRESET,
    SandboxLayout,
    effective_settings,
    load_sandbox_settings,
    preset_names,
    preset_path,
    validate_settings,
)
from .srt import SandboxLaunch, allow_local_binding, prepare_sandbox, sandbox_env

__all__ = [
    "DEFAULT_PRESET",
    "SRT_ENV_VAR",
    "SRT_PACKAGE",
    "SRT_VERSION",
    "Problem",
    "SandboxLaunch",
    "SandboxLayout",
    "allow_local_binding",
    "check_sandbox_prerequisites",
    "effective_settings",
    "find_srt",
    "load_sandbox_settings",
    "missing_prerequisites",
    "prepare_sandbox",
    "preset_names",
    "preset_path",
    "sandbox_env",
    "seccomp_helper",
    "srt_package_root",
    "user_namespace_failure",
    "validate_settings",
]
