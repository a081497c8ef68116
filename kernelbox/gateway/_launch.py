"""How the gateway process is launched: directly, or inside the OS sandbox.

Launching is kept apart from supervising (as jupyter_client keeps provisioners apart from the
kernel manager): the supervisor asks a `Launcher` for the argv and environment of each
(re)start and knows nothing about sandboxes. A new sandbox backend is a new `Launcher`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DirectLauncher", "Launch", "Launcher", "SrtLauncher"]


@dataclass(frozen=True)
class Launch:
    """What to spawn: the full argv and its environment (the working directory is the caller's).

    Attributes:
        protect_from_oom: once up, the spawned process (srt) should get ``oom_score_adj``
            -1000 (see `kernelbox.gateway._cgroups.protect_from_oom_killer`).
        uid: the user the command runs as, when it is not this process's (the sandbox user).
    """

    argv: list[str]
    env: dict[str, str]
    protect_from_oom: bool = False
    uid: int | None = None


class Launcher(Protocol):
    """Turns the gateway command into what to spawn; called before every (re)start."""

    sandboxed: bool

    def prepare(
        self, command: Sequence[str], *, env: Mapping[str, str], working_dir: Path, state_dir: Path
    ) -> Launch:
        """Return the launch for `command`.

        Raises:
            SandboxUnavailableError, SandboxConfigError: a sandbox was asked for and cannot run
                as configured (never a silent fallback to an unsandboxed launch).
            OSError: the working or state directory is unusable.
        """
        ...


class DirectLauncher:
    """Runs the command as it is, as a child of the supervisor."""

    sandboxed = False

    def prepare(
        self, command: Sequence[str], *, env: Mapping[str, str], working_dir: Path, state_dir: Path
    ) -> Launch:
        if not working_dir.is_dir():
            raise FileNotFoundError(f"the kernels' working directory {working_dir} does not exist")
        return Launch(argv=list(command), env=dict(env))


class SrtLauncher:
    """Runs the command inside sandbox-runtime (`srt`); see `kernelbox.sandbox`.

    The settings are validated and written anew for every launch, so a restarted gateway never
    runs under a settings file that something else changed in the meantime.
    """

    sandboxed = True

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | None,
        srt_path: str | os.PathLike[str] | None,
        sandbox_user: str | None = None,
        read_paths: Sequence[Path] = (),
        write_paths: Sequence[Path] = (),
        shm_size: int | None = None,
    ) -> None:
        self.config = config
        self.srt_path = srt_path
        self.sandbox_user = sandbox_user
        self.read_paths = tuple(read_paths)
        self.write_paths = tuple(write_paths)
        self.shm_size = shm_size

    def prepare(
        self, command: Sequence[str], *, env: Mapping[str, str], working_dir: Path, state_dir: Path
    ) -> Launch:
        # The sandbox package is only needed when asked for.
        from ..sandbox import prepare_sandbox
        from ..sandbox.user import resolve_sandbox_user

        if not working_dir.is_dir():
            raise FileNotFoundError(f"the kernels' working directory {working_dir} does not exist")
        # As root: a dedicated unprivileged user, never root itself (kernelbox.sandbox.user).
        user = resolve_sandbox_user(self.sandbox_user)
        launch = prepare_sandbox(
            command,
            config=self.config,
            srt_path=self.srt_path,
            working_dir=working_dir,
            state_dir=state_dir,
            env=env,
            user=user,
            read_paths=self.read_paths,
            write_paths=self.write_paths,
            shm_size=self.shm_size,
        )
        return Launch(
            argv=launch.argv, env=launch.env, protect_from_oom=user is not None,
            uid=user.uid if user is not None else None,
        )
