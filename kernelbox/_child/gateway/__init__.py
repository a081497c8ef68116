"""The gateway process; ``python -I -m kernelbox._child.gateway`` runs it (see `__main__`).

Its rooms: `app` (the Kernel Gateway application on the inherited socket), `pool` (the mapping
kernel manager: warm pool, first kernel, activity), `kernel_manager` (one kernel: private
connection info, takeover, restarts), `prelaunch` (the first kernel, started before Jupyter is
imported), `websocket` with `framing` and `primed` (the kernel WebSocket), `activity` and
`streams` (the kernel channels), `kernel_output` (kernels' stdout/stderr pipes) and `options`
(what the supervisor passes). Importing any of them has no side effect.
"""
