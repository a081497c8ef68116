"""``python -m kernelbox.cli``: the same as the ``kernelbox`` command."""

import sys

from ._main import main

sys.exit(main())
