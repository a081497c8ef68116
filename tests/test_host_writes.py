"""The host never writes through a kernel's links, and never writes what is not an image as one.

A kernel's working directory is writable by kernel code, and ``images_dir`` or a download's
``dest`` often lie in it. The attacks: replace ``images`` or ``exports`` there by a symlink to a
directory the kernel cannot write itself, then have the client (perhaps root) write the kernel's
bytes through it. The rule under test (`kernelbox._host_paths`): a symlink is followed only when
root placed it in a directory only root can write.

Here the kernels run unsandboxed, as the test runner. Under root, that makes their links root's
own; a sandboxed kernel's working directory belongs to the sandbox user, so the attacks plant
their links in a directory given to ``nobody`` (`kernel_dir`), as the sandbox's would be.
`tests/test_host_writes_sandbox.py` repeats the main attack with a real sandbox.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from kernelbox import FileTransferError, KernelClient, KernelGateway, _host_paths
from kernelbox._host_paths import UntrustedLinkError, open_directory, replace_file
from kernelbox.client._results import check_image_type, save_images
from kernelbox.client.transfer import _write_local

TIMEOUT = 60
NOBODY = 65534
IS_ROOT = os.geteuid() == 0
PNG = b"\x89PNG\r\n\x1a\n" + b"ANY BYTES, e.g. a shell script"
MATPLOTLIB_SVG = (
    '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
    '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
    '<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="460.8pt" height="345.6pt"></svg>\n'
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kernel_dir(path: Path) -> Path:
    """A directory as a sandboxed kernel's working directory is: writable, and not root's."""
    path.mkdir(parents=True, exist_ok=True)
    if IS_ROOT:
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o777)
    return path


def root_only(path: Path) -> Path:
    """The attack's target: a directory only its owner (root, in CI) may enter."""
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each path test runs with openat2 (where Linux has it) and with the portable walk."""
    if request.param == "openat2":
        if _host_paths._syscall is None:
            pytest.skip("openat2 is not available here (not Linux, or an unlisted architecture)")
    else:
        monkeypatch.setattr(_host_paths, "_syscall", None)
    return str(request.param)


# -- the rule, on paths (no kernel) --------------------------------------------------------------


@pytest.mark.unit
def test_a_link_planted_on_the_way_is_never_followed(tmp_path: Path, resolution: str) -> None:
    work, target = kernel_dir(tmp_path / "work"), root_only(tmp_path / "target")
    (work / "images").symlink_to(target)
    for path, create in [(work / "images", False), (work / "images", True), (work / "images" / "a" / "b", True)]:
        with pytest.raises(UntrustedLinkError) as info:
            os.close(open_directory(path, create=create))
        assert info.value.errno == errno.ELOOP and info.value.filename == str(work / "images")
        assert "symbolic link" in str(info.value) and "root" in str(info.value)
    assert list(target.iterdir()) == []


@pytest.mark.unit
@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EPERM])
def test_where_openat2_is_filtered_out_the_walk_applies_the_same_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # Old Linux answers ENOSYS, seccomp filters (some container runtimes) ENOSYS or EPERM.
    def filtered(*args: object) -> int:
        ctypes.set_errno(code)
        return -1

    monkeypatch.setattr(_host_paths, "_syscall", filtered)
    os.close(open_directory(tmp_path / "made" / "here", create=True))
    assert (tmp_path / "made" / "here").is_dir()
    work, target = kernel_dir(tmp_path / "work"), root_only(tmp_path / "target")
    (work / "images").symlink_to(target)
    with pytest.raises(UntrustedLinkError):
        open_directory(work / "images" / "x", create=True)
    assert list(target.iterdir()) == []


@pytest.mark.unit
def test_missing_directories_are_created_and_a_file_stops_the_walk(tmp_path: Path, resolution: str) -> None:
    fd = open_directory(tmp_path / "a" / "b" / "c", create=True)
    os.close(fd)
    assert (tmp_path / "a" / "b" / "c").is_dir()
    with pytest.raises(FileNotFoundError):
        open_directory(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        open_directory(tmp_path / "file" / "sub", create=True)


@pytest.mark.unit
def test_a_link_loop_is_an_error_not_a_hang(tmp_path: Path, resolution: str) -> None:
    if IS_ROOT:
        tmp_path.chmod(0o755)  # root's, only root writes it: the rule follows links here
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError) as info:
        open_directory(tmp_path / "loop" / "x", create=True)
    assert info.value.errno == errno.ELOOP


@pytest.mark.unit
def test_links_root_placed_in_root_only_directories_are_followed(tmp_path: Path, resolution: str) -> None:
    # /bin -> usr/bin (merged /usr) is such a link; so are macOS's /tmp and /var.
    if os.path.islink("/bin") and os.lstat("/bin").st_uid == 0:
        os.close(open_directory("/bin"))
    if not IS_ROOT:
        pytest.skip("only root can make a link that root placed in a root-only directory")
    system, real = tmp_path / "system", tmp_path / "real"
    system.mkdir(mode=0o755)
    real.mkdir()
    (system / "link").symlink_to(real)
    fd = open_directory(system / "link" / "sub", create=True)
    os.close(fd)
    assert (real / "sub").is_dir()
    # The same link where a kernel could have made it is refused: a directory others may
    # write, or a link owned by someone else.
    system.chmod(0o775)
    with pytest.raises(UntrustedLinkError):
        open_directory(system / "link")
    system.chmod(0o755)
    os.lchown(system / "link", NOBODY, NOBODY)
    with pytest.raises(UntrustedLinkError):
        open_directory(system / "link")
    os.chown(system, NOBODY, NOBODY)
    os.lchown(system / "link", 0, 0)
    with pytest.raises(UntrustedLinkError):
        open_directory(system / "link")


@pytest.mark.unit
def test_replace_file_replaces_a_link_at_the_destination_and_refuses_one_on_the_way(
    tmp_path: Path, resolution: str
) -> None:
    work, target = kernel_dir(tmp_path / "work"), root_only(tmp_path / "target")
    (target / "passwd").write_bytes(b"root:x:0:0")
    (work / "exports").symlink_to(target)
    with pytest.raises(UntrustedLinkError):
        replace_file(work / "exports" / "passwd", b"kernel bytes")
    assert (target / "passwd").read_bytes() == b"root:x:0:0"
    assert sorted(p.name for p in target.iterdir()) == ["passwd"]
    # A link *at* the destination is replaced by the file, its target untouched.
    (work / "report.txt").symlink_to(target / "passwd")
    replace_file(work / "report.txt", b"kernel bytes")
    assert not (work / "report.txt").is_symlink()
    assert (work / "report.txt").read_bytes() == b"kernel bytes"
    assert (target / "passwd").read_bytes() == b"root:x:0:0"


# -- images: the type their MIME says, and never through a link ------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("mime", "content"), [
    ("image/png", PNG),
    ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
    ("image/svg+xml", b"<svg/>"),
    ("image/svg+xml", MATPLOTLIB_SVG.encode()),
    ("image/svg+xml", b"\xef\xbb\xbf  <!-- a comment -->\n<?xml-stylesheet href='x'?><svg width='1'></svg>"),
])
def test_images_of_their_declared_type_pass(mime: str, content: bytes) -> None:
    check_image_type(mime, content)


@pytest.mark.unit
@pytest.mark.parametrize(("mime", "content"), [
    ("image/png", b"ANY BYTES"),
    ("image/png", b"\x89PNG fake"),                     # a truncated signature
    ("image/png", b"#!/bin/sh\ncurl evil | sh\n"),
    ("image/jpeg", PNG),
    ("image/svg+xml", b"ANY BYTES"),
    ("image/svg+xml", b'<?xml version="1.0"?><html><script>x</script></html>'),
    ("image/svg+xml", b"<svgx/>"),
    ("image/svg+xml", b"#!/bin/sh\n<svg/>"),
])
def test_content_that_is_not_its_declared_image_type_is_refused(mime: str, content: bytes) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{mime} data is not")):
        check_image_type(mime, content)


@pytest.mark.unit
def test_a_mismatched_image_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    images = tmp_path / "images"
    saved, problems = save_images({"image/png": b64(b"ANY BYTES"), "image/svg+xml": "#!/bin/sh"}, images)
    assert saved == []
    assert len(problems) == 2 and all("not saved" in p for p in problems)
    assert not images.exists()  # not even the directory


@pytest.mark.unit
def test_save_images_refuses_a_planted_link_and_writes_nothing(tmp_path: Path, resolution: str) -> None:
    work, target = kernel_dir(tmp_path / "work"), root_only(tmp_path / "target")
    (work / "images").symlink_to(target)
    saved, problems = save_images({"image/png": b64(PNG)}, work / "images")
    assert saved == []
    assert len(problems) == 1 and "symbolic link" in problems[0] and str(work / "images") in problems[0]
    assert list(target.iterdir()) == []


# -- a full disk leaves nothing behind -------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, mounted for the test and unmounted after it."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30, check=True)


def test_an_image_that_does_not_fit_leaves_no_file(full_disk: Path) -> None:
    # Before: the failed write left a 0-byte (or partial) image behind.
    images = full_disk / "images"
    small = PNG + b"s" * 1000
    [kept], problems = save_images({"image/png": b64(small)}, images)
    assert problems == [] and kept.read_bytes() == small  # the disk works
    saved, problems = save_images({"image/png": b64(PNG + os.urandom(256 * 1024))}, images)
    assert saved == []
    assert len(problems) == 1 and "No space left on device" in problems[0]
    assert list(images.iterdir()) == [kept]


def test_a_download_that_does_not_fit_leaves_no_partial_file(full_disk: Path) -> None:
    dest = full_disk / "out" / "big.bin"
    with pytest.raises(FileTransferError) as info:
        _write_local(dest, os.urandom(256 * 1024), "big.bin")
    assert info.value.reason == "local" and "No space left on device" in str(info.value)
    assert list((full_disk / "out").iterdir()) == []


# -- attacks from real kernel code ---------------------------------------------------------------


async def kernel_cwd(client: KernelClient) -> Path:
    result = await client.execute("import os\nprint(os.getcwd())")
    assert result.text is not None
    return Path(result.text)


@pytest.mark.anyio
async def test_a_link_planted_before_the_client_starts_does_not_redirect_its_images(
    gateway: KernelGateway, client: KernelClient, tmp_path: Path
) -> None:
    # Before: images_dir was resolved when the client was made, so a link a previous kernel
    # left at ./images (e.g. for the next `kernelbox run`) was already behind it, and the
    # kernel's bytes landed in the link's target.
    target = root_only(tmp_path / "target")
    with anyio.fail_after(TIMEOUT):
        work = kernel_dir(await kernel_cwd(client) / f"job-{tmp_path.name}")
        await client.execute(f"import os\nos.symlink({str(target)!r}, {str(work / 'images')!r})")
        assert os.readlink(work / "images") == str(target)  # the attack is in place
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                images_dir=work / "images") as victim:
            result = await victim.execute(
                "from IPython.display import display\n"
                f"display({{'image/png': {b64(PNG)!r}, 'text/plain': 'plot'}}, raw=True)"
            )
    assert result.outputs[0].png == PNG  # the image arrived and would have been written
    assert result.images == []
    assert len(result.output_errors) == 1 and "symbolic link" in result.output_errors[0]
    assert list(target.iterdir()) == []


@pytest.mark.anyio
async def test_a_download_through_a_swapped_directory_is_refused(client: KernelClient, tmp_path: Path) -> None:
    # Before: download(dest=<wd>/exports/x) with exports swapped for a link wrote through it.
    target = root_only(tmp_path / "target")
    with anyio.fail_after(TIMEOUT):
        work = kernel_dir(await kernel_cwd(client) / f"job-{tmp_path.name}")
        job = work.name
        await client.upload(b"kernel bytes", f"{job}/data.bin")
        (work / "exports").mkdir()
        await client.execute(
            "import os\n"
            f"os.rename({str(work / 'exports')!r}, {str(work / 'exports-old')!r})\n"
            f"os.symlink({str(target)!r}, {str(work / 'exports')!r})"
        )
        assert os.readlink(work / "exports") == str(target)
        with pytest.raises(FileTransferError) as info:
            await client.download(f"{job}/data.bin", dest=work / "exports" / "authorized_keys")
    assert info.value.reason == "symlink"
    assert "symbolic link" in str(info.value) and str(work / "exports") in str(info.value)
    assert list(target.iterdir()) == []


@pytest.mark.anyio
async def test_an_image_on_a_full_disk_is_reported_and_leaves_no_file(
    gateway: KernelGateway, full_disk: Path
) -> None:
    images = full_disk / "images"
    with anyio.fail_after(TIMEOUT):
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=images) as kc:
            result = await kc.execute(
                "import base64, os\nfrom IPython.display import display\n"
                f"display({{'image/png': base64.b64encode({PNG!r} + os.urandom(256 << 10)).decode(), "
                "'text/plain': 'big'}, raw=True)\nprint('text survives')"
            )
    assert "text survives" in (result.text or "")
    assert result.images == []
    assert len(result.output_errors) == 1 and "No space left on device" in result.output_errors[0]
    assert list(images.iterdir()) == []


def test_kernelbox_run_never_writes_images_through_a_link_left_by_an_earlier_run(tmp_path: Path) -> None:
    # The finding as reported: one run's kernel leaves ./images -> <a root-only directory>, the
    # next `kernelbox run` in that directory (default --images-dir ./images) shows a plot.
    work, target = kernel_dir(tmp_path / "work"), root_only(tmp_path / "target")
    plant = work / "plant.py"
    plant.write_text(f"import os\nos.symlink({str(target)!r}, 'images')\n")
    show = work / "show.py"
    show.write_text(
        "from IPython.display import display\n"
        f"display({{'image/png': {b64(PNG)!r}, 'text/plain': 'plot'}}, raw=True)\n"
        "print('shown')\n"
    )
    command = [sys.executable, "-m", "kernelbox.cli", "run", "--working-dir", str(work)]
    first = subprocess.run([*command, str(plant)], cwd=work, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert os.readlink(work / "images") == str(target)
    second = subprocess.run([*command, str(show)], cwd=work, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert "shown" in second.stdout and "[image saved" not in second.stdout
    assert "image (image/png) was not saved" in second.stderr and "symbolic link" in second.stderr
    assert list(target.iterdir()) == []
