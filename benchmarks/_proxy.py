"""A loopback TCP forwarder whose live connections can be cut, to drop a WebSocket (tests, `cut_stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to the target; `cut()` closes every current connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scopes: set[anyio.CancelScope] = set()
        self.connections = 0

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_pipe, client, upstream)
                        tg.start_soon(_pipe, upstream, client)
            finally:
                self._scopes.discard(scope)

    def cut(self) -> int:
        """Close every live connection (both directions); return how many were cut."""
        scopes = list(self._scopes)
        for scope in scopes:
            scope.cancel()
        return len(scopes)


async def _pipe(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
    try:
        async for data in source:
            await sink.send(data)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


@asynccontextmanager
async def cuttable_proxy(target_port: int) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(target_port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
