"""Kernel launcher: hardens the process, applies the kernel's limits, then starts ipykernel.

The ``python3`` kernelspec of every kernelbox gateway runs
``python -P -m kernelbox._child.kernel [--memory-limit BYTES] --connection-info-stdin
-f {connection_file}`` (see `kernelbox.gateway._state`). In order:

1. **Hardening, before anything secret exists in this process** (`kernelbox._child.kernel.hardening`):
   ``oom_score_adj`` 1000 (under a memory limit a kernel is killed, not the gateway or srt),
   then undumpable, then a Landlock domain of its own, so neither a sibling kernel nor this
   kernel's code can reach the other kernels' memory, environment or descriptors.
2. ``--memory-limit``: ``RLIMIT_DATA`` (Linux counts heap and private anonymous mappings in it
   since 4.7, see setrlimit(2)), so an allocation past it fails inside the kernel with
   `MemoryError`, which user code can handle, instead of the kernel being killed by the
   out-of-memory killer. It covers this process's private memory only; the gateway-wide
   ``memory_limit`` (a cgroup) covers the rest.
3. ``--connection-info-stdin``: the ports, HMAC key and CurveZMQ keys arrive as one JSON line on
   standard input (a pipe from `PrivateConnectionKernelManager`); no connection file is read
   or written, so no other process can find them on disk.
4. ``--tenant VIEW_FILE`` (gateways with ``isolate_kernels``): the kernel becomes a tenant of
   its own. With the kernel id the gateway adds to the connection info, it creates and enters
   ``<working_root>/<id>``, points ``HOME``, ``TMPDIR``, ``IPYTHONDIR``, ``MPLCONFIGDIR``,
   ``JUPYTER_RUNTIME_DIR`` and ``PIP_TARGET`` into ``<state_root>/<id>``, and enters a second
   Landlock layer (`kernelbox._child.kernel.hardening.restrict_filesystem`) that lets it and its
   children read only the view file's ``read_only`` paths and write only those two
   directories and ``read_write``. The view file lies in the kernelspec directory, which
   kernels cannot write. A restarted kernel (same id) gets the same directories back.
5. ``PIP_TARGET`` (where ``%pip install`` puts packages in the sandbox) goes on ``sys.path``
   here, and on ``PYTHONPATH`` for the kernel's own child processes, but never in the
   gateway's environment.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
from typing import Any, cast

from kernelbox._child.kernel.hardening import (
    LandlockUnavailableError,
    enter_own_landlock_domain,
    make_undumpable,
    raise_oom_score,
    restrict_filesystem,
)

# Jupyter's kernel ids are UUIDs; anything else must never become a path component.
_KERNEL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Per-kernel state subdirectories and the variables pointing at them.
_TENANT_STATE = {
    "home": ("HOME",),
    "tmp": ("TMPDIR",),
    "ipython": ("IPYTHONDIR",),
    "matplotlib": ("MPLCONFIGDIR",),
    "runtime": ("JUPYTER_RUNTIME_DIR",),
    "site-packages": ("PIP_TARGET",),
}


def _harden() -> None:
    if not sys.platform.startswith("linux"):
        return
    # First: once undumpable, /proc/self/* belongs to root and oom_score_adj is not writable.
    raise_oom_score()
    make_undumpable()
    try:
        enter_own_landlock_domain()
    except LandlockUnavailableError:
        # Reported in the gateway log; the README's threat model states what is then open.
        print(
            "kernelbox: Landlock is unavailable in this Linux kernel: during its ~50 ms start-up "
            "this kernel is reachable by sibling kernels of the same gateway",
            file=sys.stderr,
            flush=True,
        )


def _add_pip_target() -> None:
    target = os.environ.get("PIP_TARGET")
    if not target:
        return
    site_entries = [index for index, entry in enumerate(sys.path) if entry.endswith("site-packages")]
    # Before the installation's site-packages, so an upgraded package wins, as with PYTHONPATH.
    sys.path.insert(site_entries[0] if site_entries else len(sys.path), target)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = target if not previous else os.pathsep.join([target, previous])


def _enter_tenant(view_file: str, kernel_id: str | None) -> None:
    """Create and enter this kernel's own directories, then restrict it to them (Landlock)."""
    if kernel_id is None or not _KERNEL_ID.fullmatch(kernel_id):
        sys.exit(f"kernelbox kernel launcher: --tenant needs the kernel's id, got {kernel_id!r}")
    with open(view_file, encoding="utf-8") as file:
        view = json.load(file)
    working_dir = os.path.join(view["working_root"], kernel_id)
    state_dir = os.path.join(view["state_root"], kernel_id)
    os.makedirs(working_dir, mode=0o700, exist_ok=True)
    for name, variables in _TENANT_STATE.items():
        path = os.path.join(state_dir, name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        for variable in variables:
            os.environ[variable] = path
    os.chdir(working_dir)
    try:
        restrict_filesystem(
            read_only=view["read_only"],
            # /dev/shm (POSIX semaphores and shared memory of multiprocessing) is shared
            # between the gateway's kernels; the README's threat model says so.
            read_write=[working_dir, state_dir, "/dev/shm", *view["read_write"]],
            devices=["/dev"],
        )
    except LandlockUnavailableError as exc:
        sys.exit(f"kernelbox kernel launcher: this kernel cannot be isolated: {exc}")


def _read_connection_info() -> dict[str, Any]:
    line = sys.stdin.buffer.readline()
    if not line:
        sys.exit("kernelbox kernel launcher: no connection info on standard input")
    info: dict[str, Any] = json.loads(line)
    return info


def main(argv: list[str] | None = None) -> None:
    _harden()
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--memory-limit"]:
        limit = int(args[1])
        del args[:2]
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    tenant_view: str | None = None
    if args[:1] == ["--tenant"]:
        tenant_view = args[1]
        del args[:2]
    info: dict[str, Any] | None = None
    kernel_id: str | None = None
    if args[:1] == ["--connection-info-stdin"]:
        del args[:1]
        info = _read_connection_info()
        kernel_id = info.pop("kernel_id", None)
    if tenant_view is not None:
        _enter_tenant(tenant_view, kernel_id)
    # As ipykernel_launcher: the working directory must not shadow installed modules.
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    _add_pip_target()
    sys.argv = [sys.argv[0], *args]
    if info is None:
        _kernel_app_class().launch_instance()
        return
    _start_private_kernel(info)


def _kernel_app_class() -> Any:
    """ipykernel's ``IPKernelApp``, finishing its control thread's work before it exits.

    ipykernel 7 answers ``shutdown_request`` on its control thread and then, still there,
    flushes ``sys.stdout``/``sys.stderr`` through the iopub thread. The same request stops
    the main loop, ``start()`` returns, and the interpreter's exit runs the ``atexit``
    handlers, newest first: the iopub thread's ``stop`` before ``IPKernelApp.close`` (which
    would join the control thread). When that stop wins the race, the flush waits its whole
    ``flush_timeout`` (10 s) for a thread that is gone, and the kernel manager SIGTERMs the
    kernel after ``shutdown_wait_time / 2`` (2.5 s): measured here on 6 to 10 of 15 shutdowns,
    2.6 s each instead of 0.4 s, and none of the kernel code's ``atexit`` handlers ran. Here
    ``start()`` joins the control thread before it returns, while the iopub thread runs.
    """
    from ipykernel.kernelapp import IPKernelApp

    class OrderlyExitKernelApp(IPKernelApp):
        def start(self) -> None:
            super().start()
            control = self.control_thread
            if control is not None and control.is_alive():
                control.stop()
                control.join()

    return OrderlyExitKernelApp


def _start_private_kernel(info: dict[str, Any]) -> None:
    class PrivateConnectionKernelApp(_kernel_app_class()):  # type: ignore[misc]
        """ipykernel with its connection info given in memory; it writes no connection file."""

        def init_connection_file(self) -> None:
            self.load_connection_info(cast(Any, info))

        def write_connection_file(self, **kwargs: Any) -> None:
            pass

        def cleanup_connection_file(self) -> None:
            pass

    app = PrivateConnectionKernelApp.instance()
    app.initialize()
    app.start()

