"""The ``kernelbox`` command (``serve``, ``run``, ``mcp``, ``doctor``).

Only the CLI installs signal handlers; the library never does.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
