"""Kernel text made harmless for a terminal: what the kernel prints stays text.

Kernel output is written to the operator's terminal by ``kernelbox run``. Raw, it could drive
that terminal: OSC 52 writes the clipboard, OSC 0 sets the window title, CSI sequences move
the cursor and erase lines (rewriting what was shown before), DCS/APC/PM strings reach
terminal extensions, and 8-bit C1 characters (``\\x9b`` is CSI) do the same in one byte.
`neutralise_controls` removes all of it, the way it is parsed by ECMA-48 (control functions,
5th edition): every escape sequence, every control string (to its terminator, or to the end of
the text when it has none) and every other C0/C1 control character, keeping only:

- ``\\n`` and ``\\t``, always;
- for a terminal (``tty=True``): SGR colour and style (``ESC [ <digits ; :> m``), with a reset
  appended when the text leaves attributes set, so they never outlive the kernel's text; and
  ``\\r``, which progress bars use to redraw their line. ``\\r`` returns the cursor to the start
  of the current line only: a kernel can overwrite text *it* printed on that line, nothing
  else (kernelbox starts each of its own lines on a new line);
- otherwise (a pipe or file, a model reading MCP results): no SGR, and ``\\r`` becomes ``\\n``, so
  a log shown later with ``cat`` hides nothing.

Text cut between two pieces (a sequence split across two output messages) cannot escape: each
piece is made harmless on its own, so the rest of a cut sequence shows as plain characters.
"""

from __future__ import annotations

import re

__all__ = ["neutralise_controls"]

_SGR_RESET = "\x1b[0m"

_CONTROLS = re.compile(
    # SGR: colours and styles, kept on a terminal. Long parameter lists are not SGR here.
    r"(?P<sgr>\x1b\[[0-9;:]{0,64}m)"
    # Control strings: OSC, DCS, APC, PM, SOS (7-bit and 8-bit introducers), up to BEL, ST
    # (ESC \ or 0x9c) or the end of the text.
    r"|(?:\x1b[\]P_^X]|[\x90\x98\x9d\x9e\x9f])(?:[^\x07\x1b\x9c]|\x1b(?!\\))*(?:\x07|\x1b\\|\x9c|\Z)"
    # Any other CSI sequence: parameter, intermediate and final bytes.
    r"|(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    # Any other escape sequence (ESC c, ESC 7, ESC ( B, ESC # 8, ...).
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"
    r"|(?P<cr>\r\n?)"
    # Every other C0 control but \t and \n, DEL, and every C1 control.
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def neutralise_controls(text: str, *, tty: bool) -> str:
    """`text` with every terminal control removed but ``\\n``, ``\\t`` and, for a terminal, colour.

    Pure. The rules, and why ``\\r`` stays on a terminal, are in the module docstring.

    Args:
        text: text from a kernel (stream output, a result's ``text/plain``, a traceback).
        tty: True when it goes to a terminal: SGR colour and ``\\r`` are kept (and a reset is
            appended when the text leaves attributes set). False: no SGR, ``\\r`` becomes ``\\n``.

    Returns:
        The text, with nothing left that a terminal would act on except what `tty` keeps.
    """
    styled = False

    def replace(match: re.Match[str]) -> str:
        nonlocal styled
        if match.group("sgr") is not None:
            if not tty:
                return ""
            styled = match.group("sgr") not in (_SGR_RESET, "\x1b[m")
            return match.group("sgr")
        if match.group("cr") is not None:
            return match.group("cr") if tty else "\n"
        return ""

    cleaned = _CONTROLS.sub(replace, text)
    return cleaned + _SGR_RESET if styled else cleaned
