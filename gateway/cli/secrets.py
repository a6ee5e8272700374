"""`scow secret`: values a function is given as files, never as environment variables."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from gateway.cli.output import EXIT_USAGE, api_command, client, emit, fail, format_option
from gateway.client import ApiClientError


@click.group()
def secret() -> None:
    """Secrets: mounted read-only at /var/openfaas/secrets/NAME and /run/secrets/NAME."""


@secret.command()
@click.argument("name")
@click.option("-f", "--file", "source", required=True,
              help="Where the value is: a file, or - for stdin")  # fmt: skip
@api_command
def create(name: str, source: str) -> None:
    """Create a secret, or update it when it exists (functions using it get new instances)."""
    if source == "-":
        value = sys.stdin.buffer.read()
    else:
        try:
            value = Path(source).read_bytes()
        except OSError as exc:
            fail(f"cannot read {source}: {exc.strerror}", EXIT_USAGE)
    body = {"name": name, "rawValue": base64.b64encode(value).decode()}
    api = client()
    try:
        api.json("POST", "/system/secrets", json=body)
        click.echo(f"Created secret {name}")
    except ApiClientError as exc:
        if exc.status != 409:
            raise
        api.json("PUT", "/system/secrets", json=body)
        click.echo(f"Updated secret {name}")


@secret.command("ls")
@format_option
@api_command
def list_secrets(fmt: str) -> None:
    """The secrets' names (their values are never shown)."""
    emit(client().json("GET", "/system/secrets"), fmt, lambda rows: [(r["name"],) for r in rows],
         ["NAME"])  # fmt: skip


@secret.command("rm")
@click.argument("names", nargs=-1, required=True)
@api_command
def remove(names: tuple[str, ...]) -> None:
    """Remove secrets no function uses."""
    for name in names:
        client().json("DELETE", "/system/secrets", params={"name": name})
        click.echo(name)
