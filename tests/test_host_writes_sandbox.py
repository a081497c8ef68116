"""The link attacks of `test_host_writes.py` from a real sandboxed kernel.

The kernel cannot write the target directory itself (its sandbox, and as root its own
unprivileged user, keep it out); it tries, to show that the only way in would be through the
client. It then leaves links in its working directory for the client to write through.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

from kernelbox import FileTransferError, KernelClient, KernelGateway

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]
TIMEOUT = 180
PNG = b"\x89PNG\r\n\x1a\n" + b"ANY BYTES"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def target() -> Iterator[Path]:
    """A directory only its owner may enter (root's, in CI), outside the kernel's reach."""
    path = Path(tempfile.mkdtemp(prefix="kernelbox-test-target-"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_a_sandboxed_kernel_cannot_make_the_client_write_through_its_links(target: Path) -> None:
    with anyio.fail_after(TIMEOUT), sandbox_work_dir() as work:
        async with KernelGateway(host="127.0.0.1", port=0, sandbox=True, working_dir=work) as gateway:
            async with KernelClient(base_url=gateway.url, token=gateway.token,
                                    images_dir=work / "first-images") as kernel:
                tried = await kernel.execute(
                    "try:\n"
                    f"    open({str(target / 'direct')!r}, 'wb').write(b'x')\n"
                    "    print('written')\n"
                    "except OSError as exc:\n"
                    "    print(type(exc).__name__)\n"
                    f"import os\nos.symlink({str(target)!r}, 'images')\n"
                    f"os.symlink({str(target)!r}, 'exports')\n"
                    "_ = open('data.bin', 'wb').write(b'kernel bytes')"
                )
                assert tried.text in ("PermissionError", "OSError", "FileNotFoundError"), tried.text  # not "written"
                assert os.readlink(work / "images") == str(target)
                with pytest.raises(FileTransferError) as refused:
                    await kernel.download("data.bin", dest=work / "exports" / "authorized_keys")
                assert refused.value.reason == "symlink"
            # The next client, as `kernelbox run` would make it: ./images in the working dir.
            async with KernelClient(base_url=gateway.url, token=gateway.token,
                                    images_dir=work / "images") as victim:
                result = await victim.execute(
                    "from IPython.display import display\n"
                    f"display({{'image/png': {base64.b64encode(PNG).decode()!r}, 'text/plain': 'p'}}, raw=True)"
                )
    assert result.outputs[0].png == PNG
    assert result.images == [] and "symbolic link" in result.output_errors[0]
    assert list(target.iterdir()) == []
