"""`KernelClient`: create a kernel on a gateway and execute code in it, streaming output.

One client drives one kernel over the standard Jupyter REST + WebSocket API, so it works with
kernelbox's gateway, a stock Kernel Gateway, Jupyter Server or Enterprise Gateway. A single
reader task per WebSocket routes messages by the ``msg_id`` of the request they answer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import anyio.abc
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from httpx_ws import HTTPXWSException, WebSocketDisconnect, aconnect_ws

from .. import _protocol
from .._net import is_loopback_host
from . import transfer as _transfer
from .._errors import (
    AuthenticationError,
    ClientError,
    ExecutionError,
    ExecutionTimeoutError,
    GatewayConnectionError,
    KernelDiedError,
    KernelStartError,
    NotConnectedError,
)
from . import _kernel_setup
from ._results import ExecutionResult, OutputChunk, ResultBuilder, strip_ansi
from .._tasks import BackgroundTask

logger = logging.getLogger("kernelbox.client")

DEFAULT_TIMEOUT_SECONDS = 120.0
KERNEL_READY_TIMEOUT_SECONDS = 60.0
INTERRUPT_GRACE_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 30.0
# Interrupt and restart requests after a timeout: short, so a hung gateway cannot stall them.
CONTROL_TIMEOUT_SECONDS = 5.0
RECONNECT_ATTEMPTS = 5
# Seconds of silence during an execution after which the client checks the kernel still exists.
LIVENESS_PROBE_SECONDS = 2.0
DELETE_ATTEMPTS = 5
DELETE_RETRY_SECONDS = 0.25
RECONNECT_INTERVAL_SECONDS = 0.2
MAX_WEBSOCKET_MESSAGE_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 32 * 1024 * 1024
# Messages buffered between the socket and the caller, per execution and in httpx-ws; when
# full, reading stops (TCP backpressure). Small, because one stream message can hold
# megabytes when code prints fast (ipykernel batches output for up to 0.2 s).
_EXECUTION_BUFFER_MESSAGES = 16
_WEBSOCKET_QUEUE_MESSAGES = 16



_CONNECTION_ERRORS = (
    HTTPXWSException,
    httpx.HTTPError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def _leaf_exception(exc: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _tls_verify(verify: bool | str | os.PathLike[str] | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx 0.28 deprecates a CA bundle path for ``verify``: turn one into an SSL context."""
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    return verify


def _connection_error(exc: BaseException | None) -> GatewayConnectionError:
    if isinstance(exc, WebSocketDisconnect):
        reason = f": {exc.reason}" if exc.reason else ""
        return GatewayConnectionError(f"the kernel WebSocket closed (code {exc.code}{reason})")
    if exc is not None:
        return GatewayConnectionError(f"the kernel WebSocket failed: {exc!r}")
    return GatewayConnectionError("the kernel WebSocket is closed")


_KERNEL_GONE = (
    "the kernel no longer exists on the gateway (it was shut down or culled, or the gateway "
    "restarted); its state is lost"
)


class _Closed:
    """Routed to waiting requests when the connection ends or the kernel dies."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class KernelClient:
    """A client that creates one kernel on a gateway and executes code in it.

    ::

        async with KernelClient(host=gw.host, port=gw.port, token=gw.token) as kc:
            await kc.execute("x = 21")
            result = await kc.execute("print(x * 2)")     # result.text == "42"

    Use it as an async context manager, or call `connect()` and `disconnect()` (from any
    task). Executions on one client run one at a time (concurrent calls wait their turn);
    use several clients for parallel kernels.

    Args:
        host: the gateway's host name or address.
        port: the gateway's TCP port.
        images_dir: where images from outputs are saved; ``./images`` when None.
        ping_interval: seconds between WebSocket keepalive pings; None disables them.
        token: the gateway's auth token, sent as ``Authorization: token <token>``.
        kernel_name: the kernelspec to start, e.g. ``"python3"``.
        base_url: the full server URL, e.g. ``"https://jupyter.example.org:8888/user/x"``;
            overrides `host` and `port` (http and https).
        verify: TLS verification for https: True, False, a CA bundle file or directory
            path, or an `ssl.SSLContext`.
        max_output_bytes: text output kept per execution (UTF-8 bytes); beyond it output is
            dropped and a visible marker added. None: no limit.
        working_dir: the kernel's working directory (a path on the kernel's machine): the
            kernel enters it when started or restarted, file transfer resolves paths against
            it, and after a cell that left it (``os.chdir``, ``%cd``) it is restored, with the
            notice ``[kernelbox] cwd reset to <path>`` in that cell's output. None: the
            directory the gateway starts kernels in, and cells may change it.
        kernel_init_timeout: seconds `connect()` waits for a new kernel to answer and be set
            up, after the gateway created it.
        kernel_env: ``KERNEL_*`` variables sent with the kernel's creation request
            (``POST /api/kernels``); Kernel Gateway and Enterprise Gateway pass these to the
            kernel (Enterprise Gateway also reads some itself, e.g. ``KERNEL_USERNAME``,
            ``KERNEL_NAMESPACE``).
    """

    cwd_reset_notice = _kernel_setup.CWD_RESET_NOTICE

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        images_dir: str | Path | None = None,
        ping_interval: float | None = 10,
        token: str | None = None,
        kernel_name: str = "python3",
        *,
        base_url: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES,
        working_dir: str | os.PathLike[str] | None = None,
        kernel_init_timeout: float = KERNEL_READY_TIMEOUT_SECONDS,
        kernel_env: Mapping[str, str] | None = None,
    ) -> None:
        if kernel_init_timeout <= 0:
            raise ValueError(f"kernel_init_timeout must be positive seconds, not {kernel_init_timeout}")
        if base_url is None:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
                raise ValueError(f"port must be an int between 1 and 65535, not {port!r}")
            netloc = f"[{host}]" if ":" in host and not host.startswith("[") else host
            base_url = f"http://{netloc}:{port}"
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.ws_base_url = urlunsplit(
            ("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path.rstrip("/"), "", "")
        )
        self.images_dir = Path(images_dir) if images_dir is not None else Path.cwd() / "images"
        self.ping_interval = ping_interval
        self.token = token
        self.kernel_name = kernel_name
        self.verify = verify
        self.max_output_bytes = max_output_bytes
        self.working_dir = os.fspath(working_dir) if working_dir is not None else None
        self.kernel_init_timeout = float(kernel_init_timeout)
        self.kernel_env = _kernel_setup.validate_kernel_env(kernel_env)
        self._trust_env = not is_loopback_host(parts.hostname)

        self._kernel_id: str | None = None
        self._session_id = uuid.uuid4().hex
        self._http: httpx.AsyncClient | None = None
        self._ws: Any = None
        self._stack: AsyncExitStack | None = None
        self._connection: BackgroundTask | None = None
        self._waiters: dict[str, MemoryObjectSendStream[dict[str, Any] | _Closed]] = {}
        self._closed_error: Exception | None = None
        self._kernel_died: str | None = None
        self._ws_ready = anyio.Event()
        # A semaphore, not a lock: an abandoned stream() is finalised in another task, which
        # must be able to release it.
        self._execute_lock = anyio.Semaphore(1)

    @classmethod
    def from_connection_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> KernelClient:
        """A client for the gateway described by a connection file (not yet connected).

        ``kernelbox serve --connection-file PATH`` writes one (``{"url", "token", "pid"}``,
        mode 0600) and removes it on exit::

            async with KernelClient.from_connection_file("~/.kernelbox.json") as kc:
                ...

        Args:
            path: the connection file; ``~`` is expanded.
            **kwargs: other `KernelClient` arguments (``images_dir``, ``kernel_name``, ...).

        Raises:
            FileNotFoundError: no file at `path` (is the server running?).
            ValueError: the file is not a kernelbox connection file.
        """
        from .._connection_file import read_connection_file

        info = read_connection_file(Path(path).expanduser())
        return cls(base_url=info.url, token=info.token, **kwargs)

    # -- state -----------------------------------------------------------------------------

    @property
    def kernel_id(self) -> str:
        """The id of this client's kernel.

        Raises:
            NotConnectedError: `connect()` was not called, or `disconnect()` was.
        """
        if self._kernel_id is None:
            raise NotConnectedError("the client has no kernel; call connect() or use 'async with'")
        return self._kernel_id

    @property
    def connected(self) -> bool:
        """True between a successful `connect()` and `disconnect()`."""
        return self._kernel_id is not None

    async def __aenter__(self) -> KernelClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- connect / disconnect ------------------------------------------------------------

    async def connect(
        self, retries: int = 10, retry_interval: float = 1.0, kernel_init_timeout: float | None = None
    ) -> None:
        """Create a kernel and wait until it answers ``kernel_info``.

        Args:
            retries: how many more times to try when nothing answers at the URL.
            retry_interval: seconds between those tries.
            kernel_init_timeout: overrides the client's `kernel_init_timeout` for this call.

        Raises:
            RuntimeError: the client is already connected.
            GatewayConnectionError: nothing answered after the retries.
            AuthenticationError: the gateway refused the token.
            KernelStartError: the kernel could not be created (e.g. unknown kernelspec; the
                message lists the available ones) or did not become ready.
        """
        if self._kernel_id is not None:
            raise RuntimeError("the client is already connected; call disconnect() first")
        stack = AsyncExitStack()
        try:
            headers = {"Authorization": f"token {self.token}"} if self.token else {}
            self._http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=self.base_url,
                    headers=headers,
                    timeout=HTTP_TIMEOUT_SECONDS,
                    # Plain http needs no TLS context; building one loads the CA bundle (~30 ms).
                    verify=_tls_verify(self.verify) if self.base_url.startswith("https:") else False,
                    trust_env=self._trust_env,
                )
            )
            kernel_id = await self._create_kernel(retries, retry_interval)
            stack.push_async_callback(self._delete_kernel, kernel_id)
            await self._open_channels(stack, kernel_id)
            self._stack = stack
            self._kernel_id = kernel_id
            await self._wait_kernel_ready(kernel_init_timeout)
        except BaseException:
            self._stack = stack
            await self.disconnect()
            raise
        logger.debug("Connected to kernel %s at %s", self._kernel_id, self.base_url)

    async def disconnect(self) -> None:
        """Close the WebSocket and shut the kernel down; does nothing when not connected."""
        stack, self._stack = self._stack, None
        self._kernel_id = None
        self._kernel_died = None
        if stack is None:
            return
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(HTTP_TIMEOUT_SECONDS):
                await stack.aclose()
        finally:
            self._http = None
            self._ws = None

    async def reset(self) -> None:
        """Replace the kernel with a fresh one: all variables and imports are gone.

        Raises:
            The errors of `connect()`.
        """
        await self.disconnect()
        await self.connect()

    async def interrupt(self) -> None:
        """Send an interrupt (SIGINT for IPython) to the kernel, e.g. to stop a long run.

        Raises:
            NotConnectedError: no kernel.
            KernelDiedError: the gateway could not interrupt it (e.g. it no longer exists).
        """
        await self._control(self.kernel_id, "interrupt")

    async def upload(
        self,
        source: bytes | str | os.PathLike[str],
        dest: str | os.PathLike[str],
        *,
        allow_outside: bool = False,
        chunk_bytes: int = _transfer.DEFAULT_CHUNK_BYTES,
        max_bytes: int | None = _transfer.DEFAULT_MAX_TRANSFER_BYTES,
        timeout: float | None = _transfer.DEFAULT_TRANSFER_TIMEOUT_SECONDS,
    ) -> str:
        """Write bytes or a local file to `dest` in the kernel's filesystem, through the kernel.

        Works with any gateway (no contents API needed). `dest` is relative to the kernel's
        working directory; paths leaving it are refused unless `allow_outside`. Returns the
        absolute path written. Details, limits and errors: `kernelbox._transfer.upload`.
        """
        return await _transfer.upload(self, source, dest, allow_outside=allow_outside,
                                      chunk_bytes=chunk_bytes, max_bytes=max_bytes, timeout=timeout)

    async def download(
        self,
        path: str | os.PathLike[str],
        dest: str | os.PathLike[str] | None = None,
        *,
        allow_outside: bool = False,
        chunk_bytes: int = _transfer.DEFAULT_CHUNK_BYTES,
        max_bytes: int | None = _transfer.DEFAULT_MAX_TRANSFER_BYTES,
        timeout: float | None = _transfer.DEFAULT_TRANSFER_TIMEOUT_SECONDS,
    ) -> bytes:
        """Read the file at `path` in the kernel's filesystem, through the kernel.

        Returns its bytes, and also writes them to the local file `dest` when given. Paths
        leaving the kernel's working directory are refused unless `allow_outside`. Details,
        limits and errors: `kernelbox._transfer.download`.
        """
        return await _transfer.download(self, path, dest, allow_outside=allow_outside,
                                        chunk_bytes=chunk_bytes, max_bytes=max_bytes, timeout=timeout)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._http is None:
            raise NotConnectedError("the client has no kernel; call connect() or use 'async with'")
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayConnectionError(f"{method} {self.base_url}{path} failed: {exc!r}") from exc
        if response.status_code == 401 or (
            response.status_code == 403 and b"Resource Limit" not in response.content
        ):
            # The server's reason matters: Enterprise Gateway also answers 403 for a user it
            # does not allow to start kernels (e.g. "root", its default unauthorized_users).
            raise AuthenticationError(
                f"the gateway at {self.base_url} refused the request (HTTP {response.status_code}: "
                f"{_error_detail(response)}); pass the gateway's token (KernelGateway.token)"
            )
        return response

    async def _create_kernel(self, retries: int, retry_interval: float) -> str:
        attempt = 0
        while True:
            try:
                body = _kernel_setup.kernel_request(self.kernel_name, self.kernel_env)
                response = await self._request("POST", "/api/kernels", json=body)
                break
            except GatewayConnectionError as exc:
                if attempt >= retries:
                    # The last error says why (refused, DNS, TLS certificate verification, ...).
                    raise GatewayConnectionError(
                        f"no gateway answered at {self.base_url} after {retries + 1} attempts; "
                        f"last error: {exc.__cause__ or exc}"
                    ) from exc
                attempt += 1
                # A retry interval between attempts, not a readiness signal.
                await anyio.sleep(retry_interval)
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        detail = _error_detail(response)
        if response.status_code == 403:
            raise KernelStartError(f"the gateway refused a new kernel: {detail} (kernel limit reached)")
        available = await self._kernelspec_names()
        if available is not None and self.kernel_name not in available:
            raise KernelStartError(
                f"unknown kernel name {self.kernel_name!r}; available kernelspecs: "
                + ", ".join(sorted(available))
            )
        raise KernelStartError(f"the gateway could not start a kernel (HTTP {response.status_code}): {detail}")

    async def _kernelspec_names(self) -> set[str] | None:
        with contextlib.suppress(Exception):
            response = await self._request("GET", "/api/kernelspecs")
            if response.status_code == 200:
                return set(response.json().get("kernelspecs", {}))
        return None

    async def _delete_kernel(self, kernel_id: str) -> None:
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            try:
                response = await self._request("DELETE", f"/api/kernels/{kernel_id}")
            except ClientError:
                return
            if response.status_code < 500:
                return
            # Jupyter Server answers 500 (InvalidStateError in MultiKernelManager) when asked to
            # shut down a kernel whose automatic restart is still under way; once the restart
            # settles, the shutdown works.
            await anyio.sleep(DELETE_RETRY_SECONDS * attempt)

    async def _open_channels(self, stack: AsyncExitStack, kernel_id: str) -> None:
        """Start the client's connection task and wait until the kernel's WebSocket is open."""
        url = (
            f"{self.ws_base_url}/api/kernels/{quote(kernel_id)}/channels"
            f"?session_id={self._session_id}"
        )
        self._closed_error = None
        self._kernel_died = None
        self._ws = None
        self._ws_ready = anyio.Event()
        connection = BackgroundTask(
            functools.partial(self._run_connection, url, kernel_id),
            name=f"kernelbox client {kernel_id}",
        )
        connection.start()

        async def close_connection() -> None:
            connection.cancel()
            await connection.wait()

        stack.push_async_callback(close_connection)
        await self._ws_ready.wait()
        if self._ws is None:
            raise self._closed_error or GatewayConnectionError(f"could not open the kernel WebSocket at {url}")

    async def _run_connection(self, url: str, kernel_id: str) -> None:
        """Keep the kernel's WebSocket open, reconnecting with the same session id if it drops.

        The server buffers a session's messages while it is disconnected and replays them on
        reconnection, so an execution in flight still gets all of its output.
        """
        attempts = 0
        opened = False
        try:
            while True:
                error: BaseException | None = None
                try:
                    async with aconnect_ws(
                        url,
                        self._http,
                        max_message_size_bytes=MAX_WEBSOCKET_MESSAGE_BYTES,
                        queue_size=_WEBSOCKET_QUEUE_MESSAGES,
                        keepalive_ping_interval_seconds=self.ping_interval,
                    ) as ws:
                        if opened:
                            logger.info("Reconnected to kernel %s", kernel_id)
                        self._ws, opened, attempts = ws, True, 0
                        self._ws_ready.set()
                        await self._read_messages(ws)
                except Exception as exc:  # httpx-ws raises through its task group
                    error = _leaf_exception(exc)
                    if not isinstance(error, _CONNECTION_ERRORS):
                        raise
                self._ws = None
                if self._ws_ready.is_set():
                    self._ws_ready = anyio.Event()  # sends wait for the next connection
                if not opened:
                    self._fail_waiters(_connection_error(error))
                    return
                if await self._kernel_is_gone(kernel_id):
                    self._kernel_gone(_KERNEL_GONE)
                    return
                attempts += 1
                if attempts > RECONNECT_ATTEMPTS:
                    self._fail_waiters(_connection_error(error))
                    return
                logger.warning("Kernel %s WebSocket dropped (%r); reconnecting (%d/%d)",
                               kernel_id, error, attempts, RECONNECT_ATTEMPTS)
                await anyio.sleep(RECONNECT_INTERVAL_SECONDS * attempts)  # back-off between tries
        finally:
            self._ws = None
            self._fail_waiters(GatewayConnectionError("the kernel WebSocket is closed"))
            self._ws_ready.set()

    async def _kernel_is_gone(self, kernel_id: str) -> bool:
        """True when the gateway answers that the kernel does not exist (HTTP 404)."""
        try:
            response = await self._request(
                "GET", f"/api/kernels/{kernel_id}", timeout=CONTROL_TIMEOUT_SECONDS
            )
        except ClientError:
            return False
        return response.status_code == 404

    async def _read_messages(self, ws: Any) -> None:
        """The one reader of the WebSocket: route each message to the request it answers."""
        while True:
            message = _protocol.decode(await ws.receive_text())
            parent = _protocol.parent_id(message)
            if parent is None:
                if _protocol.is_kernel_death(message):
                    self._kernel_gone("the kernel died (its process exited: a crash, os._exit, a "
                                      "signal or the out-of-memory killer); its state is lost")
                continue
            waiter = self._waiters.get(parent)
            if waiter is not None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await waiter.send(message)

    def _kernel_gone(self, reason: str) -> None:
        """Remember that the kernel died; fail waiting and future executions until `reset()`."""
        logger.warning("Kernel %s: %s", self._kernel_id, reason)
        self._kernel_died = reason
        self._fail_waiters(KernelDiedError(reason + "; call reset() for a fresh kernel"), close=False)

    def _fail_waiters(self, error: Exception, *, close: bool = True) -> None:
        """Wake every waiting request with `error`; with `close`, the connection is over."""
        if close:
            if self._closed_error is not None:
                return
            self._closed_error = error
        for waiter in list(self._waiters.values()):
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock):
                waiter.send_nowait(_Closed(error))
            if close:
                waiter.close()  # a waiter whose buffer is full still sees the end

    # -- requests ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _register(self, msg_id: str) -> Any:
        send, receive = anyio.create_memory_object_stream[dict[str, Any] | _Closed](
            _EXECUTION_BUFFER_MESSAGES
        )
        self._waiters[msg_id] = send
        try:
            yield receive
        finally:
            self._waiters.pop(msg_id, None)
            send.close()
            receive.close()

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None and self._closed_error is None:
            # Reconnecting: wait for the new WebSocket (bounded by the reconnect attempts).
            await self._ws_ready.wait()
        if self._closed_error is not None:
            raise self._closed_error
        if self._ws is None:
            raise GatewayConnectionError("the kernel WebSocket is not connected")
        try:
            await self._ws.send_text(_protocol.encode(message))
        except (HTTPXWSException, httpx.HTTPError) as exc:
            raise GatewayConnectionError(f"could not send to the kernel: {exc!r}") from exc

    async def _wait_kernel_ready(self, timeout: float | None = None) -> None:
        """Wait for ``kernel_info_reply``, then enter `working_dir`; within the init timeout."""
        timeout = self.kernel_init_timeout if timeout is None else timeout
        with anyio.move_on_after(timeout):
            await self._request_reply(_protocol.kernel_info_request(session=self._session_id))
            if self.working_dir is not None:
                code = _kernel_setup.working_dir_cell(self.working_dir, self.cwd_reset_notice)
                request = _protocol.execute_request(code, session=self._session_id, store_history=False)
                reply = (await self._request_reply(request)).get("content") or {}
                if reply.get("status") != "ok":
                    raise KernelStartError(
                        f"the kernel could not enter its working_dir {self.working_dir!r}: "
                        f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"
                    )
            return
        raise KernelStartError(f"the kernel did not answer and start within {timeout:g} seconds")

    async def _request_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a shell request and return its ``*_reply`` message."""
        with self._register(request["header"]["msg_id"]) as messages:
            await self._send(request)
            async for message in messages:
                if isinstance(message, _Closed):
                    raise message.error
                if message.get("channel") == "shell" and message["header"]["msg_type"].endswith("_reply"):
                    return message
        raise GatewayConnectionError("the kernel WebSocket closed")

    async def execute(
        self, code: str, timeout: float | None = DEFAULT_TIMEOUT_SECONDS, *, store_history: bool = True
    ) -> ExecutionResult:
        """Execute `code` in the kernel and return its output once it has finished.

        Variables, imports and definitions persist across calls, as in a notebook.

        Args:
            code: Python source, one or more statements; the last expression's value is
                returned as a result, as in a notebook cell.
            timeout: seconds to wait for the execution to finish; None waits forever.
            store_history: False keeps `code` out of the kernel's history (``In``, ``_iN``)
                and leaves the execution count alone (file transfers use it).

        Returns:
            The `ExecutionResult`: ``text``, ``images``, ``stdout``, ``stderr``, ``outputs``.

        Raises:
            TypeError: `code` is not a str.
            NotConnectedError: no kernel.
            ExecutionError: the code raised; has ``ename``, ``evalue`` and ``traceback``.
            ExecutionTimeoutError: the timeout passed (a `TimeoutError`). The kernel was
                interrupted (``state_kept=True``) or, if it stayed busy, restarted
                (``state_kept=False``); the client stays usable. ``state_kept=None`` when the
                gateway did not answer the interrupt.
            KernelDiedError: the kernel process died (now or before); `reset()` recovers.
            GatewayConnectionError: the connection to the gateway was lost and could not be
                re-established (a dropped WebSocket is reconnected transparently).
        """
        result: ExecutionResult | None = None
        async for item in self.stream(code, timeout=timeout, store_history=store_history):
            if isinstance(item, ExecutionResult):
                result = item
        assert result is not None
        return result

    async def stream(
        self, code: str, timeout: float | None = DEFAULT_TIMEOUT_SECONDS, *, store_history: bool = True
    ) -> AsyncIterator[OutputChunk | ExecutionResult]:
        """Execute `code`, yielding output as it arrives, then the `ExecutionResult` last.

        Chunks are `OutputChunk` (a `str`): ``chunk.name`` is ``"stdout"`` or ``"stderr"``
        for printed text, ``"execute_result"`` or ``"display_data"`` for the plain-text form
        of a rich output (``chunk.output`` has its whole MIME bundle).

        Args and raises: as `execute()`. If the caller stops iterating early, the code keeps
        running in the kernel; later executions wait for it there.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if timeout is not None and (math.isnan(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be positive seconds or None, not {timeout}")
        kernel_id = self.kernel_id
        async with self._execute_lock:
            if self._kernel_died is not None:
                raise KernelDiedError(self._kernel_died + "; call reset() for a fresh kernel")
            deadline = math.inf if timeout is None else anyio.current_time() + timeout
            request = _protocol.execute_request(code, session=self._session_id, store_history=store_history)
            builder = ResultBuilder(self.images_dir, self.max_output_bytes)
            with self._register(request["header"]["msg_id"]) as messages:
                await self._send(request)
                reply: dict[str, Any] | None = None
                idle = False
                while reply is None or not idle:
                    message = await self._next(messages, deadline, kernel_id)
                    if message is None:
                        await self._handle_timeout(kernel_id, messages, timeout)
                        return
                    channel = message.get("channel")
                    msg_type = message["header"]["msg_type"]
                    content = message.get("content") or {}
                    if channel == "shell" and msg_type == "execute_reply":
                        reply = content
                        continue
                    if channel != "iopub":
                        continue
                    chunk = None
                    if msg_type == "status":
                        idle = content.get("execution_state") == "idle"
                    elif msg_type == "stream":
                        chunk = builder.add_stream(content.get("name", "stdout"), content.get("text", ""))
                    elif msg_type in ("execute_result", "display_data"):
                        chunk = builder.add_rich(msg_type, content)
                    if chunk:
                        yield chunk
            _raise_for_reply(reply)
            if builder.execution_count is None:
                builder.execution_count = reply.get("execution_count")
            yield builder.build()

    async def _next(
        self,
        messages: MemoryObjectReceiveStream[dict[str, Any] | _Closed],
        deadline: float,
        kernel_id: str,
    ) -> dict[str, Any] | None:
        """The next message of this execution, or None when the deadline has passed.

        After `LIVENESS_PROBE_SECONDS` of silence it asks the gateway whether the kernel still
        exists: Jupyter Server keeps the WebSocket open when a kernel is shut down or culled,
        and nothing else would ever arrive.
        """
        while True:
            wait = min(deadline, anyio.current_time() + LIVENESS_PROBE_SECONDS) - anyio.current_time()
            with anyio.move_on_after(wait):
                try:
                    message = await messages.receive()
                except anyio.EndOfStream:
                    raise self._closed_error or GatewayConnectionError("the kernel WebSocket closed") from None
                if isinstance(message, _Closed):
                    raise message.error
                return message
            if anyio.current_time() >= deadline:
                return None
            gone = False
            with anyio.move_on_after(deadline - anyio.current_time()):
                gone = await self._kernel_is_gone(kernel_id)
            if gone:
                self._kernel_gone(_KERNEL_GONE)
                raise KernelDiedError(_KERNEL_GONE + "; call reset() for a fresh kernel")

    async def _handle_timeout(
        self,
        kernel_id: str,
        messages: MemoryObjectReceiveStream[dict[str, Any] | _Closed],
        timeout: float | None,
    ) -> None:
        """Interrupt; if the kernel stays busy, restart it. Always raises a `TimeoutError`."""
        seconds = float(timeout or 0)
        prefix = f"the execution did not finish within {seconds:g} seconds"
        try:
            await self._control(kernel_id, "interrupt")
            if await self._drain_until_done(messages, INTERRUPT_GRACE_SECONDS):
                raise ExecutionTimeoutError(
                    f"{prefix}; the kernel was interrupted and its state is kept",
                    timeout=seconds, state_kept=True,
                )
            logger.warning("Kernel %s ignored the interrupt for %gs; restarting it",
                           kernel_id, INTERRUPT_GRACE_SECONDS)
            await self._control(kernel_id, "restart")
            await self._wait_kernel_ready()
        except ClientError as exc:
            if isinstance(exc, ExecutionTimeoutError):
                raise
            raise ExecutionTimeoutError(
                f"{prefix}, and stopping it failed ({exc}); the kernel's state is unknown",
                timeout=seconds, state_kept=None,
            ) from exc
        raise ExecutionTimeoutError(
            f"{prefix} and it ignored the interrupt; the kernel was restarted and its state is lost",
            timeout=seconds, state_kept=False,
        )

    async def _control(self, kernel_id: str, action: str) -> None:
        """POST an ``interrupt`` or ``restart`` for the kernel, bounded by a short timeout."""
        response = await self._request(
            "POST", f"/api/kernels/{kernel_id}/{action}", timeout=CONTROL_TIMEOUT_SECONDS
        )
        if response.status_code not in (200, 204):
            raise KernelDiedError(f"the gateway could not {action} the kernel: {_error_detail(response)}")

    async def _drain_until_done(
        self, messages: MemoryObjectReceiveStream[dict[str, Any] | _Closed], grace: float
    ) -> bool:
        """Consume this execution's messages until reply and idle, for at most `grace` seconds."""
        reply = idle = False
        with anyio.move_on_after(grace):
            async for message in messages:
                if isinstance(message, _Closed):
                    raise message.error
                msg_type = message["header"]["msg_type"]
                reply = reply or msg_type == "execute_reply"
                idle = idle or (
                    msg_type == "status" and message["content"].get("execution_state") == "idle"
                )
                if reply and idle:
                    return True
        return False


def _raise_for_reply(reply: dict[str, Any]) -> None:
    status = reply.get("status")
    if status == "error":
        raise ExecutionError(
            reply.get("ename", "Error"),
            reply.get("evalue", ""),
            [strip_ansi(line) for frame in reply.get("traceback", []) for line in frame.splitlines()],
        )
    if status == "aborted":
        raise ExecutionError("ExecutionAborted", "the kernel aborted the execution")


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body)[:500]
    return str(body)[:500]
