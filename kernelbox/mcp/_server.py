"""``kernelbox mcp``: one stateful kernel served as Model Context Protocol tools.

Desktop agents (Claude Desktop, IDEs, ...) launch the server over stdio; streamable HTTP is an
option. It is built on the official ``mcp`` SDK (2.x, ``MCPServer``), an optional extra:
``pip install 'kernelbox[mcp]'``. Importing ``kernelbox`` never imports it.

Tools: ``execute_code``, ``interrupt_kernel``, ``reset_kernel``, ``upload_file``,
``download_file``. One gateway and one client per server process: the gateway starts in the
background as the server starts (a tool call that comes first waits for it) and is stopped,
kernels included, when the server exits. The SDK runs requests concurrently, so
``interrupt_kernel`` reaches a kernel whose ``execute_code`` is still running.

Long executions report progress (``notifications/progress``) when the caller sent a progress
token: output as it is printed, and at least every `HEARTBEAT_SECONDS` while nothing is
printed, so clients that reset their timeout on progress do not give up.

Text that came from the kernel (output, tracebacks, progress, error messages) carries no
terminal controls: MCP clients show it in terminals too, so it passes through
`neutralise_controls` for a non-terminal (no colour, ``\\r`` as ``\\n``). A downloaded file is
the exception: ``download_file`` returns its bytes as they are.

Streamable HTTP needs a bearer token on every request (`kernelbox.mcp._auth`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import mimetypes
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import anyio

try:
    from mcp import types
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "kernelbox's MCP server needs the official MCP SDK: pip install 'kernelbox[mcp]'"
    ) from exc
from pydantic import Field

from .._errors import InvalidStateError, KernelboxError, KernelDiedError
from .._net import is_loopback_host
from .._terminal import neutralise_controls
from ..client._results import ExecutionResult
from ..client.kernel_client import KernelClient
from ..client.transfer import ALLOW_OUTSIDE_HINT, FileTransferError
from ..gateway.config import GatewayConfig
from ..gateway.gateway import KernelGateway
from ..integrations.tool import CodeOutcome, run_code
from ._auth import TOKEN_ENV, BearerTokenMiddleware, check_token, generate_token, remove_token_file, write_token_file

logger = logging.getLogger("kernelbox.mcp")

__all__ = ["McpOptions", "build_server", "run", "serve"]

DEFAULT_EXECUTE_TIMEOUT_SECONDS = 120.0
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
# File content travels inside MCP messages (base64): keep them reasonable for an agent.
MAX_TRANSFER_BYTES = 16 * 1024 * 1024
# Printed output is sent as progress at most this often, batched in between.
PROGRESS_INTERVAL_SECONDS = 0.5
# A progress notification at least this often while an execution prints nothing.
HEARTBEAT_SECONDS = 10.0
MAX_PROGRESS_MESSAGE_CHARS = 4000
_SHUTDOWN_TIMEOUT_SECONDS = 30.0
_INTERRUPT_TIMEOUT_SECONDS = 5.0
# Image types that agents' models accept as image content; SVG is listed by path only.
_INLINE_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

INSTRUCTIONS = """\
A stateful Python kernel (IPython), like a notebook: variables, imports and definitions persist
across execute_code calls until reset_kernel. Plots (matplotlib) come back as images. Files in
the kernel's working directory can be written with upload_file and read with download_file.
Use interrupt_kernel to stop a long-running execution."""


def _loopback_gateway(options: Mapping[str, Any] | None = None) -> GatewayConfig:
    """The config of the server's own gateway: the gateway `options` among a command's options
    (see `GatewayConfig.from_options`), on the loopback and a port of its own; the MCP server's
    own ``host`` and ``port`` options are never the gateway's."""
    return GatewayConfig.from_options({"log_level": "WARNING", **(options or {})}, host="127.0.0.1", port=0)


@dataclass
class McpOptions:
    """How the server gets its kernel.

    Attributes:
        gateway: the gateway the server starts (its kernels' working directory, sandbox,
            environment, ...; see `KernelGateway`); built by `_loopback_gateway`, it listens on
            the loopback only. Unused with `connection_file`.
        images_dir: where images are saved.
        max_output_bytes: text output kept per execution; None: no limit.
        connection_file: use the gateway of a running ``kernelbox serve --connection-file``
            instead of starting one.
    """

    gateway: GatewayConfig = field(default_factory=_loopback_gateway)
    images_dir: Path = field(default_factory=lambda: Path("images"))
    max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES
    connection_file: Path | None = None


class KernelRuntime:
    """The server's one gateway and one connected client, started once and stopped on exit."""

    def __init__(self, options: McpOptions) -> None:
        self.options = options
        self._lock = anyio.Lock()
        self._gateway: KernelGateway | None = None
        self._client: KernelClient | None = None
        self._closed = False

    async def client(self) -> KernelClient:
        """The connected client, starting the gateway and kernel first if needed.

        Raises:
            KernelboxError: the gateway or kernel could not be started (retried on the next call).
        """
        async with self._lock:
            if self._closed:
                raise InvalidStateError("the MCP server is shutting down")
            if self._client is None:
                await self._start()
            assert self._client is not None
            return self._client

    async def warm_up(self) -> None:
        """Start the gateway and kernel now, so the first tool call does not wait; log failures."""
        try:
            await self.client()
        except (KernelboxError, OSError, ValueError) as exc:
            logger.error("Could not start the kernel (the next tool call retries): %s", exc)

    async def _start(self) -> None:
        options = self.options
        if options.connection_file is not None:
            client = KernelClient.from_connection_file(
                options.connection_file, images_dir=options.images_dir,
                max_output_bytes=options.max_output_bytes,
            )
        else:
            if self._gateway is None:  # kept when only the kernel failed to start last time
                gateway = KernelGateway.from_config(options.gateway)
                await gateway.start()
                self._gateway = gateway
            client = KernelClient(
                base_url=self._gateway.url, token=self._gateway.token, images_dir=options.images_dir,
                max_output_bytes=options.max_output_bytes,
            )
        await client.connect()
        self._client = client
        logger.info("Kernel %s ready", client.kernel_id)

    async def aclose(self) -> None:
        """Shut the kernel and the gateway down (shielded from cancellation, bounded)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SHUTDOWN_TIMEOUT_SECONDS):
            async with self._lock:
                self._closed = True
                client, self._client = self._client, None
                gateway, self._gateway = self._gateway, None
                if client is not None:
                    await client.disconnect()
                if gateway is not None:
                    await gateway.stop()


# -- results as MCP content ------------------------------------------------------------------


def _image_contents(paths: Sequence[Path]) -> tuple[list[types.ImageContent], list[str]]:
    contents, notes = [], []
    for path in paths:
        mime = _INLINE_IMAGE_TYPES.get(path.suffix.lower())
        if mime is None:
            notes.append(f"[image saved: {path} (not inlined: {path.suffix} is not PNG or JPEG)]")
            continue
        contents.append(types.ImageContent(data=base64.b64encode(path.read_bytes()).decode("ascii"), mime_type=mime))
        notes.append(f"[image saved: {path}]")
    return contents, notes


def result_content(result: ExecutionResult) -> list[types.ContentBlock]:
    """An execution's text, then one image content per PNG/JPEG image, with saved paths."""
    images, notes = _image_contents(result.images)
    lines = [_plain(result.text)] if result.text else []
    lines += notes
    if result.truncated:
        lines.append("[output truncated: the server's --max-output-bytes limit was reached]")
    text = "\n".join(lines) or "(no output)"
    return [types.TextContent(text=text), *images]


def _plain(text: str) -> str:
    """Kernel text without terminal controls (MCP clients show results in terminals too)."""
    return neutralise_controls(text, tty=False)


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=_plain(text))], is_error=True)


def _has_progress_token(ctx: Context) -> bool:
    meta = getattr(ctx.request_context, "meta", None) or {}
    return bool(meta.get("progress_token") or meta.get("progressToken"))


class _Progress:
    """Batches printed output into progress notifications, with a heartbeat while silent."""

    def __init__(self, ctx: Context, timeout: float | None) -> None:
        self._ctx = ctx
        self._timeout = timeout
        self._started = anyio.current_time()
        self._last_sent = self._started
        self._pending: list[str] = []

    def add(self, text: str) -> None:
        self._pending.append(text)

    async def tick(self) -> None:
        """Send pending output, or a heartbeat when nothing was sent for a while."""
        now = anyio.current_time()
        if not self._pending and now - self._last_sent < HEARTBEAT_SECONDS:
            return
        elapsed = now - self._started
        if self._pending:
            message = _plain("".join(self._pending))
            self._pending.clear()
            if len(message) > MAX_PROGRESS_MESSAGE_CHARS:
                message = "…" + message[-MAX_PROGRESS_MESSAGE_CHARS:]
        else:
            message = f"still running after {elapsed:.0f} s"
        self._last_sent = now
        await self._ctx.report_progress(elapsed, self._timeout, message)

    async def run(self) -> None:
        # A timer, not synchronisation: it paces the notifications.
        while True:
            await anyio.sleep(PROGRESS_INTERVAL_SECONDS)
            await self.tick()


# -- the server -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _tool_errors(action: str) -> AsyncIterator[None]:
    """Turn kernelbox's anticipated errors into `ToolError`s, whose text the model gets to read."""
    try:
        yield
    except KernelDiedError as exc:
        raise ToolError(_plain(f"{exc}. Call reset_kernel to get a fresh kernel.")) from exc
    except FileTransferError as exc:
        # The Python API's hint (allow_outside=True) is not something a tool caller can pass.
        raise ToolError(_plain(f"{action} failed: {str(exc).removesuffix(ALLOW_OUTSIDE_HINT)}")) from exc
    except (KernelboxError, OSError, ValueError) as exc:
        raise ToolError(_plain(f"{action} failed: {exc}")) from exc


async def _interrupt_quietly(client: KernelClient) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(_INTERRUPT_TIMEOUT_SECONDS):
        with contextlib.suppress(KernelboxError):
            await client.interrupt()


def build_server(runtime: KernelRuntime) -> MCPServer:
    """The MCP server whose tools drive `runtime`'s kernel."""
    server = MCPServer("kernelbox", instructions=INSTRUCTIONS)

    @server.tool(
        annotations=types.ToolAnnotations(title="Execute Python code", read_only_hint=False,
                                          destructive_hint=True, idempotent_hint=False, open_world_hint=True),
    )
    async def execute_code(
        code: Annotated[str, Field(description="Python source; the last expression's value is shown, "
                                               "as in a notebook cell")],
        ctx: Context,
        timeout: Annotated[float, Field(gt=0, description="seconds before the run is interrupted")]
        = DEFAULT_EXECUTE_TIMEOUT_SECONDS,
    ) -> types.CallToolResult:
        """Run Python code in the stateful kernel and return its output and images.

        Variables, imports and definitions persist between calls. Printed output, results and
        errors (with traceback) come back as text; each plot comes back as an image.
        """
        async with _tool_errors("Starting the kernel"):
            client = await runtime.client()
        progress = _Progress(ctx, timeout) if _has_progress_token(ctx) else None
        outcome: CodeOutcome | None = None
        failure: KernelboxError | None = None
        try:
            async with anyio.create_task_group() as tg:
                if progress is not None:
                    tg.start_soon(progress.run)
                try:
                    outcome = await run_code(client, code, timeout=timeout,
                                             on_output=progress.add if progress is not None else None)
                except KernelboxError as exc:  # kept out of the task group's exception group
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            # The caller cancelled the request: stop the code too rather than leave it running.
            await _interrupt_quietly(client)
            raise
        if failure is not None:
            async with _tool_errors("The execution"):
                raise failure
        assert outcome is not None
        if outcome.result is None:  # the code raised or timed out: output so far, then the error
            return _error_result(outcome.text)
        return types.CallToolResult(content=result_content(outcome.result))

    @server.tool(annotations=types.ToolAnnotations(title="Interrupt the kernel", idempotent_hint=True))
    async def interrupt_kernel() -> str:
        """Interrupt the running execution (like Ctrl-C); variables are kept."""
        async with _tool_errors("Interrupting the kernel"):
            client = await runtime.client()
            await client.interrupt()
        return "Interrupt sent; a running execution stops with KeyboardInterrupt. Variables are kept."

    @server.tool(annotations=types.ToolAnnotations(title="Reset the kernel", destructive_hint=True))
    async def reset_kernel() -> str:
        """Replace the kernel with a fresh one: all variables and imports are lost."""
        async with _tool_errors("Resetting the kernel"):
            client = await runtime.client()
            await client.reset()
        return "The kernel was reset: a fresh kernel with no variables or imports."

    @server.tool(annotations=types.ToolAnnotations(title="Write a file in the kernel", destructive_hint=True))
    async def upload_file(
        path: Annotated[str, Field(description="destination, relative to the kernel's working directory")],
        content: Annotated[str | None, Field(description="the file's text (written as UTF-8)")] = None,
        content_base64: Annotated[str | None, Field(description="the file's bytes, base64-encoded")] = None,
    ) -> str:
        """Write a file into the kernel's working directory; give content (text) or content_base64."""
        if (content is None) == (content_base64 is None):
            raise ToolError("give exactly one of content (text) or content_base64 (bytes)")
        if content is not None:
            data = content.encode("utf-8")
        else:
            try:
                data = base64.b64decode(content_base64 or "", validate=True)
            except ValueError as exc:
                raise ToolError(f"content_base64 is not valid base64: {exc}") from exc
        async with _tool_errors("The upload"):
            client = await runtime.client()
            written = await client.upload(data, path, max_bytes=MAX_TRANSFER_BYTES)
        return f"Wrote {len(data)} bytes to {written}"

    @server.tool(annotations=types.ToolAnnotations(title="Read a file from the kernel", read_only_hint=True))
    async def download_file(
        path: Annotated[str, Field(description="the file, relative to the kernel's working directory")],
    ) -> types.CallToolResult:
        """Read a file from the kernel's working directory; text files come back as text, others as base64."""
        async with _tool_errors("The download"):
            client = await runtime.client()
            data = await client.download(path, max_bytes=MAX_TRANSFER_BYTES)
        return types.CallToolResult(content=[
            types.TextContent(text=f"{path}: {len(data)} bytes"),
            types.EmbeddedResource(resource=file_resource(path, data)),
        ])

    return server


def file_resource(path: str, data: bytes) -> types.TextResourceContents | types.BlobResourceContents:
    """A downloaded file as an embedded resource: text when it is UTF-8, else base64 bytes."""
    uri = "kernel:///" + quote(path.lstrip("/"))
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return types.BlobResourceContents(uri=uri, mime_type=mime, blob=base64.b64encode(data).decode("ascii"))
    return types.TextResourceContents(uri=uri, mime_type=mime if mime.startswith("text/") else "text/plain",
                                      text=text)


async def serve(
    options: McpOptions,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    token_file: Path | None = None,
) -> None:
    """Run the MCP server until its transport closes or SIGINT/SIGTERM arrive; then stop the kernel.

    Args:
        options: how to get the kernel.
        transport: ``"stdio"`` or ``"streamable-http"`` (served at ``http://host:port/mcp``).
        host: streamable HTTP: the interface, which must be a loopback address (the token
            travels in clear text: there is no TLS).
        port: streamable HTTP: the TCP port (0 picks a free one; it is logged).
        token: streamable HTTP: the bearer token every request must carry
            (``Authorization: Bearer <token>``); None: a random one, logged once on stderr
            unless `token_file` is given.
        token_file: streamable HTTP: write the token to this file (mode 0600) instead of
            logging it; removed on exit.

    Raises:
        ValueError: an unknown transport, a non-loopback `host`, a token that is too short,
            or `token`/`token_file` with stdio.
        OSError: `token_file` could not be written.
    """
    if transport not in ("stdio", "streamable-http"):
        raise ValueError(f"transport must be 'stdio' or 'streamable-http', not {transport!r}")
    if transport == "stdio" and (token is not None or token_file is not None):
        raise ValueError(f"a token (${TOKEN_ENV}, --token-file) is for streamable-http; stdio needs none")
    if transport == "streamable-http" and not is_loopback_host(host):
        raise ValueError(
            f"refusing to serve MCP on {host!r}: its tools run arbitrary code and the token travels "
            "without TLS; bind to 127.0.0.1 and put a TLS-terminating, authenticating proxy in front "
            "for remote use"
        )
    generated = token is None
    bearer = generate_token() if token is None else check_token(token)
    runtime = KernelRuntime(options)
    server = build_server(runtime)
    http_server = listener = None
    written: Path | None = None
    try:
        if transport == "streamable-http":
            # Bound here, before serving: the real port is known (and logged) even for port 0.
            listener = socket.create_server((host.strip("[]"), port), family=_family(host))
            url = f"http://{host}:{listener.getsockname()[1]}/mcp"
            http_server = _http_server(server, host, bearer)
            if hasattr(os, "geteuid") and os.geteuid() == 0 and not options.gateway.sandbox \
                    and options.connection_file is None:
                logger.warning("Serving MCP over HTTP as root without --sandbox: anyone holding the "
                               "token runs code as root on this machine")
            if token_file is not None:
                written = write_token_file(token_file, bearer)
                logger.info("Wrote the MCP bearer token to %s (mode 0600)", written)
            elif generated:
                logger.info("MCP bearer token: %s (send it as 'Authorization: Bearer <token>')", bearer)
            logger.info("Serving MCP (streamable HTTP) at %s", url)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        logger.info("Received %s; stopping", signal.Signals(signum).name)
                        if http_server is not None:
                            http_server.should_exit = True  # graceful: finish requests, then return
                        else:
                            tg.cancel_scope.cancel()
                        return

                tg.start_soon(stop_on_signal)
                tg.start_soon(runtime.warm_up)
                if http_server is not None:
                    await http_server.serve(sockets=[listener])
                else:
                    await server.run_stdio_async()
                tg.cancel_scope.cancel()
    finally:
        if listener is not None:
            listener.close()
        if written is not None:
            remove_token_file(written, bearer)
        await runtime.aclose()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _http_server(server: MCPServer, host: str, token: str) -> Any:
    """A uvicorn server for the streamable HTTP app, behind the bearer token, that leaves
    signals to `serve`."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # serve() owns SIGINT/SIGTERM; uvicorn's own capture would also re-raise them.
            yield

    app = BearerTokenMiddleware(server.streamable_http_app(host=host), token)
    return Server(uvicorn.Config(app, log_level="warning"))


# Options that configure the server's own gateway, which --connection-file replaces.
_GATEWAY_OPTIONS = ("sandbox", "sandbox_config", "env", "working_dir")


def _options_from_args(args: argparse.Namespace) -> McpOptions:
    given = vars(args)  # gateway options are present only when given (`kernelbox._options`)
    if args.connection_file is not None and any(name in given for name in _GATEWAY_OPTIONS):
        raise SystemExit("kernelbox mcp: --connection-file uses a running gateway; its --sandbox, "
                         "--sandbox-config, --env and --working-dir are set where it was started")
    gateway = _loopback_gateway(given)
    # Desktop agents often start servers in "/": keep images beside the work, not there.
    images_dir = args.images_dir or gateway.resolved_working_dir / "images"
    return McpOptions(
        gateway=gateway,
        images_dir=images_dir.absolute(),  # not resolved: opened at write time (KernelClient)
        max_output_bytes=args.max_output_bytes if args.max_output_bytes > 0 else None,
        connection_file=args.connection_file,
    )


def run(args: argparse.Namespace) -> int:
    """``kernelbox mcp``: parse-time arguments in, exit status out. Logs go to stderr only:
    on stdio, stdout carries the protocol."""
    # Read and removed at once, so the gateway and kernels started from here never inherit it.
    token = os.environ.pop(TOKEN_ENV, None)
    logger.setLevel(logging.INFO)  # the "Serving ... at URL" line, on stderr
    try:
        options = _options_from_args(args)  # bad gateway options: ValueError or TypeError
        anyio.run(lambda: serve(options, transport=args.transport, host=args.host, port=args.port,
                                token=token, token_file=args.token_file))
    except KeyboardInterrupt:
        return 130
    except (KernelboxError, ValueError, TypeError, OSError) as exc:
        print(f"kernelbox mcp: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, KernelboxError) else 2
    return 0
