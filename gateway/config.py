"""Where a host keeps its things and where it listens, shared by `scow up` and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/scow")
DEFAULT_RUN_DIR = Path("/run/scow")
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True)
class HostConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    # None: `scow up` starts its own redis-server as a child.
    redis_url: str | None = None
    bridge: str = "scow0"
    subnet: str = "10.213.0.0/16"
    node_metrics_port: int = 9180  # 0: any free port (`scow info` shows it)
    redis_maxmemory: str = "1gb"  # the redis-server `scow up` starts (noeviction)

    @classmethod
    def from_env(cls, **overrides: object) -> HostConfig:
        """Defaults, then SCOW_STATE_DIR / SCOW_RUN_DIR / REDIS_URL, then explicit values."""
        values: dict[str, object] = {}
        if v := os.environ.get("SCOW_STATE_DIR"):
            values["state_dir"] = Path(v)
        if v := os.environ.get("SCOW_RUN_DIR"):
            values["run_dir"] = Path(v)
        if v := os.environ.get("REDIS_URL"):
            values["redis_url"] = v
        values.update({k: v for k, v in overrides.items() if v is not None})
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
