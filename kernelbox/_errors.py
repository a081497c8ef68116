"""The kernelbox exception tree.

Every error kernelbox raises on purpose is a `KernelboxError`; third-party errors (httpx,
httpx-ws, OS errors) are translated into it at one boundary, with the original chained as
``__cause__``. Timeouts are also instances of the built-in `TimeoutError`, so
``except TimeoutError`` works as users expect.

```
KernelboxError
├── InvalidStateError            a call the object's state does not allow (also a RuntimeError)
├── GatewayError                 the gateway process
│   ├── GatewayStartError        did not start, or did not answer in time (has .log_lines)
│   └── GatewayExitedError       exited while it should have been running (has .returncode)
├── SandboxError                 the OS sandbox
│   ├── SandboxUnavailableError  a prerequisite is missing (bwrap, srt, ...)
│   └── SandboxConfigError       the sandbox settings are unreadable or invalid (has .source, .key)
├── ClientError                  talking to a gateway and its kernels (has .url, .kernel_id, .status_code)
│   ├── NotConnectedError        no kernel yet, or the client was disconnected
│   ├── GatewayConnectionError   nothing answered at the URL, or the connection dropped
│   ├── AuthenticationError      the gateway refused the token (HTTP 401/403)
│   ├── KernelStartError         the kernel could not be created (has .kernelspecs)
│   ├── KernelDiedError          the kernel process died
│   ├── KernelStoppedError       the kernel process is stopped (SIGSTOP/SIGTSTP)
│   ├── ExecutionTimeoutError    an execution ran past its timeout (also a TimeoutError)
│   └── FileTransferError        an upload or download was refused or failed (has .reason)
└── ExecutionError               user code raised (has .ename, .evalue, .traceback)
```

Errors carry what callers need as attributes, so nobody parses messages: `ClientError` and
`ExecutionError` have ``.url`` (the gateway's base URL) and ``.kernel_id`` (None when no kernel
was involved yet); a `ClientError` caused by an HTTP answer has its ``.status_code``;
`KernelStartError` for an unknown kernelspec lists the available ones in ``.kernelspecs``;
`SandboxConfigError` names the settings' ``.source`` and the offending ``.key``;
`GatewayExitedError` has the process's ``.returncode``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthenticationError",
    "ClientError",
    "ExecutionError",
    "ExecutionTimeoutError",
    "FileTransferError",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayExitedError",
    "GatewayStartError",
    "InvalidStateError",
    "KernelDiedError",
    "KernelStartError",
    "KernelStoppedError",
    "KernelboxError",
    "NotConnectedError",
    "SandboxConfigError",
    "SandboxError",
    "SandboxUnavailableError",
]


class KernelboxError(Exception):
    """Base class of every error kernelbox raises on purpose."""


class InvalidStateError(KernelboxError, RuntimeError):
    """A call that the object's current state does not allow.

    For example `KernelGateway.start` on a gateway that was started already, `KernelClient.connect`
    on a connected client, or reading an execution's result before it finished. It is also a
    `RuntimeError`, which is what such calls raised before and what the API kernelbox keeps
    compatible with raises.
    """


def _with_log(message: str, log_lines: Sequence[str]) -> str:
    if not log_lines:
        return message
    return message + "\nLast gateway log lines:\n" + "\n".join("  " + line for line in log_lines)


class GatewayError(KernelboxError):
    """A problem with the gateway process.

    Attributes:
        log_lines: the gateway's last log lines (oldest first), possibly empty.
    """

    def __init__(self, message: str, *, log_lines: Sequence[str] = ()) -> None:
        super().__init__(_with_log(message, log_lines))
        self.log_lines = list(log_lines)


class GatewayStartError(GatewayError):
    """The gateway process exited during start-up or did not answer within the start-up timeout."""


class GatewayExitedError(GatewayError):
    """The gateway process exited while it was expected to run.

    Attributes:
        returncode: the exit status (negative: killed by that signal number), or None.
    """

    def __init__(
        self, message: str, *, returncode: int | None = None, log_lines: Sequence[str] = ()
    ) -> None:
        super().__init__(message, log_lines=log_lines)
        self.returncode = returncode


class SandboxError(KernelboxError):
    """A problem with the OS sandbox."""


class SandboxUnavailableError(SandboxError):
    """``sandbox=True`` was asked for but a prerequisite is missing; the message says how to fix it.

    kernelbox never falls back to an unsandboxed run when a sandbox was asked for.
    """


class SandboxConfigError(SandboxError):
    """The sandbox settings are unreadable or invalid; the message names the file and the key.

    Attributes:
        source: where the settings came from: the settings file's path (a preset's file
            too), ``"sandbox_config mapping"`` for settings passed as a mapping, or None when
            the problem is not in a settings file (e.g. a working directory srt cannot use).
        key: the offending key as a dotted path, e.g. ``"network.allowedDomains"``; None
            when the problem is not one key's (unreadable file, invalid JSON, not an object).
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.key = key


class ClientError(KernelboxError):
    """A problem talking to a gateway or a kernel.

    Attributes:
        url: the gateway's base URL, e.g. ``"http://127.0.0.1:41231"``, when known.
        kernel_id: the kernel's id, when one was involved.
        status_code: the HTTP status of the gateway's answer that caused the error (e.g. 401,
            403, 404, 500); None when no HTTP answer did (no answer at all, a WebSocket
            problem, a timeout).
    """

    url: str | None = None
    kernel_id: str | None = None
    status_code: int | None = None

    def with_context(self, *, url: str | None, kernel_id: str | None) -> ClientError:
        """Set `url` and `kernel_id` where they are not set yet; returns the error itself."""
        if self.url is None:
            self.url = url
        if self.kernel_id is None:
            self.kernel_id = kernel_id
        return self


class NotConnectedError(ClientError, RuntimeError):
    """The client has no kernel: `connect()` was not called, or `disconnect()` was."""


class GatewayConnectionError(ClientError, ConnectionError):
    """Nothing answered at the gateway URL (after the retries), or the connection was lost."""


class AuthenticationError(ClientError):
    """The gateway refused the request's token (HTTP 401 or 403)."""


class KernelStartError(ClientError):
    """The gateway could not create a kernel (unknown kernelspec name, kernel limit, start failure).

    Attributes:
        kernelspecs: for an unknown kernelspec name, the names the gateway offers, sorted;
            None otherwise.
    """

    kernelspecs: list[str] | None = None


class KernelDiedError(ClientError):
    """The kernel process died (crash, ``os._exit``, signal, out of memory); `reset()` recovers."""


class KernelStoppedError(ClientError):
    """The kernel process is stopped (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU): it runs nothing.

    Raised by `execute`/`stream` about ``LIVENESS_PROBE_SECONDS`` (2 s) after the kernel fell
    silent, when the gateway reports the process stopped (kernelbox gateways add
    ``"process_state"`` to ``GET /api/kernels/<id>``; other servers cannot tell, and the
    execution's timeout applies instead). The kernel and its variables are intact: sent
    SIGCONT, it resumes and runs the request that was waiting; `reset()` replaces it.
    """


class ExecutionTimeoutError(ClientError, TimeoutError):
    """An execution ran past its timeout.

    Attributes:
        timeout: the timeout that was exceeded, in seconds.
        state_kept: True when the kernel was interrupted and its variables survive; False when
            it ignored the interrupt and was restarted, so its state is lost; None when the
            gateway did not answer the interrupt (e.g. it is hung) and the state is unknown.
    """

    def __init__(self, message: str, *, timeout: float, state_kept: bool | None = True) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.state_kept = state_kept


class ExecutionError(KernelboxError):
    """User code raised an exception in the kernel.

    Attributes:
        ename: the exception class name, e.g. ``"ZeroDivisionError"``.
        evalue: the exception message, e.g. ``"division by zero"``.
        traceback: the formatted traceback as a list of lines, ANSI colour codes removed.
        url, kernel_id: where it ran (see `ClientError`).
    """

    url: str | None = None
    kernel_id: str | None = None

    def __init__(
        self,
        ename: str,
        evalue: str,
        traceback: Sequence[str] = (),
        *,
        url: str | None = None,
        kernel_id: str | None = None,
    ) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = list(traceback)
        self.url = url
        self.kernel_id = kernel_id
        text = f"{ename}: {evalue}"
        if self.traceback:
            text += "\n" + "\n".join(self.traceback)
        super().__init__(text)


class FileTransferError(ClientError):
    """A file could not be uploaded to or downloaded from the kernel.

    Raised when a path leaves the kernel's working directory (``..``, an absolute path
    elsewhere, a symlink leading out) without ``allow_outside=True``, when a file is larger
    than ``max_bytes``, when it is missing or not a regular file, when the data arrived
    damaged (size or SHA-256 mismatch), or when the kernel's filesystem refused the write
    (read-only, permissions, disk full). The message says which and, where there is one, the fix.

    Attributes:
        path: the path as given (in the kernel for uploads' destinations and downloads).
        reason: a short machine-readable cause: ``"outside"``, ``"too_large"``,
            ``"not_found"``, ``"not_a_file"``, ``"integrity"``, ``"os_error"``, ``"local"``
            (the local file could not be read or written), ``"symlink"`` (a download's local
            destination passes through a symlink that kernelbox does not follow).
    """

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason

