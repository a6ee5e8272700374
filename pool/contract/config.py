"""The host's configuration: one frozen dataclass, each default written once.

``scow up``, ``scow gateway``, ``python -m pool`` and the CLI read it; the CLI's
flags take their defaults and choices from it, and ``python -m pool`` its own.
It is read once, at each entry point (``from_env``: defaults, then the
environment, then flags).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

LogLevel = Literal["debug", "info", "warning"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

DEFAULT_STATE_DIR = Path("/var/lib/scow")
DEFAULT_RUN_DIR = Path("/run/scow")


@dataclass(frozen=True)
class HostConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # None: `scow up` starts its own redis-server as a child.
    redis_url: str | None = None
    redis_maxmemory: str = "1gb"  # the redis-server `scow up` starts (noeviction)
    bridge: str = "scow0"  # the containers' bridge, and its addresses
    subnet: str = "10.213.0.0/16"
    network_pool: str = "10.224.0.0/16"  # user-defined networks' subnets, a /24 each
    node_metrics_port: int = 9180  # 0: any free port (`scow info` shows it)
    body_limit: int = 6 << 20  # a call's request body
    max_queue: int = 1024  # calls waiting or running per function before 429; 0: no cap
    build_limit: int = 256 << 20  # a build context, an image archive
    response_limit: int = 6 << 20  # a function's reply
    max_environments: int = 64  # per node
    allowed_hosts: str = ""  # host names the TCP API answers besides addresses, localhost
    callback_allow: str = ""  # where X-Callback-Url may point beyond public addresses
    log_level: LogLevel = "info"
    gateway_workers: int = 1  # processes accepting on the gateway's sockets
    # Registries (host[:port] or CIDR, comma-separated) a node may reach over plain HTTP
    # besides loopback ones, as Docker's --insecure-registry.
    insecure_registries: str = ""

    @classmethod
    def from_env(cls, **overrides: object) -> HostConfig:
        """Defaults, then the environment (SCOW_STATE_DIR, SCOW_RUN_DIR, REDIS_URL,
        SCOW_ALLOWED_HOSTS, SCOW_CALLBACK_ALLOW), then explicit values (None: not given)."""
        values: dict[str, object] = {}
        for name, var, kind in (("state_dir", "SCOW_STATE_DIR", Path),
                                ("run_dir", "SCOW_RUN_DIR", Path),
                                ("redis_url", "REDIS_URL", str),
                                ("allowed_hosts", "SCOW_ALLOWED_HOSTS", str),
                                ("callback_allow", "SCOW_CALLBACK_ALLOW", str)):  # fmt: skip
            if v := os.environ.get(var):
                values[name] = kind(v)
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None and k in known})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "scow.sock"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "scow.pid"

    @property
    def redis_socket(self) -> Path:
        return self.run_dir / "redis.sock"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"


DEFAULTS = HostConfig()
