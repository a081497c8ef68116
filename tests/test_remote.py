"""`KernelClient` unchanged against real remote servers: Jupyter Server and Enterprise Gateway.

Both are started from their PyPI packages on loopback, over http and over https with a
certificate authority the test makes. Enterprise Gateway 3.x pins ``jupyter_server<2`` and
``jupyter_client<7``, so it lives in its own virtual environment, made by
``scripts/install-enterprise-gateway.sh`` (``.tools/enterprise-gateway``); its kernels run this
environment's Python through a kernelspec the test writes.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kernelbox import (
    AuthenticationError,
    ExecutionError,
    ExecutionResult,
    GatewayConnectionError,
    KernelClient,
)

TIMEOUT = 60
REPO = Path(__file__).resolve().parents[1]
EG_BIN = Path(os.environ.get("KERNELBOX_EG_BIN", REPO / ".tools" / "enterprise-gateway" / "bin"
                                                  / "jupyter-enterprisegateway"))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # the servers are separate processes; the client itself is tested on trio elsewhere


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> Tls:
    """A private CA and a server certificate it signed for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kernelbox test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    tls.key.chmod(0o600)
    return tls


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


# -- servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    kind: str
    url: str
    token: str
    verify: bool | str
    root_dir: Path


def jupyter_env(home: Path) -> dict[str, str]:
    """The environment for a server: isolated Jupyter directories, a python3 kernelspec for this Python."""
    kernel_dir = home / "share" / "jupyter" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True, exist_ok=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (kernelbox tests)", "language": "python",
    }))
    env = {name: value for name, value in os.environ.items() if not name.startswith("JUPYTER")}
    env.update({
        "JUPYTER_PATH": str(home / "share" / "jupyter"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    })
    return env


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str], env: dict[str, str], ready: str, cwd: Path
) -> AsyncIterator[tuple[Process, re.Match[str]]]:
    """Start a server in `cwd`; yield once a log line matches `ready`; SIGTERM it on exit.

    Its log (stderr) is read to the end by a task of its own, so the pipe never fills.
    """
    process = await anyio.open_process(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log: list[str] = []
    found: list[re.Match[str]] = []
    try:
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def read_log() -> None:
                assert process.stderr is not None
                lines = BufferedByteReceiveStream(process.stderr)
                try:
                    while True:
                        line = (await lines.receive_until(b"\n", 1 << 20)).decode(errors="replace")
                        log.append(line)
                        match = re.search(ready, line)
                        if match and not found:
                            found.append(match)
                            done.set()
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    done.set()  # it exited: wake the waiter, which reports the log

            tg.start_soon(read_log)
            with anyio.fail_after(TIMEOUT):
                await done.wait()
            if not found:
                raise RuntimeError(f"{argv[0]} exited before it was ready:\n" + "\n".join(log[-30:]))
            try:
                yield process, found[0]
            finally:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(30, shield=True):
                    await process.wait()
                tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.aclose()


def listening_port(pid: int) -> int:
    """The TCP port a process listens on (Enterprise Gateway logs the requested port, 0)."""
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert len(ports) == 1, ports
    return ports.pop()


async def start_jupyter_server(home: Path, tls: Tls | None) -> AsyncIterator[Remote]:
    token = secrets.token_hex(16)
    root = home / "root"
    root.mkdir(parents=True)
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True"]
    if tls is not None:
        argv += [f"--ServerApp.certfile={tls.cert}", f"--ServerApp.keyfile={tls.key}"]
    # Jupyter Server logs the real port once it listens: "http(s)://127.0.0.1:PORT/...".
    async with running(argv, jupyter_env(home), r"(https?)://127\.0\.0\.1:(\d+)/", root) as (_, match):
        scheme, port = match.group(1), match.group(2)
        yield Remote("jupyter-server", f"{scheme}://127.0.0.1:{port}", token,
                     str(tls.ca) if tls else True, root)


async def start_enterprise_gateway(home: Path, tls: Tls | None) -> AsyncIterator[Remote]:
    if not EG_BIN.exists():
        message = f"Enterprise Gateway is not installed at {EG_BIN}: run scripts/install-enterprise-gateway.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    token = secrets.token_hex(16)
    root = home / "root"
    root.mkdir(parents=True)
    env = jupyter_env(home)
    # EG refuses to start kernels for "root" by default (unauthorized_users); CI runs as root.
    env["EG_UNAUTHORIZED_USERS"] = "nobody-kernelbox-test"
    argv = [str(EG_BIN), "--ip=127.0.0.1", "--port=0", "--port_retries=0",
            f"--EnterpriseGatewayApp.auth_token={token}"]
    if tls is not None:
        argv += [f"--EnterpriseGatewayApp.certfile={tls.cert}", f"--EnterpriseGatewayApp.keyfile={tls.key}"]
    # Its local kernels start in its own working directory.
    async with running(argv, env, r"Enterprise Gateway .* is available at (https?)://", root) as (process, match):
        port = listening_port(process.pid)
        yield Remote("enterprise-gateway", f"{match.group(1)}://127.0.0.1:{port}", token,
                     str(tls.ca) if tls else True, root)


@pytest.fixture(scope="module", params=[
    "jupyter-server-http", "jupyter-server-https", "enterprise-gateway-http", "enterprise-gateway-https",
])
async def remote(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 tls: Tls) -> AsyncIterator[Remote]:
    kind, _, scheme = request.param.rpartition("-")
    home = tmp_path_factory.mktemp(request.param)
    start = start_jupyter_server if kind == "jupyter-server" else start_enterprise_gateway
    async for remote in start(home, tls if scheme == "https" else None):
        yield remote


@pytest.fixture
async def remote_client(remote: Remote, tmp_path: Path) -> AsyncIterator[KernelClient]:
    async with KernelClient(base_url=remote.url, token=remote.token, verify=remote.verify,
                            images_dir=tmp_path / "images") as client:
        yield client


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_execute_and_stream_keep_state(remote_client: KernelClient) -> None:
    with anyio.fail_after(TIMEOUT):
        await remote_client.execute("import os\nx = 20")
        items = [item async for item in remote_client.stream("for i in range(3):\n    print(i + x, flush=True)")]
        result = await remote_client.execute("x * 2 + 2")
    assert "".join(items[:-1]) == "20\n21\n22\n"  # chunks as they came (they may be merged)
    assert isinstance(items[-1], ExecutionResult) and items[-1].text == "20\n21\n22"
    assert result.text == "42"


@pytest.mark.anyio
async def test_images_are_saved(remote_client: KernelClient) -> None:
    with anyio.fail_after(TIMEOUT):
        result = await remote_client.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 1])\nplt.show()")
    assert len(result.images) == 1
    assert result.images[0].read_bytes().startswith(b"\x89PNG")


@pytest.mark.anyio
async def test_errors_raise_execution_error(remote_client: KernelClient) -> None:
    with anyio.fail_after(TIMEOUT), pytest.raises(ExecutionError) as info:
        await remote_client.execute("{}['nope']")
    assert info.value.ename == "KeyError" and info.value.evalue == "'nope'"


@pytest.mark.anyio
async def test_interrupt_stops_a_running_execution(remote_client: KernelClient) -> None:
    await remote_client.execute("survivor = 'kept'")
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            started = anyio.Event()
            outcome: list[BaseException] = []

            async def long_run() -> None:
                try:
                    async for item in remote_client.stream("import time\nprint('go', flush=True)\ntime.sleep(300)"):
                        if item == "go\n":
                            started.set()
                except ExecutionError as exc:
                    outcome.append(exc)

            tg.start_soon(long_run)
            await started.wait()
            await remote_client.interrupt()
        assert len(outcome) == 1 and isinstance(outcome[0], ExecutionError)
        assert outcome[0].ename == "KeyboardInterrupt"
        assert (await remote_client.execute("print(survivor)")).text == "kept"


@pytest.mark.anyio
async def test_file_transfer_needs_no_contents_api(remote_client: KernelClient, remote: Remote) -> None:
    data = os.urandom(50_000)
    with anyio.fail_after(TIMEOUT):
        written = await remote_client.upload(data, "uploaded.bin")
        assert await remote_client.download("uploaded.bin") == data
        start = (await remote_client.execute("print(get_ipython().starting_dir)")).text
    assert written == str(remote.root_dir / "uploaded.bin") == str(Path(start or "") / "uploaded.bin")
    assert (remote.root_dir / "uploaded.bin").read_bytes() == data


@pytest.mark.anyio
async def test_a_wrong_token_is_refused(remote: Remote, tmp_path: Path) -> None:
    client = KernelClient(base_url=remote.url, token="wrong", verify=remote.verify, images_dir=tmp_path)
    with anyio.fail_after(TIMEOUT), pytest.raises(AuthenticationError, match="HTTP 40[13]"):
        await client.connect(retries=0)


@pytest.mark.anyio
@pytest.mark.parametrize("remote", ["jupyter-server-https", "enterprise-gateway-https"], indirect=True)
async def test_https_is_refused_without_the_ca(remote: Remote, tmp_path: Path) -> None:
    client = KernelClient(base_url=remote.url, token=remote.token, images_dir=tmp_path)  # system CAs only
    with anyio.fail_after(TIMEOUT), pytest.raises(GatewayConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.connect(retries=0)
