"""The per-gateway state directory: Jupyter's runtime files, and kernelspecs kernelbox writes.

One private directory per gateway (``kernelbox-gateway-*`` under the system's temporary
directory), removed when the gateway stops.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import SandboxUnavailableError

if TYPE_CHECKING:
    from .config import GatewayConfig

from ._cgroups import is_running, owner_pid

logger = logging.getLogger("kernelbox.gateway")

__all__ = [
    "KERNEL_OPTIONS",
    "TENANT_KERNEL_INTERFACES",
    "TENANT_STATE_DIR_NAME",
    "TENANT_VIEW_FILE_NAME",
    "TenantView",
    "create_state_dir",
    "remove_state_dir",
    "sweep_orphaned_state_dirs",
    "tenant_view",
    "write_kernelspec",
]

# Where an isolated kernel's HOME, temporary directory and %pip target go: one directory per
# kernel id under the state directory's ``kernels``.
TENANT_STATE_DIR_NAME = "kernels"
# Written beside the kernelspec (read-only inside the sandbox), read by the kernel launcher.
TENANT_VIEW_FILE_NAME = "tenant-view.json"
# The kernel interfaces an isolated kernel reads besides the view: its own /proc (the
# sandbox's PID namespace) and /sys (CPU topology for numpy and OpenBLAS; read-only).
TENANT_KERNEL_INTERFACES = (Path("/proc"), Path("/sys"))


@dataclass(frozen=True)
class TenantView:
    """What every kernel of an ``isolate_kernels`` gateway is given (see the kernel launcher).

    Attributes:
        working_root: each kernel works in ``working_root/<kernel id>``.
        state_root: each kernel's HOME, TMPDIR, IPYTHONDIR, MPLCONFIGDIR and PIP_TARGET are in
            ``state_root/<kernel id>``.
        read_only: paths every kernel may read (and execute from).
        read_write: directories every kernel may also write (shared between them).
    """

    working_root: Path
    state_root: Path
    read_only: tuple[Path, ...]
    read_write: tuple[Path, ...]

    def to_json(self) -> str:
        return json.dumps({
            "working_root": str(self.working_root),
            "state_root": str(self.state_root),
            "read_only": [str(path) for path in self.read_only],
            "read_write": [str(path) for path in self.read_write],
        }, indent=1)


STATE_DIR_PREFIX = "kernelbox-gateway-"


def create_state_dir() -> Path:
    """Create a new private state directory (mode 0700) with its ``runtime`` subdirectory.

    Named ``kernelbox-gateway-<supervisor pid>-<random>`` in the system's temporary directory.
    State directories of this user whose supervisor no longer runs (it was SIGKILLed before it
    could remove them) are removed first. Blocking: call it in a worker thread.
    """
    sweep_orphaned_state_dirs()
    state_dir = Path(tempfile.mkdtemp(prefix=f"{STATE_DIR_PREFIX}{os.getpid()}-"))
    (state_dir / "runtime").mkdir()
    return state_dir


def sweep_orphaned_state_dirs(parent: Path | None = None) -> list[Path]:
    """Remove this user's state directories whose supervisor no longer runs; return them."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    removed = []
    for path in parent.glob(f"{STATE_DIR_PREFIX}*-*"):
        pid = owner_pid(path.name)
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid is not None and pid != os.getpid() and not is_running(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.info("Removed the state directory %s left by a supervisor that no longer runs [pid %d]", path, pid)
    return removed


def remove_state_dir(state_dir: Path) -> None:
    """Remove the state directory and everything in it (blocking: run it in a worker thread)."""
    shutil.rmtree(state_dir, ignore_errors=True)


# IPython and ipykernel settings of every kernelbox kernel (traitlets command-line options):
# - history in memory only: the code of every cell otherwise goes into a SQLite file in the
#   kernel's home (``~/.ipython/profile_default/history.sqlite``), where the next kernel, or any
#   kernel sharing that home, can read it; and storing it cost ~1 ms of a ~5 ms ``1+1`` (a
#   lock shared with the history-saving thread). ``In``, ``_i``, ``%history`` of the session
#   keep working.
# (ipykernel's 0.5 ms pause before each ``execute_reply`` is kept: without it, output a cell
# writes straight to file descriptor 1 or 2 sometimes reached iopub only after ``status: idle``
# and was missing from the result: tests/test_faults.py, the non-UTF-8 output test.)
KERNEL_OPTIONS = ("--HistoryManager.enabled=False",)


def write_kernelspec(state_dir: Path, memory_limit: int | None, tenants: TenantView | None = None) -> Path:
    """Write the ``python3`` kernelspec this gateway's kernels use; return its Jupyter data dir.

    Directories on ``JUPYTER_PATH`` come first in kernelspec lookup, so it replaces
    ipykernel's built-in ``python3`` for this gateway only. Kernels start through
    `kernelbox._child.kernel.launcher` with ``-P``: a ``json.py`` or ``logging.py`` in the
    working directory cannot break the kernel's start-up (user code can still import modules
    from there, as in a notebook; ipykernel puts the working directory on ``sys.path``).
    They read their connection info from standard input (``--connection-info-stdin``), and
    the spec declares CurveZMQ support, which ``transport_encryption=required`` demands
    (jupyter_client 8.10 ``KernelManager.pre_start_kernel``). In a sandbox the directory is
    read-only for kernels (`kernelbox.sandbox.srt.KERNELSPEC_DIR_NAME`).

    Args:
        state_dir: the gateway's state directory.
        memory_limit: bytes each kernel may allocate (``RLIMIT_DATA``), or None.
        tenants: make each kernel a tenant of its own (``--tenant``, see
            `kernelbox._child.kernel.launcher`), or None.
    """
    data_dir = state_dir / "jupyter"
    spec_dir = data_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-P", "-m", "kernelbox._child.kernel"]
    if memory_limit is not None:
        argv += ["--memory-limit", str(memory_limit)]
    if tenants is not None:
        view_file = spec_dir / TENANT_VIEW_FILE_NAME
        view_file.write_text(tenants.to_json(), encoding="utf-8")
        argv += ["--tenant", str(view_file)]
    spec = {
        "argv": [*argv, "--connection-info-stdin", "-f", "{connection_file}", *KERNEL_OPTIONS],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True, "supported_encryption": ["curve"]},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return data_dir


def tenant_view(config: GatewayConfig, state_dir: Path) -> TenantView | None:
    """What each kernel of an ``isolate_kernels`` gateway is given (None otherwise).

    Raises:
        SandboxUnavailableError: not Linux, or its Landlock ABI is below `MIN_FILESYSTEM_ABI`.
    """
    if not config.isolate_kernels:
        return None
    from .._child.kernel.hardening import MIN_FILESYSTEM_ABI, landlock_abi
    from ..sandbox.view import view_read_paths

    if sys.platform.startswith("linux") and landlock_abi() < MIN_FILESYSTEM_ABI:
        raise SandboxUnavailableError(
            f"isolate_kernels needs Landlock ABI {MIN_FILESYSTEM_ABI} (Linux 5.19 or later, "
            f"with Landlock enabled: lsm= on the kernel command line), and this kernel has "
            f"ABI {landlock_abi()}; run without isolate_kernels, or one gateway per tenant"
        )
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError("isolate_kernels needs Linux (Landlock)")
    return TenantView(
        working_root=config.resolved_working_dir,
        state_root=state_dir / TENANT_STATE_DIR_NAME,
        read_only=(*view_read_paths(config.read_paths), *TENANT_KERNEL_INTERFACES),
        read_write=config.write_paths,
    )
