"""``python -P -m kernelbox._child.kernel``: run one kernel (see `kernelbox._child.kernel.launcher`)."""

from kernelbox._child.kernel.launcher import main

main()
