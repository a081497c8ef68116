"""Code that runs in the gateway's child processes, not in the supervisor; one package per process.

- `kernelbox._child.gateway`: the gateway process (``python -I -m kernelbox._child.gateway``):
  Jupyter Kernel Gateway on the inherited socket, its kernel managers, the warm pool, the
  kernel WebSocket, and `kernelbox._child.gateway._upstream`, the one module that names private
  parts of Jupyter Server, Kernel Gateway, jupyter_client, Tornado and pyzmq.
- `kernelbox._child.kernel`: each kernel process (``python -P -m kernelbox._child.kernel``):
  hardening, limits, then ipykernel.

The gateway package may import the kernel package (it starts kernels and hardens itself the
same way); the kernel package imports nothing of the gateway's.
"""
