"""One options type from the command line to the gateway process (pure; no process started).

`GatewayConfig` extends the gateway process's `GatewayProcessOptions`; the process reads back
exactly what the supervisor wrote, `KernelGateway.from_config` keeps a config as it is, and the
command line leaves every default to the config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kernelbox._child.gateway.options import GatewayProcessOptions
from kernelbox.gateway.config import DEFAULT_SANDBOX_PIDS_LIMIT, GatewayConfig
from kernelbox.gateway.gateway import KernelGateway

pytestmark = pytest.mark.unit


def _without_token(config: GatewayConfig) -> dict[str, object]:
    return {name: value for name, value in config.arguments().items() if name != "token"}


def test_the_gateway_process_reads_back_what_the_supervisor_wrote_and_never_the_token() -> None:
    config = GatewayConfig(log_level="warning", max_kernels=3, cull_idle_timeout=0.5, cull_interval=0.25,
                           cull_connected=True, cull_busy=False, pool_size=2, token="secret-token")
    argument = config.process_argument()
    assert "secret-token" not in argument
    assert set(json.loads(argument)) == {field.name for field in dataclasses.fields(GatewayProcessOptions)}
    read = GatewayProcessOptions.from_process_argument(argument)
    assert read == GatewayProcessOptions(log_level="WARN", max_kernels=3, cull_idle_timeout=0.5,
                                         cull_interval=0.25, cull_connected=True, cull_busy=False, pool_size=2)
    assert isinstance(read.cull_idle_timeout, float) and read.cull_idle_timeout == 0.5


@pytest.mark.parametrize(
    ("argument", "error", "match"),
    [
        ("[1]", ValueError, "JSON object"),
        ('{"pool_size": 1, "token": "x"}', ValueError, "unknown gateway process options: token"),
        ('{"pool_size": -1}', ValueError, "pool_size"),
        ('{"pool_size": "1"}', TypeError, "pool_size"),
        ('{"log_level": "LOUD"}', ValueError, "log_level"),
        ('{"cull_busy": 1}', TypeError, "cull_busy"),
    ],
)
def test_the_gateway_process_refuses_options_it_does_not_know(argument: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GatewayProcessOptions.from_process_argument(argument)


def test_from_config_keeps_the_config_and_its_default_bounds(tmp_path: Path) -> None:
    config = GatewayConfig(sandbox=True, working_dir=tmp_path, pool_size=1, cull_idle_timeout=2.0)
    assert config.pids_limit == "default" and config.pids_limit_is_default
    assert config.resolved_pids_limit == DEFAULT_SANDBOX_PIDS_LIMIT
    gateway = KernelGateway.from_config(config)
    assert gateway.config == config
    assert gateway.config.pids_limit_is_default  # a rebuilt config still knows the bound is the default
    assert dataclasses.replace(config, port=0).pids_limit_is_default
    with pytest.raises(TypeError, match="GatewayConfig"):
        KernelGateway.from_config({"pool_size": 1})  # type: ignore[arg-type]


def test_the_command_line_leaves_every_default_to_the_config(tmp_path: Path) -> None:
    from kernelbox.cli._main import _build_parser

    parser = _build_parser()
    serve = GatewayConfig.from_options(vars(parser.parse_args(["serve"])))
    assert _without_token(serve) == _without_token(GatewayConfig())
    run = GatewayConfig.from_options(vars(parser.parse_args(["run", "x.py"])), port=0)
    assert _without_token(run) == _without_token(GatewayConfig(port=0, log_level="WARNING"))
    # A sandboxed gateway from the command line has the library's default bounds (they used to
    # be lifted: the command line passed pids_limit=None when --pids-limit was not given).
    sandboxed = GatewayConfig.from_options(vars(parser.parse_args(["serve", "--sandbox"])))
    assert sandboxed.pids_limit_is_default and sandboxed.resolved_pids_limit == DEFAULT_SANDBOX_PIDS_LIMIT
    given = GatewayConfig.from_options(vars(parser.parse_args([
        "serve", "--port", "0", "--pool-size", "2", "--cull-idle-timeout", "0.5", "--env", "A=1", "--env", "B=2",
        "--working-dir", str(tmp_path), "--pids-limit", "100", "--log-level", "debug",
    ])))
    assert (given.port, given.pool_size, given.cull_idle_timeout, dict(given.env), given.working_dir) == (
        0, 2, 0.5, {"A": "1", "B": "2"}, tmp_path.resolve()
    )
    assert (given.pids_limit, given.log_level) == (100, "DEBUG")


def test_the_mcp_servers_gateway_listens_on_the_loopback_whatever_its_own_port(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from kernelbox.cli._main import _build_parser
    from kernelbox.mcp._server import _options_from_args

    args = _build_parser().parse_args(["mcp", "--host", "127.0.0.1", "--port", "9000", "--sandbox",
                                       "--working-dir", str(tmp_path)])
    options = _options_from_args(args)
    assert (options.gateway.host, options.gateway.port, options.gateway.sandbox) == ("127.0.0.1", 0, True)
    assert options.gateway.pids_limit_is_default and options.gateway.log_level == "WARN"
    assert options.images_dir == tmp_path.resolve() / "images"
    with pytest.raises(SystemExit, match="connection-file"):
        _options_from_args(_build_parser().parse_args(["mcp", "--connection-file", "c.json", "--sandbox"]))
