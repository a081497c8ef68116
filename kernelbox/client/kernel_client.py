"""`KernelClient`: create a kernel on a gateway and execute code in it, streaming output.

One client drives one kernel over the standard Jupyter REST + WebSocket API, so it works with
kernelbox's gateway, a stock Kernel Gateway, Jupyter Server or Enterprise Gateway. This module
is the facade: it checks arguments and owns the lifecycle (connect, disconnect, reset). The
parts live beside it: `_http` (REST), `_channels` (the WebSocket and its one reader),
`_session` (one kernel's routing, request/reply and death), `_runner` (executions one at a
time: timeouts, liveness, interrupts), `_execution` (one execution's state and the stream
object), `_results` (what an execution produces) and `transfer` (files through the kernel).
"""

from __future__ import annotations

import logging
import os
import ssl
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any

import anyio

from .._errors import InvalidStateError, NotConnectedError
from .._validate import check_int, check_seconds
from . import _kernel_setup
from . import transfer as _transfer
from ._execution import ExecutionStream
from ._http import HTTP_TIMEOUT_SECONDS, GatewayAPI, base_urls
from ._results import ExecutionResult
from ._runner import KERNEL_READY_TIMEOUT_SECONDS, Runner
from ._session import NOT_CONNECTED, KernelSession

logger = logging.getLogger("kernelbox.client")

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "DEFAULT_TIMEOUT_SECONDS", "KernelClient"]

DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_MAX_OUTPUT_BYTES = 32 * 1024 * 1024


def _check_code(code: object) -> str:
    """Refuse code the wire cannot carry, before anything is sent (nothing in the kernel changes)."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, not {type(code).__name__}")
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"code is not valid Unicode text: {exc.reason} at index {exc.start} "
            f"({code[exc.start:exc.end]!r}); the kernel protocol carries UTF-8, which cannot hold a "
            f"lone surrogate (write it as an escape in a string literal, e.g. '\\\\ud83d')"
        ) from None
    return code


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
        images_dir: where images from outputs are saved; ``./images`` when None. Made absolute
            now, not resolved: it is opened whenever images are written, creating it if
            missing, and a symlink on the way is followed only when root placed it in a
            directory only root can write (``/bin``, macOS ``/tmp``), never one a kernel could
            have made; otherwise the image is not written and ``result.output_errors`` says why.
        ping_interval: seconds between WebSocket keepalive pings; None disables them.
        token: the gateway's auth token, sent as ``Authorization: token <token>``.
        kernel_name: the kernelspec to start, e.g. ``"python3"``.
        base_url: the full server URL, e.g. ``"https://jupyter.example.org:8888/user/x"``;
            overrides `host` and `port` (http and https).
        verify: TLS verification for https: True, False, a CA bundle file or directory
            path, or an `ssl.SSLContext`.
        max_output_bytes: output kept per execution, in bytes: stream text, ``text/plain``
            and every rich output's MIME bundle (images included) count. Beyond it output is
            dropped and counted (``result.dropped_bytes``), and a visible marker is added.
            None: no limit.
        working_dir: the kernel's working directory (a path on the kernel's machine): the
            kernel enters it when started or restarted, file transfer resolves paths against
            it, and after a cell that left it (``os.chdir``, ``%cd``) it is restored, with the
            notice ``[kernelbox] cwd reset to <path>`` in that cell's output. None: the
            directory the gateway starts kernels in, and cells may change it.
        kernel_init_timeout: seconds `connect()` waits for a new kernel to answer and be set
            up, after the gateway created it.
        kernel_env: ``KERNEL_*`` variables sent with the kernel's creation request
            (``POST /api/kernels``); Kernel Gateway and Enterprise Gateway pass these to the
            kernel (Enterprise Gateway also reads some itself, e.g. ``KERNEL_USERNAME``).

    Raises:
        TypeError, ValueError: an argument has the wrong type or an invalid value.
    """

    cwd_reset_notice = _kernel_setup.CWD_RESET_NOTICE

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        images_dir: str | os.PathLike[str] | None = None,
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
        self.base_url, self.ws_base_url = base_urls(host, port, base_url)
        # Absolute but not resolved: the path is opened each time images are written, following
        # no link a kernel could have made, so a link planted before or after this point (say
        # ./images -> /etc by an earlier kernel) fails the write instead of redirecting it.
        self.images_dir = Path(images_dir).absolute() if images_dir is not None else Path.cwd() / "images"
        self.ping_interval = check_seconds("ping_interval", ping_interval, allow_none=True, allow_inf=True)
        if token is not None and not isinstance(token, str):
            raise TypeError(f"token must be a str or None, not {type(token).__name__}")
        if token is not None and not (token.isascii() and token.isprintable() and token.strip() == token):
            raise ValueError("token must be printable ASCII without surrounding spaces (it travels in an HTTP header)")
        self.token = token
        if not isinstance(kernel_name, str) or not kernel_name:
            raise ValueError(f"kernel_name must be a non-empty str, not {kernel_name!r}")
        self.kernel_name = kernel_name
        self.verify = verify
        self.max_output_bytes = check_int("max_output_bytes", max_output_bytes, minimum=0, allow_none=True)
        self.working_dir = os.fspath(working_dir) if working_dir is not None else None
        timeout = check_seconds("kernel_init_timeout", kernel_init_timeout, allow_inf=True)
        assert timeout is not None
        self.kernel_init_timeout = timeout
        self.kernel_env = _kernel_setup.validate_kernel_env(kernel_env)

        self._session_id = uuid.uuid4().hex
        self._api: GatewayAPI | None = None
        self._session: KernelSession | None = None
        self._runner: Runner | None = None
        self._kernel_id: str | None = None
        self._connect_lock = anyio.Lock()

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
            raise NotConnectedError(NOT_CONNECTED).with_context(url=self.base_url, kernel_id=None)
        return self._kernel_id

    @property
    def connected(self) -> bool:
        """True between a successful `connect()` and `disconnect()`."""
        return self._kernel_id is not None

    @property
    def binary_protocol(self) -> bool:
        """True when the kernel WebSocket speaks the binary ``v1.kernel.websocket.jupyter.org``."""
        return self._session is not None and self._session.channels.binary

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

        Concurrent calls on one client are safe: the first connects, the others wait for it
        and then raise `RuntimeError` (already connected); nothing leaks.

        Args:
            retries: how many more times to try when nothing answers at the URL.
            retry_interval: seconds between those tries.
            kernel_init_timeout: overrides the client's `kernel_init_timeout` for this call.

        Raises:
            TypeError, ValueError: `retries` is not an int >= 0, or `retry_interval` is not a
                finite number of seconds >= 0.
            InvalidStateError: the client is already connected.
            GatewayConnectionError: nothing answered after the retries.
            AuthenticationError: the gateway refused the token.
            KernelStartError: the kernel could not be created (e.g. unknown kernelspec; the
                message and ``kernelspecs`` list the available ones) or did not become ready
                in time.
        """
        init_timeout = check_seconds("kernel_init_timeout", kernel_init_timeout, allow_none=True, allow_inf=True)
        attempts = check_int("retries", retries, minimum=0)
        interval = check_seconds("retry_interval", retry_interval, allow_zero=True)
        assert attempts is not None and interval is not None
        async with self._connect_lock:
            if self._kernel_id is not None:
                raise InvalidStateError("the client is already connected; call disconnect() first")
            api = GatewayAPI(self.base_url, self.token, self.verify)
            self._api = api
            kernel_id: str | None = None
            try:
                kernel_id = await api.create_kernel(
                    self.kernel_name, env=self.kernel_env, path=None, retries=attempts, retry_interval=interval
                )
                self._kernel_id = kernel_id
                session = KernelSession(
                    api=api,
                    ws_base_url=self.ws_base_url,
                    kernel_id=kernel_id,
                    session_id=self._session_id,
                    ping_interval=self.ping_interval,
                    working_dir=self.working_dir,
                    cwd_reset_notice=self.cwd_reset_notice,
                )
                self._session = session
                await session.open()
                await session.wait_ready(self.kernel_init_timeout if init_timeout is None else init_timeout)
                self._runner = Runner(session)
            except BaseException:
                await self._release(api, self._session, kernel_id)
                raise
        logger.debug("Connected to kernel %s at %s", kernel_id, self.base_url)

    async def disconnect(self) -> None:
        """Close the WebSocket and shut the kernel down; does nothing when not connected.

        Runs to the end even when the calling task is cancelled (bounded by the HTTP timeout).
        """
        async with self._connect_lock:
            await self._release(self._api, self._session, self._kernel_id)

    async def _release(self, api: GatewayAPI | None, session: KernelSession | None, kernel_id: str | None) -> None:
        self._kernel_id = None
        self._session = None
        self._runner = None
        self._api = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(HTTP_TIMEOUT_SECONDS):
            try:
                if session is not None:
                    await session.aclose()
                if api is not None and kernel_id is not None:
                    await api.delete_kernel(kernel_id)
            finally:
                if api is not None:
                    await api.aclose()

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
        kernel_id = self.kernel_id  # raises NotConnectedError when there is no kernel
        api = self._api
        if api is None:
            raise NotConnectedError(NOT_CONNECTED).with_context(url=self.base_url, kernel_id=None)
        await api.control(kernel_id, "interrupt")

    # -- executions ------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        *,
        store_history: bool = True,
        max_output_bytes: int | None | EllipsisType = ...,
    ) -> ExecutionResult:
        """Execute `code` in the kernel and return its output once it has finished.

        Variables, imports and definitions persist across calls, as in a notebook. If the
        calling task is cancelled (e.g. by ``anyio.move_on_after``), the code is interrupted
        in the kernel (within ``_http.CONTROL_TIMEOUT_SECONDS``, 5 s), so the next call starts on a free
        kernel.

        Args:
            code: Python source, one or more statements; the last expression's value is
                returned as a result, as in a notebook cell.
            timeout: seconds to wait for the execution to finish (counted from the call,
                including any wait for an earlier execution on this client); None waits forever.
            store_history: False keeps `code` out of the kernel's history (``In``, ``_iN``)
                and leaves the execution count alone (file transfers use it).
            max_output_bytes: the output limit for this call; by default the client's.

        Returns:
            The `ExecutionResult`: ``text``, ``images``, ``stdout``, ``stderr``, ``outputs``.

        Raises:
            TypeError: `code` is not a str.
            ValueError: `code` cannot travel (a lone surrogate; more than 10 MiB on the
                wire): refused at once, nothing reaches the kernel.
            NotConnectedError: no kernel.
            ExecutionError: the code raised; has ``ename``, ``evalue`` and ``traceback``.
            ExecutionTimeoutError: the timeout passed (a `TimeoutError`). The kernel was
                interrupted (``state_kept=True``) or, if it stayed busy, restarted
                (``state_kept=False``); the client stays usable. ``state_kept=None`` when the
                gateway did not answer the interrupt.
            KernelDiedError: the kernel process died (now or before); `reset()` recovers.
            KernelStoppedError: the kernel process is stopped (SIGSTOP), reported about
                ``_runner.LIVENESS_PROBE_SECONDS`` (2 s) after it fell silent; its state is intact.
            GatewayConnectionError: the connection to the gateway was lost and could not be
                re-established (a dropped WebSocket is reconnected transparently).
        """
        async with self.stream(code, timeout, store_history=store_history, max_output_bytes=max_output_bytes) as run:
            async for _ in run:
                pass
        return run.result

    def stream(
        self,
        code: str,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        *,
        store_history: bool = True,
        max_output_bytes: int | None | EllipsisType = ...,
    ) -> ExecutionStream:
        """Execute `code`, streaming output as it arrives.

        Two forms::

            async for item in kc.stream(code):    # OutputChunks, then the ExecutionResult last
                ...

            async with kc.stream(code) as run:    # OutputChunks only
                async for chunk in run:
                    ...
            run.result                              # the ExecutionResult

        Chunks are `OutputChunk` (a `str`): ``chunk.name`` is ``"stdout"`` or ``"stderr"``
        for printed text, ``"execute_result"`` or ``"display_data"`` for the plain-text form
        of a rich output (``chunk.output`` has its whole MIME bundle). Output is read from the
        socket as it comes, whatever the pace of the loop: a slow loop holds at most the
        output limit in memory. If the loop stops early the code keeps running in the kernel
        and the next execution waits for it; if the task is cancelled, the code is interrupted.

        Args and raises: as `execute()`; `TypeError`/`ValueError` for bad `code` are raised here,
        at the call.
        """
        _check_code(code)
        seconds = check_seconds("timeout", timeout, allow_none=True, allow_inf=True)
        limit = self.max_output_bytes if max_output_bytes is ... else check_int("max_output_bytes", max_output_bytes, minimum=0, allow_none=True)
        images_dir = self.images_dir
        return ExecutionStream(
            lambda: self._require_runner().run(
                code, seconds, store_history=store_history, limit=limit, images_dir=images_dir
            )
        )

    def _require_runner(self) -> Runner:
        if self._runner is None:
            raise NotConnectedError(NOT_CONNECTED).with_context(url=self.base_url, kernel_id=None)
        return self._runner

    # -- file transfer ---------------------------------------------------------------------

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
        absolute path written. Details, limits and errors: `kernelbox.client.transfer.upload`.
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
        limits and errors: `kernelbox.client.transfer.download`.
        """
        return await _transfer.download(self, path, dest, allow_outside=allow_outside,
                                        chunk_bytes=chunk_bytes, max_bytes=max_bytes, timeout=timeout)
