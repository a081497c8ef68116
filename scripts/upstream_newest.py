"""Run the upstream guard and the wire tests against the newest releases the bounds allow.

kernelbox overrides private parts of the packages in `OVERRIDDEN` (see
`kernelbox._child.gateway._upstream` and `kernelbox._upstream_client`), each bounded in
pyproject.toml. This installs kernelbox into a virtual environment of its own under
``.cache/upstream-newest/`` (made again only when pyproject.toml or the Python changes: its
stamp), upgrades those packages to the newest releases within their bounds, prints the versions,
and runs ``tests/test_upstream_internals.py`` and ``tests/test_wire.py`` there. A new upstream
release that breaks an override then fails here, before a user meets it.

Usage: python scripts/upstream_newest.py   (``make upstream-newest``; ``make test`` runs it)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "upstream-newest"
VENV = CACHE / "venv"
STAMP = CACHE / "stamp"
OVERRIDDEN = ("jupyter_kernel_gateway", "jupyter_server", "jupyter_client", "ipykernel", "pyzmq", "tornado", "httpx-ws")
TEST_TOOLS = ("pytest", "pytest-timeout", "trio")
TESTS = ("tests/test_upstream_internals.py", "tests/test_wire.py")


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None, requirement
    return match.group(0).lower().replace("_", "-")


def _requirements(names: tuple[str, ...], declared: list[str]) -> list[str]:
    """The entries of `declared` (pyproject requirement strings) for `names`, bounds and all."""
    wanted = {name.lower().replace("_", "-") for name in names}
    found = [entry.split(";")[0].split("#")[0].strip() for entry in declared if _name(entry) in wanted]
    missing = wanted - {_name(entry) for entry in found}
    if missing:
        sys.exit(f"upstream-newest: pyproject.toml does not declare {sorted(missing)}")
    return found


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    overridden = _requirements(OVERRIDDEN, project["dependencies"])
    tools = _requirements(TEST_TOOLS, project["optional-dependencies"]["test"])
    python = VENV / "bin" / "python"
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + sys.version.encode()).hexdigest()
    if not python.exists() or not STAMP.exists() or STAMP.read_text() != stamp:
        shutil.rmtree(CACHE, ignore_errors=True)
        venv.create(VENV, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", str(ROOT), *tools], check=True)
        STAMP.write_text(stamp)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", *overridden], check=True)
    versions = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True,
                              capture_output=True, text=True).stdout.splitlines()
    shown = {name.lower().replace("_", "-") for name in OVERRIDDEN}
    print("upstream-newest:", ", ".join(line for line in versions if _name(line) in shown), flush=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
