"""``scow login``, ``logout``, ``pull`` and ``push``: images to and from registries, on
Docker's routes, with credentials kept the way the docker CLI keeps them.

Credentials live in Docker's config file (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``) under ``auths``, so a ``docker login`` serves ``scow pull``
and the other way round; each request carries them as ``X-Registry-Auth``. A pull or
push draws a line per layer: on a terminal, bars redrawn in place.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from gateway.cli.output import api_command, client, fail
from pool.contract.references import registry_of


def config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _config() -> dict[str, Any]:
    try:
        data = json.loads(config_path().read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        fail(f"{config_path()} is not JSON")
    return data if isinstance(data, dict) else {}


def _save_config(data: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds passwords
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent="\t")
    os.replace(tmp, path)


def registry_auth(registry: str) -> str:
    """The ``X-Registry-Auth`` for ``registry`` from Docker's config ("" when none)."""
    entry = (_config().get("auths") or {}).get(registry) or {}
    encoded = entry.get("auth") or ""
    if not encoded:
        return ""
    username, _, password = base64.b64decode(encoded).decode().partition(":")
    payload = {"username": username, "password": password, "serveraddress": registry}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@click.command()
@click.option("-u", "--username", required=True)
@click.option("-p", "--password", default=None, help="Prefer --password-stdin")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin")
@click.argument("server")
@api_command
def login(username: str, password: str | None, password_stdin: bool, server: str) -> None:
    """Log in to a registry (the host checks it) and keep the login as docker does."""
    if password_stdin:
        password = sys.stdin.read().rstrip("\n")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    body = {"username": username, "password": password, "serveraddress": server}
    answer = client().json("POST", "/auth", json=body)
    data = _config()
    auths = data.setdefault("auths", {})
    auths[server] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _save_config(data)
    click.echo(answer.get("Status", "Login Succeeded"))


@click.command()
@click.argument("server")
def logout(server: str) -> None:
    """Forget the login kept for a registry."""
    data = _config()
    if (data.get("auths") or {}).pop(server, None) is None:
        click.echo(f"Not logged in to {server}")
        return
    _save_config(data)
    click.echo(f"Removing login credentials for {server}")


class Bars:
    """Docker's progress objects drawn as one line per layer (redrawn on a terminal)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.tty = sys.stdout.isatty()
        self.drawn = 0

    def show(self, message: dict[str, Any]) -> None:
        if "error" in message:
            fail(str(message["error"]))
        layer, status = str(message.get("id") or ""), str(message.get("status") or "")
        if not status:
            return
        detail = message.get("progressDetail") or {}
        if detail.get("total"):
            done, total = int(detail.get("current") or 0), int(detail["total"])
            filled = min(40, 40 * done // max(total, 1))
            status += f" [{'=' * filled}{'>' if filled < 40 else ''}{' ' * (39 - filled)}] " \
                      f"{done / 1e6:.1f}MB/{total / 1e6:.1f}MB"  # fmt: skip
        if not layer:
            self._line(status)
            return
        changed = self.rows.get(layer, "").split(" [")[0] != status.split(" [")[0]
        self.rows[layer] = f"{layer}: {status}"
        if self.tty:
            click.echo(f"\x1b[{self.drawn}A" if self.drawn else "", nl=False)
            for row in self.rows.values():
                click.echo(f"\x1b[2K{row}")
            self.drawn = len(self.rows)
        elif changed:  # a log, not a screen: each new state once
            click.echo(self.rows[layer].split(" [")[0])

    def _line(self, text: str) -> None:
        click.echo(text)
        self.drawn = 0  # lines after the bars: the next redraw starts below them
        self.rows.clear()


def _messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        if raw.strip():
            yield json.loads(raw)


@click.command()
@click.argument("ref")
@api_command
def pull(ref: str) -> None:
    """Fetch an image from a registry (HOST[:PORT]/repo[:tag|@digest]) onto every node."""
    name, tag = ref, ""
    if "@" not in ref and ":" in ref.rsplit("/", 1)[-1]:
        name, _, tag = ref.rpartition(":")
    headers = {"X-Registry-Auth": registry_auth(registry_of(ref))} if registry_of(ref) else {}
    lines = client().stream_lines("POST", "/images/create", params={
        "fromImage": name, "tag": tag or ("" if "@" in ref else "latest")},
        headers=headers, timeout=None)  # fmt: skip
    bars = Bars()
    for message in _messages(lines):
        bars.show(message)
    click.echo(ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest")


@click.command()
@click.argument("ref")
@api_command
def push(ref: str) -> None:
    """Send an image to the registry its name has (HOST[:PORT]/repo[:tag])."""
    name, tag = ref, "latest"
    if ":" in ref.rsplit("/", 1)[-1]:
        name, _, tag = ref.rpartition(":")
    registry = registry_of(name)
    if not registry:
        fail(f"{ref} names no registry: tag it HOST[:PORT]/repository first")
    lines = client().stream_lines("POST", f"/images/{name}/push", params={"tag": tag},
                                  headers={"X-Registry-Auth": registry_auth(registry)},
                                  timeout=None)  # fmt: skip
    bars = Bars()
    for message in _messages(lines):
        if "aux" in message:
            continue
        bars.show(message)
