"""The gateway's REST API: URLs, TLS, kernels and kernelspecs over httpx.

The one place where httpx errors become kernelbox errors (`GatewayConnectionError`,
`AuthenticationError`, `KernelStartError`), each carrying the gateway's URL.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import httpx

from .._errors import AuthenticationError, ClientError, GatewayConnectionError, KernelDiedError, KernelStartError
from .._net import is_loopback_host
from .._retry import Backoff, Retries

__all__ = ["GatewayAPI", "KernelProbe", "base_urls"]

KernelProbe = Literal["gone", "stopped", "alive", "unknown"]

HTTP_TIMEOUT_SECONDS = 30.0
# Interrupt and restart requests: short, so a hung gateway cannot stall them.
CONTROL_TIMEOUT_SECONDS = 5.0
# DELETE answered with 5xx: retried this many times, waiting 0.25 s longer before each.
DELETE_RETRIES = 4
DELETE_RETRY_SECONDS = 0.25


def base_urls(host: str, port: int, base_url: str | None) -> tuple[str, str]:
    """The gateway's http(s) base URL and the matching ws(s) base URL.

    Raises:
        ValueError: the port is out of range, or `base_url` is not an http(s) URL.
    """
    if base_url is None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"port must be an int between 1 and 65535, not {port!r}")
        netloc = f"[{host}]" if ":" in host and not host.startswith("[") else host
        base_url = f"http://{netloc}:{port}"
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a str, not {type(base_url).__name__}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
    ws = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path.rstrip("/"), "", ""))
    return base_url.rstrip("/"), ws


def _tls_verify(verify: bool | str | os.PathLike[str] | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx 0.28 deprecates a CA bundle path for ``verify``: turn one into an SSL context."""
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    return verify


def error_detail(response: httpx.Response) -> str:
    """The server's reason for an error response, at most 500 characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body)[:500]
    return str(body)[:500]


class GatewayAPI:
    """The Jupyter kernels REST API of one gateway (``/api/kernels``, ``/api/kernelspecs``).

    Args:
        base_url: the gateway's base URL, e.g. ``"http://127.0.0.1:8888"``.
        token: sent as ``Authorization: token <token>``; None sends none.
        verify: TLS verification for https (True, False, a CA bundle path, an SSLContext).
    """

    def __init__(
        self, base_url: str, token: str | None, verify: bool | str | os.PathLike[str] | ssl.SSLContext
    ) -> None:
        self.base_url = base_url
        hostname = urlsplit(base_url).hostname or ""
        headers = {"Authorization": f"token {token}"} if token else {}
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=HTTP_TIMEOUT_SECONDS,
            # Plain http needs no TLS context; building one loads the CA bundle (~30 ms).
            verify=_tls_verify(verify) if base_url.startswith("https:") else False,
            # Proxies from the environment are for remote gateways, never for loopback.
            trust_env=not is_loopback_host(hostname),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; translate transport and auth failures.

        Raises:
            GatewayConnectionError: the request could not be sent or answered.
            AuthenticationError: HTTP 401, or 403 other than a resource limit (its
                ``status_code`` says which).
        """
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayConnectionError(f"{method} {self.base_url}{path} failed: {exc!r}").with_context(
                url=self.base_url, kernel_id=None
            ) from exc
        if response.status_code == 401 or (
            response.status_code == 403 and b"Resource Limit" not in response.content
        ):
            # The server's reason matters: Enterprise Gateway also answers 403 for a user it
            # does not allow to start kernels (e.g. "root", its default unauthorized_users).
            error = AuthenticationError(
                f"the gateway at {self.base_url} refused the request (HTTP {response.status_code}: "
                f"{error_detail(response)}); pass the gateway's token (KernelGateway.token)"
            )
            raise self._http_error(error, response)
        return response

    def _http_error(self, error: ClientError, response: httpx.Response, kernel_id: str | None = None) -> ClientError:
        """`error` with the gateway's URL, `kernel_id` and the status of `response` attached."""
        error.status_code = response.status_code
        return error.with_context(url=self.base_url, kernel_id=kernel_id)

    async def create_kernel(
        self,
        kernel_name: str,
        *,
        env: Mapping[str, str] | None,
        path: str | None,
        retries: int,
        retry_interval: float,
    ) -> str:
        """``POST /api/kernels``; return the new kernel's id.

        Args:
            kernel_name: the kernelspec.
            env: variables for the kernel (``KERNEL_*`` for Enterprise Gateway), or None.
            path: the kernel's working directory, relative to the server's root, or None.
            retries: more attempts when nothing answers; retry_interval: seconds between them.

        Raises:
            GatewayConnectionError: nothing answered after the retries (the last error says why).
            AuthenticationError: the token was refused.
            KernelStartError: the gateway refused or failed to start the kernel (``status_code``
                is the HTTP status); for an unknown kernelspec the message and ``kernelspecs``
                list the available ones.
        """
        body: dict[str, Any] = {"name": kernel_name}
        if env:
            body["env"] = dict(env)
        if path is not None:
            body["path"] = path
        attempts = Retries(limit=retries, backoff=Backoff(retry_interval))
        while True:
            try:
                response = await self.request("POST", "/api/kernels", json=body)
                break
            except GatewayConnectionError as exc:
                delay = attempts.next_delay()
                if delay is None:
                    raise GatewayConnectionError(
                        f"no gateway answered at {self.base_url} after {retries + 1} attempts; "
                        f"last error: {exc.__cause__ or exc}"
                    ).with_context(url=self.base_url, kernel_id=None) from exc
                await anyio.sleep(delay)  # the interval between attempts, not a readiness signal
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        detail = error_detail(response)
        if response.status_code == 403:
            raise self._http_error(
                KernelStartError(f"the gateway refused a new kernel: {detail} (kernel limit reached)"), response
            )
        available = await self.kernelspec_names()
        if available is not None and kernel_name not in available:
            error = KernelStartError(
                f"unknown kernel name {kernel_name!r}; available kernelspecs: " + ", ".join(sorted(available))
            )
            error.kernelspecs = sorted(available)
            raise self._http_error(error, response)
        raise self._http_error(
            KernelStartError(f"the gateway could not start a kernel (HTTP {response.status_code}): {detail}"), response
        )

    async def kernelspec_names(self) -> set[str] | None:
        """The names of the gateway's kernelspecs, or None when it cannot say."""
        with contextlib.suppress(ClientError, httpx.HTTPError, ValueError):
            response = await self.request("GET", "/api/kernelspecs")
            if response.status_code == 200:
                return set(response.json().get("kernelspecs", {}))
        return None

    async def delete_kernel(self, kernel_id: str) -> None:
        """``DELETE /api/kernels/<id>``; a kernel that is already gone is not an error."""
        attempts = Retries(limit=DELETE_RETRIES, backoff=Backoff(DELETE_RETRY_SECONDS, growth="linear"))
        while True:
            try:
                response = await self.request("DELETE", f"/api/kernels/{quote(kernel_id)}")
            except ClientError:
                return  # the gateway is gone: so is the kernel
            if response.status_code < 500:
                return
            # Jupyter Server answers 500 (InvalidStateError in MultiKernelManager) when asked to
            # shut down a kernel whose automatic restart is still under way; once the restart
            # settles, the shutdown works.
            delay = attempts.next_delay()
            if delay is None:
                return
            await anyio.sleep(delay)  # the back-off between attempts, not a readiness signal

    async def probe_kernel(self, kernel_id: str) -> KernelProbe:
        """What ``GET /api/kernels/<id>`` says of the kernel, within `CONTROL_TIMEOUT_SECONDS`.

        Returns:
            ``"gone"`` (404), ``"stopped"`` (its process is stopped: kernelbox gateways report
            ``"process_state"`` in the model), ``"alive"`` (200 otherwise), or ``"unknown"``
            (no answer, or another status).
        """
        try:
            response = await self.request("GET", f"/api/kernels/{quote(kernel_id)}", timeout=CONTROL_TIMEOUT_SECONDS)
        except ClientError:
            return "unknown"
        if response.status_code == 404:
            return "gone"
        if response.status_code != 200:
            return "unknown"
        try:
            model = response.json()
        except ValueError:
            return "unknown"
        if isinstance(model, dict) and model.get("process_state") == "stopped":
            return "stopped"
        return "alive"

    async def control(self, kernel_id: str, action: str) -> None:
        """POST an ``interrupt`` or ``restart`` for the kernel, bounded by a short timeout.

        Raises:
            KernelDiedError: the gateway could not do it (e.g. the kernel no longer exists;
                ``status_code`` is the HTTP status, 404 then).
            GatewayConnectionError: the gateway did not answer.
        """
        response = await self.request(
            "POST", f"/api/kernels/{quote(kernel_id)}/{action}", timeout=CONTROL_TIMEOUT_SECONDS
        )
        if response.status_code not in (200, 204):
            error = KernelDiedError(f"the gateway could not {action} the kernel: {error_detail(response)}")
            raise self._http_error(error, response, kernel_id)
