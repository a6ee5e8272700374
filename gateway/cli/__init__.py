"""The `scow` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway import __version__
from gateway.config import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT, HostConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """scow: functions on throwaway containers."""


@main.command()
def version() -> None:
    """Print the scow version."""
    click.echo(f"scow {__version__}")


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="[default: /var/lib/scow]")
@click.option("--run-dir", type=click.Path(path_type=Path), help="[default: /run/scow]")
@click.option("--host", default=DEFAULT_HTTP_HOST, show_default=True, help="TCP address of the API")
@click.option("--port", default=DEFAULT_HTTP_PORT, show_default=True, type=int)
@click.option("--redis-url", help="Use this Redis instead of starting one [env: REDIS_URL]")
def up(
    state_dir: Path | None, run_dir: Path | None, host: str, port: int, redis_url: str | None
) -> None:
    """Run the whole host in the foreground: Redis, a node, the gateway. Ctrl-C stops it."""
    from gateway.redisd import RedisServerError
    from gateway.up import Host, HostError

    config = HostConfig.from_env(
        state_dir=state_dir, run_dir=run_dir, http_host=host, http_port=port, redis_url=redis_url
    )
    try:
        code = Host(config, out=click.echo).run()
    except (HostError, RedisServerError) as exc:
        click.echo(f"scow up: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


@main.command()
@click.option("--redis-url", required=True, envvar="REDIS_URL")
@click.option("--host", default=DEFAULT_HTTP_HOST, show_default=True)
@click.option("--port", default=DEFAULT_HTTP_PORT, show_default=True, type=int)
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), help="Unix socket path")
def gateway(redis_url: str, host: str, port: int, socket_path: Path | None) -> None:
    """Run one gateway against a Redis (to scale out beside `scow up`)."""
    from gateway.serve import serve

    try:
        serve(redis_url, host, port, socket_path)
    except OSError as exc:
        click.echo(f"scow gateway: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
