"""The kernel process: `launcher` (hardening, limits, then ipykernel) and `hardening`."""
