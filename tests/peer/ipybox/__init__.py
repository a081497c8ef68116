"""A compatibility shim with ipybox 0.9.2's module paths, backed by kernelbox (tests only)."""
