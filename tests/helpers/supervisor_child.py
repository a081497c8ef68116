"""A supervising process for the orphan test: starts a gateway and a kernel, prints their pids
as one JSON line, then waits to be killed.

Usage: python supervisor_child.py [--sandbox]
"""

from __future__ import annotations

import json
import sys

import anyio
import psutil

from kernelbox import KernelClient, KernelGateway


async def main() -> None:
    sandbox = "--sandbox" in sys.argv
    async with KernelGateway(port=0, sandbox=sandbox) as gateway:
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token) as client:
            kernel_pid = int((await client.execute("import os\nos.getpid()")).text) if not sandbox else None
            tree = [p.pid for p in psutil.Process(gateway.pid).children(recursive=True)]
            print(json.dumps({"gateway": gateway.pid, "tree": tree, "kernel": kernel_pid}), flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main)
