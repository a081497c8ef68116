"""Memory and process-count limits for a gateway's whole process tree, through cgroups.

``RLIMIT_DATA`` (``kernel_memory_limit``) counts one process's private memory only: shared
mappings, ``/dev/shm`` (tmpfs pages belong to no process) and child processes are outside it,
and ``RLIMIT_NPROC`` counts every process of the uid. A cgroup counts all of it for the whole
tree: srt, bubblewrap, the gateway, every kernel and their children (measured on cgroup v1 with
``use_hierarchy=1``: a 600 MiB shared mapping and 600 MiB in ``/dev/shm`` were both stopped by
the memory controller's OOM killer; ``pids.max=64`` refused the 37th fork with EAGAIN).

One group per gateway and controller, created under this process's own group (so the host's
limits on us still apply), named ``kernelbox-<pid>-<random>``. The gateway is spawned through
a tiny ``sh`` wrapper that moves itself into the groups and then execs the real command, so
nothing runs outside them even for a moment. Writing ``cgroup.procs`` needs root (the groups
are root's), which is why the wrapper comes before the privilege drop. At stop, what is left in
the groups is killed and the groups are removed (a leftover process keeps a group busy).

cgroup v2 is used where this process's group delegates the ``memory`` and ``pids``
controllers (``cgroup.subtree_control``); not verified on this project's CI machine, which has
cgroup v1 (its v2 hierarchy has only ``hugetlb``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CgroupLimits",
    "GatewayCgroups",
    "cgroup_support",
    "is_running",
    "nproc_limited",
    "owner_pid",
    "protect_from_oom_killer",
]

logger = logging.getLogger("kernelbox.gateway")

_CGROUP_ROOT = Path("/sys/fs/cgroup")
# sh -c WRAPPER sh GROUP... -- ARGV...: join every group (or fail), then become ARGV.
_WRAPPER = (
    'for group in "$@"; do [ "$group" = -- ] && break; '
    'echo $$ > "$group/cgroup.procs" || exit 125; done; '
    'while [ "$1" != -- ]; do shift; done; shift; exec "$@"'
)
_KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class CgroupLimits:
    """Limits for one gateway's process tree; None means "no limit".

    Attributes:
        memory_bytes: memory of the whole tree (``memory.limit_in_bytes`` / ``memory.max``),
            including shared memory and ``/dev/shm``.
        pids: tasks (processes and threads) of the whole tree (``pids.max``).
    """

    memory_bytes: int | None = None
    pids: int | None = None

    @property
    def any(self) -> bool:
        return self.memory_bytes is not None or self.pids is not None


@dataclass(frozen=True)
class _Hierarchy:
    version: int
    mount: Path
    group: str  # this process's group, relative to the mount


def _own_groups() -> dict[str, str]:
    """Controller (or "" for cgroup v2) -> this process's group path, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="ascii") as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = path
    return groups


def _hierarchy(controller: str) -> _Hierarchy | str:
    """Where `controller` can be used by this (root) process, or why not."""
    try:
        own = _own_groups()
    except OSError as exc:
        return f"cannot read /proc/self/cgroup ({exc.strerror})"
    v1_mount = _CGROUP_ROOT / controller
    if controller in own and (v1_mount / "cgroup.procs").exists():
        return _Hierarchy(1, v1_mount, own[controller].lstrip("/"))
    for mount in (_CGROUP_ROOT, _CGROUP_ROOT / "unified"):
        if "" in own and (mount / "cgroup.controllers").exists():
            group_dir = mount / own[""].lstrip("/")
            try:
                delegated = (group_dir / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if controller in delegated:
                return _Hierarchy(2, mount, own[""].lstrip("/"))
            return (
                f"the cgroup v2 group {group_dir} does not delegate the {controller} controller "
                f"(cgroup.subtree_control: {' '.join(delegated) or 'empty'})"
            )
    return f"no usable {controller} cgroup controller (neither v1 at {v1_mount} nor delegated v2)"


def cgroup_support() -> dict[str, str | None]:
    """For ``memory`` and ``pids``: None when kernelbox can enforce limits with it, else why not.

    Needs root (cgroup directories are root's), Linux, and a mounted controller.
    """
    if not os.path.isdir(_CGROUP_ROOT):
        return {name: "no /sys/fs/cgroup (not Linux, or cgroups not mounted)" for name in ("memory", "pids")}
    result: dict[str, str | None] = {}
    for controller in ("memory", "pids"):
        found = _hierarchy(controller)
        if isinstance(found, str):
            result[controller] = found
        elif os.geteuid() != 0:
            result[controller] = "creating cgroups needs root (kernelbox runs as a normal user)"
        else:
            result[controller] = None
    return result


class GatewayCgroups:
    """The cgroups of one gateway: created at start, removed at stop.

    Raises (from `create`):
        OSError: a limit was asked for and cannot be enforced; the message says why and
            what would make it possible.
    """

    def __init__(self, limits: CgroupLimits) -> None:
        self.limits = limits
        self.paths: list[Path] = []

    def create(self) -> None:
        """Create the groups and write the limits."""
        name = f"kernelbox-{os.getpid()}-{secrets.token_hex(4)}"
        wanted = [
            ("memory", self.limits.memory_bytes),
            ("pids", self.limits.pids),
        ]
        try:
            for controller, value in wanted:
                if value is None:
                    continue
                self.paths.append(self._create_one(controller, value, name))
        except BaseException:
            self.remove()
            raise

    def _create_one(self, controller: str, value: int, name: str) -> Path:
        found = _hierarchy(controller)
        if not isinstance(found, str) and os.geteuid() == 0:
            _sweep_orphaned_groups(found.mount / found.group)
        option = "memory_limit" if controller == "memory" else "pids_limit"
        if isinstance(found, str):
            raise OSError(f"{option} cannot be enforced: {found}")
        if os.geteuid() != 0:
            raise OSError(
                f"{option} cannot be enforced: creating a cgroup needs root (run kernelbox as "
                f"root, or leave {option} unset and start kernelbox itself in a limited unit, "
                f"e.g. systemd-run --user --scope -p MemoryMax=... -p TasksMax=...)"
            )
        path = found.mount / found.group / name
        path.mkdir()
        try:
            if controller == "pids":
                (path / "pids.max").write_text(str(value))
            elif found.version == 1:
                (path / "memory.limit_in_bytes").write_text(str(value))
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():  # with swap accounting, swap counts too
                    swap.write_text(str(value))
                _limit_socket_buffers_v1(path, value)
            else:
                (path / "memory.max").write_text(str(value))
                (path / "memory.swap.max").write_text("0")
        except BaseException:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return path

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run from inside the groups (unchanged when there are none)."""
        if not self.paths:
            return argv
        return ["/bin/sh", "-c", _WRAPPER, "sh", *map(str, self.paths), "--", *argv]

    def remove(self) -> None:
        """Kill what is left in the groups, then remove them (blocking: a worker thread).

        A process left in a group (e.g. a socat bridge orphaned when the OOM killer took srt)
        keeps it busy, so every pid still listed is SIGKILLed first, with a bounded wait.
        """
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        for path in self.paths:
            while True:
                pids = _pids_in(path)
                if not pids or time.monotonic() > deadline:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(_POLL_SECONDS)  # polling the kernel's list; there is no event for it
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("Could not remove the gateway's cgroup %s: %s", path, exc.strerror)
        self.paths = []


def owner_pid(name: str) -> int | None:
    """The supervisor pid in a ``kernelbox-<pid>-<random>`` name (cgroups, state directories)."""
    parts = name.split("-")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def _sweep_orphaned_groups(parent: Path) -> None:
    """Remove the groups of supervisors that died without removing them (e.g. SIGKILLed).

    A group ``kernelbox-<pid>-*`` whose ``<pid>`` is no longer running is a leftover: what is
    still in it is killed and it is removed, as at a stop. A pid reused by another process
    keeps its groups until that one exits: harmless, and never a live supervisor's loss.
    """
    try:
        candidates = [path for path in parent.glob("kernelbox-*-*") if path.is_dir()]
    except OSError:
        return
    for path in candidates:
        pid = owner_pid(path.name)
        if pid is None or pid == os.getpid() or is_running(pid):
            continue
        leftover = GatewayCgroups(CgroupLimits())
        leftover.paths = [path]
        leftover.remove()  # logs why, if it cannot
        if not path.exists():
            logger.info("Removed the cgroup %s left by a supervisor that no longer runs [pid %d]", path, pid)


def is_running(pid: int) -> bool:
    """Whether a process with this pid exists (any user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def nproc_limited(argv: list[str], limit: int, uid: int | None) -> list[str]:
    """`argv` run under ``RLIMIT_NPROC``: at most `limit` more tasks than `uid` runs now.

    The fallback for a sandboxed gateway's default process bound where no pids cgroup can be
    made. ``RLIMIT_NPROC`` counts every task (thread) of the real user id, and a user namespace
    keeps the limit its creator had for the whole user (user_namespaces(7), ucounts since
    Linux 5.14); so the limit is the user's current task count plus `limit`. Uses
    ``prlimit`` (util-linux); blocking (reads ``/proc``): call it off the event loop.

    Args:
        argv: the command.
        limit: tasks the command's tree may add, e.g. 4096.
        uid: the real user id the command runs as; None for this process's.
    """
    import psutil

    owner = os.getuid() if uid is None else uid
    running = 0
    for process in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = process.info["uids"], process.info["num_threads"]
        if uids is not None and uids.real == owner:
            running += threads or 1
    total = running + limit
    return ["prlimit", f"--nproc={total}:{total}", "--", *argv]


def _limit_socket_buffers_v1(path: Path, value: int) -> None:
    """Bound TCP socket buffers too: cgroup v1 does not charge them to ``memory.limit_in_bytes``
    but to a counter of their own, limited here to the same `value` (so the tree may hold up to
    twice `value` in all).

    Measured on this project's CI machine (cgroup v1, Linux 6.x): under a 512 MiB limit a kernel
    parked 2.2 GiB in loopback sockets nobody read; with ``memory.kmem.tcp.limit_in_bytes`` set
    to the same value, sends stop at the limit (64 MiB: 85 MiB parked). The file is deprecated
    upstream (the kernel logs so once) and absent on some kernels; there socket buffers stay
    bounded only by the host's ``tcp_mem``, which is logged. cgroup v2 charges sockets to
    ``memory.max`` itself.
    """
    tcp = path / "memory.kmem.tcp.limit_in_bytes"
    try:
        tcp.write_text(str(value))
    except OSError as exc:
        logger.warning(
            "memory_limit does not cover TCP socket buffers on this host (cgroup v1 without a "
            "usable %s: %s); they stay bounded by the host's net.ipv4.tcp_mem", tcp.name, exc.strerror or exc,
        )


def protect_from_oom_killer(pid: int) -> None:
    """Set ``oom_score_adj`` -1000 on srt's process (root only; call once the gateway is up).

    When the OOM killer took srt's ``node`` (the largest process when ``/dev/shm`` fills up:
    tmpfs pages belong to no process), its host-side socat bridge was orphaned (measured).
    Kernels raise their own score to 1000 (`kernelbox._child.kernel.launcher`), so they go
    first. Called only after the sandbox is up: the minimum a process may lower its score to
    is inherited by children forked later, and kernels must not inherit -1000.
    """
    if os.geteuid() != 0:
        return
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w", encoding="ascii") as file:
            file.write("-1000")
    except OSError as exc:
        # E.g. a container whose root lacks CAP_SYS_RESOURCE. Kernels still go first (1000),
        # so this is not a fault of the start: said at INFO, not as a warning on every start.
        logger.info(
            "Could not protect srt [pid %d] from the OOM killer (oom_score_adj -1000 needs "
            "CAP_SYS_RESOURCE): %s", pid, exc.strerror,
        )


def _pids_in(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []
