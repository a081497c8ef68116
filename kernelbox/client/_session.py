"""One kernel's session: its channels, message routing, request/reply and kernel-death state.

`KernelSession` exists from a successful ``POST /api/kernels`` to `disconnect()`. It opens the
kernel's WebSocket (`KernelChannels`), files every message it reads with the request it answers
(by the parent's ``msg_id``; see `kernelbox.client._execution`), sends requests, and remembers
when the kernel died, so waiting and later requests fail with `KernelDiedError` until `reset()`.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from .. import _protocol
from .._errors import ClientError, KernelDiedError, KernelStartError, NotConnectedError
from . import _kernel_setup
from ._channels import MAX_SEND_BYTES, KernelChannels
from ._execution import Execution, Reply
from ._http import GatewayAPI

logger = logging.getLogger("kernelbox.client")

__all__ = ["KERNEL_DIED", "KERNEL_GONE", "NOT_CONNECTED", "KernelSession"]

KERNEL_GONE = (
    "the kernel no longer exists on the gateway (it was shut down or culled, or the gateway "
    "restarted); its state is lost"
)
KERNEL_DIED = (
    "the kernel died (its process exited: a crash, os._exit, a signal or the out-of-memory "
    "killer); its state is lost"
)
NOT_CONNECTED = "the client has no kernel; call connect() or use 'async with'"


class KernelSession:
    """The live connection to one kernel: channels, routing and the kernel's fate.

    Args:
        api: the gateway's REST API (owned by the caller).
        ws_base_url: e.g. ``"ws://127.0.0.1:8888"``.
        kernel_id: the kernel, already created.
        session_id: the Jupyter session id of the client's messages.
        ping_interval: seconds between WebSocket keepalive pings; None: none.
        working_dir: the directory the kernel enters when ready (see `wait_ready`), or None.
        cwd_reset_notice: the notice printed after a cell that left `working_dir`.

    Attributes:
        last: the latest execution submitted (the one output is charged to when a message
            is too large to read); None before the first.
    """

    def __init__(
        self,
        *,
        api: GatewayAPI,
        ws_base_url: str,
        kernel_id: str,
        session_id: str,
        ping_interval: float | None,
        working_dir: str | None,
        cwd_reset_notice: str,
    ) -> None:
        self.api = api
        self.kernel_id = kernel_id
        self.session_id = session_id
        self.last: Execution | None = None
        self._working_dir = working_dir
        self._cwd_reset_notice = cwd_reset_notice
        self._requests: dict[str, Execution | Reply] = {}
        self._closed_error: BaseException | None = None
        self._kernel_died: str | None = None
        self._disconnected = False
        self.channels = KernelChannels(
            http=api.http,
            ws_base_url=ws_base_url,
            kernel_id=kernel_id,
            session_id=session_id,
            ping_interval=ping_interval,
            on_message=self._on_message,
            on_closed=self._on_closed,
            kernel_gone=self._check_kernel_gone,
            on_oversized=self._on_oversized,
        )

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self.api.base_url

    @property
    def disconnected(self) -> bool:
        """True once `aclose()` was called: the client let go of this kernel."""
        return self._disconnected

    def context(self, error: ClientError) -> ClientError:
        """`error` with this session's gateway URL and kernel id (where not set yet)."""
        return error.with_context(url=self.url, kernel_id=self.kernel_id)

    async def open(self) -> None:
        """Open the kernel's WebSocket.

        Raises:
            GatewayConnectionError: it could not be opened.
        """
        await self.channels.open()

    async def aclose(self) -> None:
        """Fail every waiting request with `NotConnectedError` and close the WebSocket."""
        self._disconnected = True
        self.fail_requests(NotConnectedError("the client was disconnected"))
        self.last = None
        await self.channels.aclose()

    # -- routing (called by the reader task; never waits) ------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        """Route one message to the request it answers."""
        parent = _protocol.parent_id(message)
        if parent is None:
            if _protocol.is_kernel_death(message):
                self.kernel_gone(KERNEL_DIED)
            return
        request = self._requests.get(parent)
        if request is not None:
            request.feed(message)

    def _on_oversized(self, size: int, limit: int) -> None:
        """A message too large to read was dropped: charge it to the execution under way."""
        execution = self.last
        if execution is not None and not execution.done.is_set():
            execution.drop_unreadable(size, (
                f"an output message of {size} bytes was dropped unread: more than the "
                f"{limit} bytes one WebSocket message may carry to this client"
            ))

    def _on_closed(self, error: BaseException) -> None:
        """The connection ended for good: every waiting request gets `error`."""
        if isinstance(error, ClientError):
            self.context(error)
        self._closed_error = error
        self.fail_requests(error)

    def fail_requests(self, error: BaseException) -> None:
        """End every request still waiting with `error`."""
        for request in list(self._requests.values()):
            request.fail(error)

    def register(self, execution: Execution) -> None:
        """File the messages answering `execution` with it, from now on."""
        self._requests[execution.msg_id] = execution

    def forget(self, msg_id: str) -> None:
        """Stop filing messages for `msg_id` (those still arriving are dropped)."""
        self._requests.pop(msg_id, None)

    # -- the kernel's fate -------------------------------------------------------------------

    async def _check_kernel_gone(self) -> bool:
        """After a drop: True (and everyone told) when the gateway says the kernel is gone."""
        if await self.api.probe_kernel(self.kernel_id) == "gone":
            self.kernel_gone(KERNEL_GONE)
            return True
        return False

    def kernel_gone(self, reason: str) -> None:
        """Remember that the kernel died; fail waiting and future requests until `reset()`."""
        if self._kernel_died is None:
            logger.warning("Kernel %s: %s", self.kernel_id, reason)
        self._kernel_died = reason
        self.fail_requests(self.died_error())

    @property
    def kernel_died(self) -> bool:
        """True once the kernel is known to be dead or gone."""
        return self._kernel_died is not None

    def died_error(self) -> KernelDiedError:
        """The error for a request to a dead kernel, saying why it died."""
        reason = self._kernel_died or KERNEL_DIED
        error = KernelDiedError(reason + "; call reset() for a fresh kernel")
        error.with_context(url=self.url, kernel_id=self.kernel_id)
        return error

    # -- sending -----------------------------------------------------------------------------

    def frame(self, message: dict[str, Any]) -> str | bytes:
        """Encode `message` for the wire, refusing what a server would not take.

        Raises:
            ValueError: the frame is larger than `MAX_SEND_BYTES`.
        """
        frame = self.channels.encode(message)
        size = len(frame)  # JSON frames are ASCII (json.dumps escapes the rest)
        if size > MAX_SEND_BYTES:
            raise ValueError(
                f"the request is {size} bytes on the wire, more than the {MAX_SEND_BYTES} bytes "
                f"(10 MiB) a Jupyter server accepts in one WebSocket message; send less code at a "
                f"time, or move data with upload()"
            )
        return frame

    async def send_frame(self, frame: str | bytes) -> None:
        """Send one frame from `frame`.

        Raises:
            NotConnectedError: the client disconnected from this kernel.
            GatewayConnectionError: the connection is closed for good, or sending failed.
        """
        self.check_connected()
        if self._closed_error is not None:
            raise self._closed_error
        try:
            await self.channels.send(frame)
        except ClientError as exc:
            raise self.context(exc) from exc.__cause__

    def check_connected(self) -> None:
        """Raise `NotConnectedError` when the client let go of this kernel."""
        if self._disconnected:
            raise self.context(NotConnectedError(NOT_CONNECTED))

    async def request_reply(self, message: dict[str, Any], reply_type: str) -> dict[str, Any]:
        """Send a shell request and wait for its reply's content (no timeout here: the caller bounds it).

        Raises:
            KernelDiedError, GatewayConnectionError, NotConnectedError: the reply cannot come.
        """
        msg_id = message["header"]["msg_id"]
        request = Reply(msg_id, reply_type)
        self._requests[msg_id] = request
        try:
            await self.send_frame(self.frame(message))
            await request.done.wait()
        finally:
            self._requests.pop(msg_id, None)
        if request.error is not None:
            raise request.error
        assert request.content is not None
        return request.content

    async def wait_ready(self, timeout: float) -> None:
        """Wait for ``kernel_info_reply``, then enter the working directory, within `timeout` seconds.

        Raises:
            KernelStartError: the kernel did not answer in time, or could not enter its
                working directory.
        """
        with anyio.move_on_after(timeout):
            await self.request_reply(_protocol.kernel_info_request(session=self.session_id), "kernel_info_reply")
            if self._working_dir is not None:
                code = _kernel_setup.working_dir_cell(self._working_dir, self._cwd_reset_notice)
                request = _protocol.execute_request(code, session=self.session_id, store_history=False)
                reply = await self.request_reply(request, "execute_reply")
                if reply.get("status") != "ok":
                    raise self.context(KernelStartError(
                        f"the kernel could not enter its working_dir {self._working_dir!r}: "
                        f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"
                    ))
            return
        raise self.context(KernelStartError(f"the kernel did not answer and start within {timeout:g} seconds"))
