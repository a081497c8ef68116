"""Working directories a sandboxed gateway can use, whoever runs the tests.

As root, kernelbox runs the sandbox as the unprivileged ``kernelbox-sandbox`` user, which must
be able to write the kernels' working directory; pytest's ``tmp_path`` lives under
``/tmp/pytest-of-root`` (mode 0700), which that user cannot even enter. So sandbox working
directories are made directly under the system temporary directory and, as root, given to the
sandbox user. As a normal user the sandbox runs as that user and any directory of ours works.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kernelbox.sandbox.user import resolve_sandbox_user


@contextmanager
def sandbox_work_dir(prefix: str = "kernelbox-test-work-") -> Iterator[Path]:
    """A new directory the sandbox can write (removed afterwards, with what kernels left)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        user = resolve_sandbox_user(None)
        if user is not None:
            os.chown(path, user.uid, user.gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
