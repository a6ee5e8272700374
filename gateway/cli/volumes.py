"""``scow volume``: ls, create, inspect, rm, as ``docker volume`` has them."""

from __future__ import annotations

import json

import click

from gateway.cli.output import api_command, client, each, emit, format_option, key_values


@click.group()
def volume() -> None:
    """Volumes: ls, create, inspect, rm."""


@volume.command(name="ls")
@click.option("-q", "--quiet", is_flag=True)
@format_option
@api_command
def volume_ls(quiet: bool, fmt: str) -> None:
    """List volumes."""
    found = client().json("GET", "/volumes")["Volumes"]
    if quiet:
        for v in found:
            click.echo(v["Name"])
        return
    emit(found, fmt, lambda vs: [("local", v["Name"]) for v in vs], ["DRIVER", "VOLUME NAME"])


@volume.command(name="create")
@click.option("-l", "--label", multiple=True, help="KEY=VALUE")
@click.argument("name", required=False, default="")
@api_command
def volume_create(label: tuple[str, ...], name: str) -> None:
    """Make a volume (a random name without NAME)."""
    body = {"Name": name, "Labels": key_values(label, "label")}
    click.echo(client().json("POST", "/volumes/create", json=body)["Name"])


@volume.command(name="inspect")
@click.argument("names", nargs=-1, required=True)
@api_command
def volume_inspect(names: tuple[str, ...]) -> None:
    """A volume's details."""
    click.echo(json.dumps([client().json("GET", f"/volumes/{n}") for n in names], indent=4))


@volume.command(name="rm")
@click.option("-f", "--force", is_flag=True)
@click.argument("names", nargs=-1, required=True)
@api_command
def volume_rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes (not while a container uses them)."""
    each("DELETE", "/volumes/{}", names, force=int(force))
