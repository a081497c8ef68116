"""Kernel launcher: applies the kernel's limits, then starts ipykernel.

The ``python3`` kernelspec of every kernelbox gateway runs
``python -P -m kernelbox._child.kernel_launcher [--memory-limit BYTES] -f {connection_file}``
(see `kernelbox.gateway._state`).

The limit is ``RLIMIT_DATA`` (Linux counts heap and private anonymous mappings in it since
4.7, see setrlimit(2)), so an allocation past it fails inside the kernel with `MemoryError`,
which user code can see and handle, instead of the whole kernel being killed later by the
out-of-memory killer.
"""

from __future__ import annotations

import resource
import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--memory-limit"]:
        limit = int(args[1])
        del args[:2]
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    # As ipykernel_launcher: the working directory must not shadow installed modules.
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    sys.argv = [sys.argv[0], *args]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
