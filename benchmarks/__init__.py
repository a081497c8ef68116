"""kernelbox's benchmark suite (issue 5).

Compares, in one run and interleaved, kernelbox (plain and sandboxed), the protocol floor (direct
`jupyter_client` over ZMQ) and the peer (ipybox 0.9.2, in its own virtual environment).

Run it with ``python -m benchmarks`` from the repository root; ``--help`` lists the options.
Each system is driven by its own worker process (``benchmarks.worker``) so that every system's
client runs in a process of its own and the peer can live in a separate venv; the harness
(``benchmarks._harness``) only sends commands and collects the samples the workers timed.
"""
