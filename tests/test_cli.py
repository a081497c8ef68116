"""The ``kernelbox`` command end to end: ``run`` and ``serve`` as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import psutil
import pytest
from helpers.processes import first_line

from kernelbox import KernelClient

KERNELBOX = [sys.executable, "-m", "kernelbox.cli"]


def test_run_executes_cells_statefully_and_saves_images(tmp_path: Path) -> None:
    script = tmp_path / "analysis.py"
    script.write_text(
        "# a header comment only\n"
        "# %% load\n"
        "numbers = list(range(10))\n"
        "print('loaded', len(numbers))\n"
        "# %% [markdown]\n"
        "# Some prose that is not code.\n"
        "# %% plot\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot(numbers)\n"
        "plt.show()\n"
        "sum(numbers)\n"
    )
    images = tmp_path / "images"
    completed = subprocess.run(
        [*KERNELBOX, "run", str(script), "--images-dir", str(images), "--working-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "# %% [1/2] load" in out and "# %% [2/2] plot" in out
    assert "loaded 10" in out
    assert "45" in out
    saved = list(images.glob("*.png"))
    assert len(saved) == 1
    assert f"[image saved: {saved[0]}]" in out


def test_run_exits_non_zero_and_shows_the_failing_cell(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("# %%\nprint('first')\n# %%\nundefined_thing\n# %%\nprint('never')\n")
    completed = subprocess.run(
        [*KERNELBOX, "run", str(script), "--images-dir", str(tmp_path / "img"), "--working-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 1
    assert "first" in completed.stdout
    assert "never" not in completed.stdout
    assert "cell 2 (line 4) failed" in completed.stderr
    assert "NameError" in completed.stderr


def test_run_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    completed = subprocess.run([*KERNELBOX, "run", str(tmp_path / "nope.py")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "cannot read" in completed.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_prints_json_serves_clients_and_stops_on_sigterm(tmp_path: Path, anyio_backend: str) -> None:
    process = await anyio.open_process(
        [*KERNELBOX, "serve", "--port", "0", "--json", "--env", "FROM_CLI=yes", "--working-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(60):
            line = await first_line(process)
        info = json.loads(line)
        assert info["url"].startswith("http://")
        port = int(info["url"].rsplit(":", 1)[1])
        tree = {process.pid, info["pid"]}
        with anyio.fail_after(60):
            async with KernelClient(port=port, token=info["token"], images_dir=tmp_path) as client:
                result = await client.execute("import os\nprint(os.environ['FROM_CLI'])")
                assert result.text == "yes"
                tree |= {p.pid for p in psutil.Process(info["pid"]).children(recursive=True)}
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
        with anyio.fail_after(10):
            while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                      for pid in tree - {process.pid}):
                await anyio.sleep(0.05)
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
