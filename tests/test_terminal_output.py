"""Kernel output never controls the operator's terminal: only text (and colour on a TTY) gets out.

`neutralise_controls` is tested on each kind of control; then the real ``kernelbox run`` runs a
file whose cells print them, once into a pipe and once into a pseudo-terminal, and what reaches
its stdout and stderr is checked byte by byte.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from kernelbox._terminal import neutralise_controls
from kernelbox.client._results import strip_ansi

# Each attack, and what must remain of it.
ATTACKS = {
    "osc52-bel": ("a\x1b]52;c;cm0gLXJmIH4=\x07b", "ab"),            # clipboard write, BEL-terminated
    "osc52-st": ("a\x1b]52;c;cm0gLXJmIH4=\x1b\\b", "ab"),           # ... ST-terminated
    "osc0-bel": ("a\x1b]0;owned\x07b", "ab"),                       # window title
    "osc0-st": ("a\x1b]0;owned\x1b\\b", "ab"),
    "osc-8bit": ("a\x9d0;owned\x9cb", "ab"),                         # OSC and ST as C1 characters
    "osc-unterminated": ("a\x1b]52;c;cm0=", "a"),                    # to the end of the text
    "csi-erase-line": ("a\x1b[2Kb", "ab"),
    "csi-cursor-up": ("a\x1b[1A\x1b[10Db", "ab"),
    "csi-clear-screen": ("a\x1b[2J\x1b[Hb", "ab"),
    "csi-private": ("a\x1b[?1049hb", "ab"),                          # alternate screen
    "csi-8bit": ("a\x9b2Jb", "ab"),                                  # CSI as one C1 character
    "dcs": ("a\x1bP1$qm\x1b\\b", "ab"),                              # DECRQSS, answered on stdin
    "apc": ("a\x1b_Gf=100;payload\x1b\\b", "ab"),                    # e.g. the kitty graphics protocol
    "pm": ("a\x1b^private\x1b\\b", "ab"),
    "sos": ("a\x1bXstring\x1b\\b", "ab"),
    "dcs-8bit": ("a\x90q#0\x9cb", "ab"),
    "esc-reset": ("a\x1bcb", "ab"),                                  # RIS: full terminal reset
    "esc-charset": ("a\x1b(0b", "ab"),                               # line-drawing character set
    "esc-decaln": ("a\x1b#8b", "ab"),
    "esc-save-cursor": ("a\x1b7b\x1b8", "ab"),
    "c0": ("a\x00\x05\x07\x08\x0b\x0c\x0e\x1a\x7fb", "ab"),          # NUL, ENQ, BEL, BS, VT, FF, SO, SUB, DEL
    "c1": ("a\x84\x85\x8d\x8e\x9ab", "ab"),                          # IND, NEL, RI, SS2, SCI
    "lone-esc": ("ab\x1b", "ab"),
    "cut-csi": ("a\x1b[3", "a3"),                                    # a sequence cut between messages
}


@pytest.mark.unit
@pytest.mark.parametrize("tty_output", [True, False], ids=["tty", "pipe"])
@pytest.mark.parametrize(("text", "expected"), list(ATTACKS.values()), ids=list(ATTACKS))
def test_every_control_is_removed(text: str, expected: str, tty_output: bool) -> None:
    cleaned = neutralise_controls(text, tty=tty_output)
    assert cleaned == expected


@pytest.mark.unit
def test_colour_is_kept_on_a_terminal_only_and_never_outlives_the_text() -> None:
    coloured = "\x1b[1;31mError\x1b[0m: \x1b[38;2;255;0;0mred"
    assert neutralise_controls(coloured, tty=True) == coloured + "\x1b[0m"
    assert neutralise_controls(coloured, tty=False) == "Error: red"
    closed = "\x1b[32mok\x1b[0m"
    assert neutralise_controls(closed, tty=True) == closed  # already reset: nothing appended
    assert neutralise_controls("\x1b[" + "1;" * 100 + "m", tty=True) == ""  # not a plausible SGR


@pytest.mark.unit
def test_newlines_tabs_and_carriage_returns() -> None:
    text = "a\tb\n 10%\r 50%\r100%\r\nend"
    # On a terminal \r redraws the line (progress bars); in a pipe it becomes a line break.
    assert neutralise_controls(text, tty=True) == text
    assert neutralise_controls(text, tty=False) == "a\tb\n 10%\n 50%\n100%\nend"
    assert neutralise_controls("naïve — 数据 🙂", tty=True) == "naïve — 数据 🙂"


@pytest.mark.unit
def test_strip_ansi_removes_osc_and_every_other_control_too() -> None:
    # Used for tracebacks: they used to lose only CSI, and an OSC in an exception message
    # reached the terminal of whoever printed the ExecutionError.
    assert strip_ansi("\x1b[0;31mValueError\x1b[0m: \x1b]52;c;ZXZpbA==\x07boom\x9b2J") == "ValueError: boom"


# -- the real `kernelbox run` --------------------------------------------------------------------

# Printed by the kernel: each attack as a message of its own (flushed) between markers, a
# coloured word, a progress bar, a display's text/plain, stderr, and last an exception whose
# message carries OSC 52.
SCRIPT = r'''
# %%
import sys
from IPython.display import display
for name, text in ATTACKS.items():
    for piece in (f"<{name}>", text, "</>\n"):
        sys.stdout.write(piece)
        sys.stdout.flush()
print("\x1b[31mRED\x1b[0m|10%\r100%|END")
display({"text/plain": "DISPLAY\x1b]0;owned\x07\x1b[2JSHOWN"}, raw=True)
print("STDERR\x1b]52;c;ZXZpbA==\x07\x9b2J", file=sys.stderr)
# %%
raise ValueError("EVIL\x1b]52;c;ZXZpbA==\x07\x1b[1A\x9b2K")
'''


def write_script(tmp_path: Path) -> Path:
    attacks = {name: text for name, (text, _) in ATTACKS.items()}
    path = tmp_path / "hostile.py"
    path.write_text(SCRIPT.replace("ATTACKS.items()", f"{attacks!r}.items()"), encoding="utf-8")
    return path


def assert_each_attack_neutralised(stdout: str, *, tty_output: bool) -> None:
    for name, (_, expected) in ATTACKS.items():
        assert f"<{name}>{expected}</>\n" in stdout, name
    if tty_output:
        assert "\x1b[31mRED\x1b[0m|10%\r100%|END\n" in stdout
    else:
        assert "RED|10%\n100%|END\n" in stdout
    assert "DISPLAYSHOWN" in stdout


def assert_only_text(output: str, *, colour: bool) -> None:
    """Nothing a terminal acts on: no C0 but \\n, \\t (and \\r, SGR on a TTY), no C1, no ESC but SGR."""
    remaining = output
    if colour:
        remaining = remaining.replace("\x1b[31m", "").replace("\x1b[0m", "").replace("\r", "")
    bad = sorted({hex(ord(c)) for c in remaining if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f})
    assert bad == [], f"control characters reached the output: {bad}"


def run_command(script: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "kernelbox.cli", "run", str(script), "--working-dir", str(work),
            "--images-dir", str(work / "images")]


def test_kernelbox_run_into_a_pipe_passes_text_only(tmp_path: Path) -> None:
    # Before: OSC 52 (clipboard), OSC 0 (title), cursor moves and erasures all reached stdout.
    completed = subprocess.run(run_command(write_script(tmp_path), tmp_path), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=180)
    stdout = completed.stdout.decode("utf-8")
    stderr = completed.stderr.decode("utf-8")
    assert completed.returncode == 1, stderr  # the second cell raised
    assert_each_attack_neutralised(stdout, tty_output=False)
    assert "STDERR" in stderr and "EVIL" in stderr and "ValueError" in stderr
    assert_only_text(stdout, colour=False)
    assert_only_text(stderr, colour=False)


def test_kernelbox_run_into_a_terminal_keeps_colour_and_nothing_else(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no output processing: the bytes written are the bytes read
    try:
        process = subprocess.Popen(run_command(write_script(tmp_path), tmp_path), stdin=subprocess.DEVNULL,
                                   stdout=terminal, stderr=subprocess.PIPE)
    finally:
        os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            received += data
        _, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    stdout = received.decode("utf-8")
    assert process.returncode == 1, stderr
    assert_each_attack_neutralised(stdout, tty_output=True)
    assert_only_text(stdout, colour=True)
    assert_only_text(stderr.decode("utf-8"), colour=False)  # stderr is a pipe here
