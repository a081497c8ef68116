"""`KernelClient`: create a kernel on a gateway and execute code in it, streaming output.

One client drives one kernel over the standard Jupyter REST + WebSocket API, so it works with
kernelbox's gateway, a stock Kernel Gateway, Jupyter Server or Enterprise Gateway. The parts
live beside it: `_http` (REST), `_channels` (the WebSocket and its one reader), `_execution`
(one execution's state and the stream object), `_results` (what an execution produces) and
`transfer` (files through the kernel).
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any

import anyio

from .. import _protocol
from .._errors import (
    ClientError,
    ExecutionError,
    ExecutionTimeoutError,
    InvalidStateError,
    KernelDiedError,
    KernelStartError,
    KernelStoppedError,
    NotConnectedError,
)
from .._validate import check_int, check_seconds
from . import _kernel_setup
from . import transfer as _transfer
from ._channels import MAX_SEND_BYTES, KernelChannels
from ._execution import Execution, ExecutionStream, Reply
from ._http import HTTP_TIMEOUT_SECONDS, GatewayAPI, base_urls
from ._results import IMAGE_EXTENSIONS, ExecutionResult, OutputChunk, ResultBuilder, save_images, strip_ansi

logger = logging.getLogger("kernelbox.client")

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "DEFAULT_TIMEOUT_SECONDS", "KernelClient"]

DEFAULT_TIMEOUT_SECONDS = 120.0
KERNEL_READY_TIMEOUT_SECONDS = 60.0
INTERRUPT_GRACE_SECONDS = 5.0
CONTROL_TIMEOUT_SECONDS = 5.0
# Seconds of silence during an execution after which the client checks the kernel still exists.
LIVENESS_PROBE_SECONDS = 2.0
DEFAULT_MAX_OUTPUT_BYTES = 32 * 1024 * 1024

_KERNEL_GONE = (
    "the kernel no longer exists on the gateway (it was shut down or culled, or the gateway "
    "restarted); its state is lost"
)
_KERNEL_STOPPED = (
    "the kernel process is stopped (SIGSTOP or SIGTSTP) and runs nothing; its state is intact: "
    "sent SIGCONT, it resumes and runs this request (whose output is then discarded), or call "
    "reset() for a fresh kernel"
)
_KERNEL_DIED = (
    "the kernel died (its process exited: a crash, os._exit, a signal or the out-of-memory "
    "killer); its state is lost"
)


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
        self._channels: KernelChannels | None = None
        self._kernel_id: str | None = None
        self._requests: dict[str, Execution | Reply] = {}
        self._closed_error: BaseException | None = None
        self._kernel_died: str | None = None
        self._connect_lock = anyio.Lock()
        # Serialises *submissions* only: held while waiting for the previous execution to end
        # and sending the next request, never while a caller consumes output.
        self._turn = anyio.Lock()
        self._last: Execution | None = None

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
            raise NotConnectedError("the client has no kernel; call connect() or use 'async with'").with_context(
                url=self.base_url, kernel_id=None
            )
        return self._kernel_id

    @property
    def connected(self) -> bool:
        """True between a successful `connect()` and `disconnect()`."""
        return self._kernel_id is not None

    @property
    def binary_protocol(self) -> bool:
        """True when the kernel WebSocket speaks the binary ``v1.kernel.websocket.jupyter.org``."""
        return self._channels is not None and self._channels.binary

    def _context(self, error: ClientError) -> ClientError:
        return error.with_context(url=self.base_url, kernel_id=self._kernel_id)

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
            InvalidStateError: the client is already connected.
            GatewayConnectionError: nothing answered after the retries.
            AuthenticationError: the gateway refused the token.
            KernelStartError: the kernel could not be created (e.g. unknown kernelspec; the
                message lists the available ones) or did not become ready in time.
        """
        init_timeout = check_seconds("kernel_init_timeout", kernel_init_timeout, allow_none=True, allow_inf=True)
        async with self._connect_lock:
            if self._kernel_id is not None:
                raise InvalidStateError("the client is already connected; call disconnect() first")
            api = GatewayAPI(self.base_url, self.token, self.verify)
            self._api = api
            kernel_id: str | None = None
            try:
                kernel_id = await api.create_kernel(
                    self.kernel_name, env=self.kernel_env, path=None, retries=retries, retry_interval=retry_interval
                )
                self._kernel_id = kernel_id
                await self._open_channels(api, kernel_id)
                await self._wait_kernel_ready(init_timeout)
            except BaseException:
                await self._release(api, self._channels, kernel_id)
                raise
        logger.debug("Connected to kernel %s at %s", kernel_id, self.base_url)

    async def disconnect(self) -> None:
        """Close the WebSocket and shut the kernel down; does nothing when not connected.

        Runs to the end even when the calling task is cancelled (bounded by the HTTP timeout).
        """
        async with self._connect_lock:
            await self._release(self._api, self._channels, self._kernel_id)

    async def _release(self, api: GatewayAPI | None, channels: KernelChannels | None, kernel_id: str | None) -> None:
        self._kernel_id = None
        self._kernel_died = None
        self._channels = None
        self._api = None
        self._fail_requests(NotConnectedError("the client was disconnected"))
        self._last = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(HTTP_TIMEOUT_SECONDS):
            try:
                if channels is not None:
                    await channels.aclose()
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
        await self._require_api().control(self.kernel_id, "interrupt")

    def _require_api(self) -> GatewayAPI:
        if self._api is None:
            raise self._context(NotConnectedError("the client has no kernel; call connect() or use 'async with'"))
        return self._api

    # -- the channels ----------------------------------------------------------------------

    async def _open_channels(self, api: GatewayAPI, kernel_id: str) -> None:
        self._closed_error = None
        self._kernel_died = None
        self._last = None
        channels = KernelChannels(
            http=api.http,
            ws_base_url=self.ws_base_url,
            kernel_id=kernel_id,
            session_id=self._session_id,
            ping_interval=self.ping_interval,
            on_message=self._on_message,
            on_closed=self._on_closed,
            kernel_gone=self._check_kernel_gone,
            on_oversized=self._on_oversized,
        )
        self._channels = channels
        await channels.open()

    def _on_message(self, message: dict[str, Any]) -> None:
        """Route one message to the request it answers (called by the reader; never waits)."""
        parent = _protocol.parent_id(message)
        if parent is None:
            if _protocol.is_kernel_death(message):
                self._kernel_gone(_KERNEL_DIED)
            return
        request = self._requests.get(parent)
        if request is not None:
            request.feed(message)

    def _on_oversized(self, size: int, limit: int) -> None:
        """A message too large to read was dropped: charge it to the execution under way."""
        execution = self._last
        if execution is not None and not execution.done.is_set():
            execution.drop_unreadable(size, (
                f"an output message of {size} bytes was dropped unread: more than the "
                f"{limit} bytes one WebSocket message may carry to this client"
            ))

    def _on_closed(self, error: BaseException) -> None:
        """The connection ended for good: every waiting request gets `error`."""
        if isinstance(error, ClientError):
            self._context(error)
        self._closed_error = error
        self._fail_requests(error)

    def _fail_requests(self, error: BaseException) -> None:
        for request in list(self._requests.values()):
            request.fail(error)

    async def _check_kernel_gone(self) -> bool:
        """After a drop: True (and everyone told) when the gateway says the kernel is gone."""
        api, kernel_id = self._api, self._kernel_id
        if api is None or kernel_id is None:
            return True
        if await api.probe_kernel(kernel_id) == "gone":
            self._kernel_gone(_KERNEL_GONE)
            return True
        return False

    def _kernel_gone(self, reason: str) -> None:
        """Remember that the kernel died; fail waiting and future executions until `reset()`."""
        if self._kernel_died is None:
            logger.warning("Kernel %s: %s", self._kernel_id, reason)
        self._kernel_died = reason
        self._fail_requests(self._died_error())

    def _died_error(self) -> KernelDiedError:
        reason = self._kernel_died or _KERNEL_DIED
        error = KernelDiedError(reason + "; call reset() for a fresh kernel")
        error.with_context(url=self.base_url, kernel_id=self._kernel_id)
        return error

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_frame(self._frame(message))

    def _frame(self, message: dict[str, Any]) -> str | bytes:
        """Encode `message` for the wire, refusing what a server would not take."""
        channels = self._channels
        if channels is None:
            raise self._context(NotConnectedError("the client has no kernel; call connect() or use 'async with'"))
        frame = channels.encode(message)
        size = len(frame)  # JSON frames are ASCII (json.dumps escapes the rest)
        if size > MAX_SEND_BYTES:
            raise ValueError(
                f"the request is {size} bytes on the wire, more than the {MAX_SEND_BYTES} bytes "
                f"(10 MiB) a Jupyter server accepts in one WebSocket message; send less code at a "
                f"time, or move data with upload()"
            )
        return frame

    async def _send_frame(self, frame: str | bytes) -> None:
        channels = self._channels
        if channels is None:
            raise self._context(NotConnectedError("the client has no kernel; call connect() or use 'async with'"))
        if self._closed_error is not None:
            raise self._closed_error
        try:
            await channels.send(frame)
        except ClientError as exc:
            raise self._context(exc) from exc.__cause__

    async def _request_reply(self, message: dict[str, Any], reply_type: str) -> dict[str, Any]:
        """Send a shell request and wait for its reply (no timeout here: the caller bounds it)."""
        msg_id = message["header"]["msg_id"]
        request = Reply(msg_id, reply_type)
        self._requests[msg_id] = request
        try:
            await self._send(message)
            await request.done.wait()
        finally:
            self._requests.pop(msg_id, None)
        if request.error is not None:
            raise request.error
        assert request.content is not None
        return request.content

    async def _wait_kernel_ready(self, timeout: float | None = None) -> None:
        """Wait for ``kernel_info_reply``, then enter `working_dir`; within the init timeout."""
        timeout = self.kernel_init_timeout if timeout is None else timeout
        with anyio.move_on_after(timeout):
            await self._request_reply(_protocol.kernel_info_request(session=self._session_id), "kernel_info_reply")
            if self.working_dir is not None:
                code = _kernel_setup.working_dir_cell(self.working_dir, self.cwd_reset_notice)
                request = _protocol.execute_request(code, session=self._session_id, store_history=False)
                reply = await self._request_reply(request, "execute_reply")
                if reply.get("status") != "ok":
                    raise self._context(KernelStartError(
                        f"the kernel could not enter its working_dir {self.working_dir!r}: "
                        f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"
                    ))
            return
        raise self._context(KernelStartError(f"the kernel did not answer and start within {timeout:g} seconds"))

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
        in the kernel (within `CONTROL_TIMEOUT_SECONDS`), so the next call starts on a free
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
                `LIVENESS_PROBE_SECONDS` after it fell silent; its state is intact.
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
        return ExecutionStream(lambda: self._run(code, seconds, store_history, limit))

    async def _run(
        self, code: str, timeout: float | None, store_history: bool, limit: int | None
    ) -> AsyncIterator[OutputChunk | ExecutionResult]:
        kernel_id = self.kernel_id
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        request = _protocol.execute_request(code, session=self._session_id, store_history=store_history)
        msg_id = request["header"]["msg_id"]
        builder = ResultBuilder(self.images_dir, limit)
        execution = Execution(msg_id, builder)
        sent = False
        try:
            async with self._turn:
                previous = self._last
                if previous is not None:
                    if not previous.done.is_set() and not previous.abandoned:
                        # Another task is still reading an earlier execution: one at a time.
                        if not await previous.wait_done(deadline - anyio.current_time()):
                            await self._handle_timeout(kernel_id, previous, timeout)
                    if previous.done.is_set() or previous.abandoned:
                        # Nobody reads an abandoned execution; the kernel runs requests in order.
                        self._requests.pop(previous.msg_id, None)
                if self._kernel_died is not None:
                    raise self._died_error()
                frame = self._frame(request)
                self._requests[msg_id] = execution
                self._last = execution
                try:
                    await self._send_frame(frame)
                except BaseException:
                    self._last = previous
                    raise
                sent = True
            while True:
                for item in execution.take():
                    if isinstance(item, int):
                        output = builder.pending_output(item)
                        images: list[Path] = []
                        problems: list[str] = []
                        if any(mime in output.data for mime in IMAGE_EXTENSIONS):
                            # Writing files blocks: off the event loop (only when there are any).
                            images, problems = await anyio.to_thread.run_sync(save_images, output.data, self.images_dir)
                        chunk = builder.complete_rich(item, images, problems)
                        if chunk:
                            yield chunk
                    else:
                        yield item
                if execution.done.is_set() and not execution.pending:
                    break
                now = anyio.current_time()
                if now >= deadline:
                    await self._handle_timeout(kernel_id, execution, timeout)
                if now - execution.last_message_at >= LIVENESS_PROBE_SECONDS:
                    await self._probe_liveness(kernel_id, execution, deadline)
                    execution.last_message_at = anyio.current_time()
                    continue
                await execution.wait(min(deadline, execution.last_message_at + LIVENESS_PROBE_SECONDS) - now)
        except anyio.get_cancelled_exc_class():
            if sent and not execution.done.is_set():
                await self._interrupt_abandoned(kernel_id)
            raise
        finally:
            if execution.done.is_set() or not sent:
                self._requests.pop(msg_id, None)
            else:
                # Left early (timeout, cancellation, a loop that stopped): nobody reads it now.
                execution.abandoned = True
        if execution.error is not None:
            raise execution.error
        assert execution.reply is not None
        self._raise_for_reply(execution.reply)
        if builder.execution_count is None:
            count = execution.reply.get("execution_count")
            builder.execution_count = count if isinstance(count, int) else None
        self._requests.pop(msg_id, None)
        yield builder.build()

    def _raise_for_reply(self, reply: dict[str, Any]) -> None:
        status = reply.get("status")
        if status == "error":
            raise ExecutionError(
                str(reply.get("ename", "Error")),
                str(reply.get("evalue", "")),
                [strip_ansi(line) for frame in reply.get("traceback", []) for line in str(frame).splitlines()],
                url=self.base_url,
                kernel_id=self._kernel_id,
            )
        if status == "aborted":
            raise ExecutionError("ExecutionAborted", "the kernel aborted the execution",
                                 url=self.base_url, kernel_id=self._kernel_id)

    async def _probe_liveness(self, kernel_id: str, execution: Execution, deadline: float) -> None:
        """After a silence, ask the gateway about the kernel: Jupyter Server keeps the WebSocket
        open when a kernel is shut down or culled, and a stopped process sends nothing, so in
        both cases nothing else would ever arrive."""
        api = self._api
        if api is None:
            return
        with anyio.move_on_after(max(min(deadline - anyio.current_time(), CONTROL_TIMEOUT_SECONDS), 0)):
            probe = await api.probe_kernel(kernel_id)
            if probe == "gone":
                self._kernel_gone(_KERNEL_GONE)
            elif probe == "stopped":
                logger.warning("Kernel %s: its process is stopped (SIGSTOP or SIGTSTP)", kernel_id)
                execution.fail(self._context(KernelStoppedError(_KERNEL_STOPPED)))

    async def _interrupt_abandoned(self, kernel_id: str) -> None:
        """A cancelled execution: interrupt its code so the next call starts on a free kernel."""
        api = self._api
        if api is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CONTROL_TIMEOUT_SECONDS):
            try:
                await api.control(kernel_id, "interrupt")
            except ClientError as exc:
                logger.warning("Kernel %s: could not interrupt a cancelled execution: %s", kernel_id, exc)

    async def _handle_timeout(self, kernel_id: str, execution: Execution, timeout: float | None) -> None:
        """Interrupt; if the kernel stays busy, restart it. Always raises a `TimeoutError`."""
        seconds = float(timeout or 0)
        prefix = f"the execution did not finish within {seconds:g} seconds"
        api = self._require_api()

        def timeout_error(message: str, state_kept: bool | None) -> ExecutionTimeoutError:
            error = ExecutionTimeoutError(message, timeout=seconds, state_kept=state_kept)
            error.with_context(url=self.base_url, kernel_id=kernel_id)
            return error

        try:
            await api.control(kernel_id, "interrupt")
            if await execution.wait_done(INTERRUPT_GRACE_SECONDS):
                raise timeout_error(f"{prefix}; the kernel was interrupted and its state is kept", True)
            logger.warning("Kernel %s ignored the interrupt for %gs; restarting it", kernel_id, INTERRUPT_GRACE_SECONDS)
            await api.control(kernel_id, "restart")
            execution.fail(timeout_error(f"{prefix}; the kernel was restarted", False))
            await self._wait_kernel_ready(KERNEL_READY_TIMEOUT_SECONDS)
        except ClientError as exc:
            if isinstance(exc, ExecutionTimeoutError):
                raise
            raise timeout_error(f"{prefix}, and stopping it failed ({exc}); the kernel's state is unknown", None) from exc
        raise timeout_error(f"{prefix} and it ignored the interrupt; the kernel was restarted and its state is lost", False)

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
