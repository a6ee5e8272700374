"""`scow env`: throwaway environments for tests, on a lease."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

from gateway.cli.output import (
    EXIT_USAGE,
    api_command,
    client,
    emit,
    fail,
    format_option,
    key_values,
)


@click.group()
def env() -> None:
    """Throwaway environments: a container with its ports on 127.0.0.1, on a lease."""


def _ports(lease: dict[str, Any]) -> str:
    return ", ".join(f"127.0.0.1:{h}->{c}" for c, h in sorted(lease["ports"].items()))


def _show(lease: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(lease, indent=2))
        return
    click.echo(f"id       {lease['id']}")
    click.echo(f"image    {lease['image']}")
    click.echo(f"ip       {lease['ip']}")
    for container_port, host_port in sorted(lease["ports"].items()):
        click.echo(f"port     {container_port} -> 127.0.0.1:{host_port}")
    click.echo(f"expires  {lease['expires_at']} (in {lease['expires_in']:.0f}s)")


# As with docker run, everything after IMAGE is the command, options included.
@env.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@click.argument("image")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@click.option("-p", "--port", "ports", type=int, multiple=True, help="Publish (repeatable)")
@click.option("-e", "--env", "env_vars", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--ttl", default="10m", show_default=True, help="Removed this long after ready")
@click.option("--wait-port", type=int, help="Ready when this port accepts connections")
@click.option("--wait-log", help="Ready when a log line matches this regex")
@click.option("--wait-http", help="Ready when GET of this path answers below 400")
@click.option("--wait-cmd", help="Ready when this command exits 0 inside")
@click.option("--wait-timeout", default="60s", show_default=True)
@click.option("--memory")
@click.option("--cpu-shares", type=int)
@click.option("-q", "--quiet", is_flag=True, help="Print only the id")
@format_option
@api_command
def create(image: str, cmd: tuple[str, ...], ports: tuple[int, ...], env_vars: tuple[str, ...],
           ttl: str, wait_port: int | None, wait_log: str | None, wait_http: str | None,
           wait_cmd: str | None, wait_timeout: str, memory: str | None,
           cpu_shares: int | None, quiet: bool, fmt: str) -> None:  # fmt: skip
    """Run IMAGE [CMD...] and wait until it is ready (by default, its first port)."""
    body: dict[str, Any] = {"image": image, "ports": list(ports), "ttl": ttl}
    if cmd:
        body["cmd"] = list(cmd)
    if env_vars:
        body["env"] = key_values(env_vars, "env")
    if memory:
        body["memory"] = memory
    if cpu_shares is not None:
        body["cpu_shares"] = cpu_shares
    kinds = {"log": wait_log, "http": wait_http,
             "cmd": shlex.split(wait_cmd) if wait_cmd else None}  # fmt: skip
    given = {k: v for k, v in kinds.items() if v}
    if len(given) > 1:
        fail("give one of --wait-log, --wait-http and --wait-cmd", EXIT_USAGE)
    if given or wait_port:
        body["wait"] = {**given, "timeout": wait_timeout}
        if wait_port:
            body["wait"]["port"] = wait_port
    elif ports:
        body["wait"] = {"port": ports[0], "timeout": wait_timeout}
    lease = client().json("POST", "/system/environments", json=body, timeout=None)
    if quiet:
        click.echo(lease["id"])
    else:
        _show(lease, fmt)


@env.command("ls")
@format_option
@api_command
def list_environments(fmt: str) -> None:
    """List environments and when each expires."""
    emit(
        client().json("GET", "/system/environments"), fmt,
        lambda leases: [(e["id"], e["image"], e["ip"], _ports(e), e["expires_at"])
                        for e in leases],
        ["ID", "IMAGE", "IP", "PORTS", "EXPIRES"],
    )  # fmt: skip


@env.command()
@click.argument("env_id")
@format_option
@api_command
def inspect(env_id: str, fmt: str) -> None:
    """One environment: where to reach it and when it expires."""
    _show(client().json("GET", f"/system/environments/{env_id}"), fmt)


@env.command()
@click.argument("env_id")
@click.option("--ttl", required=True, help="The lease now ends this long from now, e.g. 10m")
@format_option
@api_command
def extend(env_id: str, ttl: str, fmt: str) -> None:
    """Extend an environment's lease."""
    _show(client().json("PATCH", f"/system/environments/{env_id}", json={"ttl": ttl}), fmt)


@env.command("rm")
@click.argument("env_ids", nargs=-1, required=True)
@api_command
def remove(env_ids: tuple[str, ...]) -> None:
    """Remove environments now."""
    for env_id in env_ids:
        client().json("DELETE", f"/system/environments/{env_id}")
        click.echo(env_id)
