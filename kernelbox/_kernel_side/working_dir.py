"""kernelbox's working-directory keeper: runs INSIDE the kernel, never in the kernelbox process.

`KernelClient(working_dir=...)` sends this file's source with a call of `install` after the
kernel starts (and after it is restarted). The kernel then starts in that directory, file
transfer resolves paths against it, and after every cell that left it (``os.chdir``, ``%cd``)
the directory is restored and a one-line notice printed as part of that cell's output.
Standard library and IPython only. Kernel code can undo all of this: it is a convenience that
keeps agents' relative paths stable, not a security boundary.
"""

import os
import sys

MARK = "__kernelbox_working_dir__"


def install(path, notice):
    os.chdir(path)
    path = os.getcwd()  # the real path: getcwd() answers it, even when `path` had a symlink
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    shell.starting_dir = path  # file transfer resolves relative paths against it

    reported = False  # True while the directory stays unreachable and that has been said

    def restore(result=None):
        nonlocal reported
        try:
            here = os.getcwd()
        except OSError:  # the current directory was removed
            here = None
        if here != path:
            try:
                os.chdir(path)
            except OSError as exc:  # removed or made unreadable by a cell: said once
                if not reported:
                    print(f"[kernelbox] cannot return to the working directory {path}: {exc.strerror}",
                          file=sys.stderr)
                reported = True
                return
            reported = False
            print(notice.format(path=path))

    setattr(restore, MARK, True)
    callbacks = shell.events.callbacks["post_run_cell"]
    for callback in [c for c in callbacks if getattr(c, MARK, False)]:
        shell.events.unregister("post_run_cell", callback)
    shell.events.register("post_run_cell", restore)
