"""Run the peer's (ipybox 0.9.2) own kernel-manager integration tests against kernelbox.

    .venv/bin/python scripts/peer_tests.py        # make peer-test

1. Fetches the test files of the peer's release tag (its sdist ships no tests) into
   ``.cache/peer-ipybox-0.9.2/src`` and checks each against a pinned SHA-256; cached files
   that match are reused, so later runs work offline. ``IPYBOX_SOURCE=DIR`` takes them from a
   checkout of the tag (or any directory with the same layout) instead of the network; without
   it, ``../shared/peer/ipybox-0.9.2`` beside the checkout is used when it exists (CI machines
   have the pinned files there, with the peer's licence).
2. Makes ``.cache/peer-ipybox-0.9.2/venv`` with the peer's own test dependencies (pytest 8,
   pytest-asyncio 1.x, flaky) on top of this project's virtual environment.
3. Runs ``tests/integration/test_kernel_mgr.py`` unmodified, with nothing deselected; the
   package ``ipybox`` is the shim in ``tests/peer/ipybox`` (kernelbox under the peer's names).

Exits with pytest's status.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

IPYBOX_VERSION = "0.9.2"
IPYBOX_COMMIT = "9b74ee4dbbe0e9295e3053f72734f3af0a2430ea"  # the tag 0.9.2
RAW_URL = f"https://raw.githubusercontent.com/gradion-ai/ipybox/{IPYBOX_COMMIT}/{{path}}"
# The files of the tag that the tests need, with their SHA-256.
FILES = {
    "tests/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "tests/integration/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "tests/integration/conftest.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "tests/integration/sandbox.json": "e37d83ef9872093c8350869c90e7466755db4943fbb220991cecef7d65fae4c5",
    "tests/integration/test_kernel_mgr.py": "bac933ce55648120347f7b5842dcca9e5fadc6f90bc175d06fb01c26ed57c21a",
}
TEST_FILE = "tests/integration/test_kernel_mgr.py"
# The peer's test dependencies, as its pyproject.toml pins them.
TEST_REQUIREMENTS = ["pytest>=8.4.2,<9", "pytest-asyncio>=1.2.0,<2", "flaky>=3.8.1"]
DOWNLOAD_TIMEOUT_SECONDS = 60
RUN_TIMEOUT_SECONDS = 1800

ROOT = Path(__file__).resolve().parent.parent
# Where CI machines keep the pinned test files (the layout IPYBOX_SOURCE accepts).
SHARED_SOURCE = ROOT.parent / "shared" / "peer" / f"ipybox-{IPYBOX_VERSION}"
CACHE = Path(os.environ.get("KERNELBOX_CACHE_DIR", ROOT / ".cache")) / f"peer-ipybox-{IPYBOX_VERSION}"
SHIM = ROOT / "tests" / "peer"


def log(message: str) -> None:
    print(f"peer-tests: {message}", file=sys.stderr, flush=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_tests(source_dir: Path) -> None:
    """Put the pinned test files in `source_dir`, from the cache, IPYBOX_SOURCE or the network."""
    local = os.environ.get("IPYBOX_SOURCE") or (str(SHARED_SOURCE) if SHARED_SOURCE.is_dir() else None)
    if local:
        log(f"taking the test files from {local}")
    for path, digest in FILES.items():
        target = source_dir / path
        if target.is_file() and _sha256(target.read_bytes()) == digest:
            continue
        if local:
            data = (Path(local) / path).read_bytes()
        else:
            url = RAW_URL.format(path=path)
            log(f"downloading {url}")
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                data = response.read()
        if _sha256(data) != digest:
            raise SystemExit(f"peer-tests: {path} does not match its pinned SHA-256; refusing to run it")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def make_venv(directory: Path) -> Path:
    """The peer's test tools in their own venv, which also sees this project's packages."""
    python = directory / "bin" / "python"
    stamp = directory / ".installed"
    if stamp.is_file() and stamp.read_text() == repr(TEST_REQUIREMENTS):
        return python
    log(f"creating {directory} ({', '.join(TEST_REQUIREMENTS)})")
    shutil.rmtree(directory, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(directory)
    site_packages = subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    project_site = subprocess.check_output(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    # An "import" line in a .pth file runs at start-up: addsitedir also processes the project's
    # own .pth files (the editable kernelbox). The venv's own packages stay first on sys.path.
    Path(site_packages, "kernelbox-project.pth").write_text(
        f"import site; site.addsitedir({project_site!r})\n", encoding="utf-8"
    )
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *TEST_REQUIREMENTS])
    stamp.write_text(repr(TEST_REQUIREMENTS))
    return python


def main() -> int:
    source_dir = CACHE / "src"
    fetch_tests(source_dir)
    python = make_venv(CACHE / "venv")
    env = dict(os.environ, PYTHONPATH=str(SHIM))
    argv = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", TEST_FILE]
    log(f"running ipybox {IPYBOX_VERSION}'s {TEST_FILE} against kernelbox")
    try:
        completed = subprocess.run(argv, cwd=source_dir, env=env, timeout=RUN_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        log(f"timed out after {RUN_TIMEOUT_SECONDS} s")
        return 1
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
