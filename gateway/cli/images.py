"""Image commands: build, bootstrap, list, inspect, tag, history, remove."""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from gateway.cli.output import (
    EXIT_FAILED,
    EXIT_USAGE,
    api_command,
    client,
    emit,
    fail,
    format_option,
    human_size,
    key_values,
)
from gateway.client import ApiClientError, error_of


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _ago(epoch: float) -> str:
    if not epoch:
        return ""
    seconds = max(0, time.time() - epoch)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} seconds ago"


def _follow(lines: Iterator[str]) -> str:
    """Print a build's progress; the image id, or exit 1 with the error."""
    image_id = ""
    for raw in lines:
        if not raw:
            continue
        msg = json.loads(raw)
        if "stream" in msg:
            click.echo(msg["stream"], nl=False)
        elif "aux" in msg:
            image_id = msg["aux"]["ID"]
        elif "error" in msg:
            fail(msg["error"], EXIT_FAILED)
    return image_id


def _context_tar(context: Path, out: IO[bytes]) -> None:
    """The build context as docker build sends it; the node applies .dockerignore."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(context, arcname=".", recursive=True)
    out.seek(0)


@click.command()
@click.argument("context", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-t", "--tag", help="name:tag for the image")
@click.option("-f", "--file", "dockerfile", help="The Dockerfile, relative to CONTEXT")
@click.option("--build-arg", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--label", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--no-cache", is_flag=True, help="Run every step again")
@click.option("--target", help="Build up to this stage")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image id")
@api_command
def build(
    context: Path, tag: str | None, dockerfile: str | None, build_arg: tuple[str, ...],
    label: tuple[str, ...], no_cache: bool, target: str | None, quiet: bool,
) -> None:  # fmt: skip
    """Build an image from a Dockerfile in CONTEXT, with progress."""
    params: dict[str, Any] = {"nocache": int(no_cache)}
    if tag:
        params["t"] = tag
    if dockerfile:
        params["dockerfile"] = dockerfile
    if target:
        params["target"] = target
    if build_arg:
        params["buildargs"] = json.dumps(key_values(build_arg, "build-arg"))
    if label:
        params["labels"] = json.dumps(key_values(label, "label"))
    with tempfile.TemporaryFile() as body:
        _context_tar(context, body)
        lines = client().stream_lines(
            "POST", "/build", params=params, content=body.read(),
            headers={"Content-Type": "application/x-tar"}, timeout=None,
        )  # fmt: skip
        if quiet:
            image_id = ""
            for raw in lines:
                msg = json.loads(raw) if raw else {}
                if "error" in msg:
                    fail(msg["error"])
                image_id = msg.get("aux", {}).get("ID", image_id)
        else:
            image_id = _follow(lines)
    if quiet:
        click.echo(image_id)


@click.group()
def image() -> None:
    """Images: bootstrap base images, inspect."""


@image.command()
@click.argument("name")
@api_command
def bootstrap(name: str) -> None:
    """Make a base image from what the host has: busybox, or debian:bookworm (debootstrap)."""
    lines = client().stream_lines(
        "POST", "/system/images/bootstrap", params={"name": name}, timeout=None
    )
    image_id = _follow(lines)
    click.echo(f"{name}: {_short(image_id)}")


@image.command("inspect")
@click.argument("ref")
@api_command
def inspect_image(ref: str) -> None:
    """An image's config, as Docker shows it."""
    click.echo(json.dumps(client().json("GET", f"/images/{ref}/json"), indent=2))


@image.command("ls")
@click.option("-a", "--all", "all_images", is_flag=True, help="Intermediate images too")
@format_option
@api_command
def list_images(all_images: bool, fmt: str) -> None:
    """List images."""
    _list(all_images, fmt)


@click.command()
@click.option("-a", "--all", "all_images", is_flag=True, help="Intermediate images too")
@format_option
@api_command
def images(all_images: bool, fmt: str) -> None:
    """List images."""
    _list(all_images, fmt)


def _list(all_images: bool, fmt: str) -> None:
    found = client().json("GET", "/images/json", params={"all": int(all_images)})
    rows = []
    for i in found:
        for ref in i["RepoTags"]:
            repo, _, tag_ = ref.rpartition(":")
            rows.append((repo, tag_, _short(i["Id"]), _ago(i["Created"]), human_size(i["Size"])))
    emit(found, fmt, lambda _: rows, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])


@click.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Even while containers use it")
@api_command
def rmi(refs: tuple[str, ...], force: bool) -> None:
    """Remove images (or untag, when one has several tags)."""
    for ref in refs:
        for line in client().json("DELETE", f"/images/{ref}", params={"force": int(force)}):
            for what, value in line.items():
                click.echo(f"{what}: {value}")


@click.command()
@click.argument("source")
@click.argument("target")
@api_command
def tag(source: str, target: str) -> None:
    """Give image SOURCE the name TARGET (name[:tag])."""
    if not target:
        fail("TARGET is empty", EXIT_USAGE)
    client().request("POST", f"/images/{source}/tag", params={"repo": target})


@click.command()
@click.argument("ref")
@format_option
@api_command
def history(ref: str, fmt: str) -> None:
    """One row per build step: what made it and the size it added."""
    emit(
        client().json("GET", f"/images/{ref}/history"), fmt,
        lambda rows: [(_short(r["Id"]) if r["Id"] != "<missing>" else r["Id"],
                       _ago(r["Created"]), r["CreatedBy"][:60], human_size(r["Size"]),
                       r["Comment"]) for r in rows],
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
    )  # fmt: skip


@click.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file rather than stdout")  # fmt: skip
@api_command
def save(refs: tuple[str, ...], output: Path | None) -> None:
    """Write images to a docker-archive tar (as docker save does)."""
    if output is None and sys.stdout.isatty():
        fail("refusing to write a tar to a terminal: give -o FILE or redirect", EXIT_USAGE)
    params = {"names": list(refs)}
    target = output.with_name(f".{output.name}.part") if output else None
    try:
        with client().stream("GET", "/images/get", params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            sink = open(target, "wb") if target else sys.stdout.buffer  # noqa: SIM115
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
            finally:
                if target:
                    sink.close()
    except ApiClientError as exc:
        if target:
            target.unlink(missing_ok=True)
        if exc.status:  # refused before it began (no such image)
            raise
        fail(f"the archive was cut short: {exc}")
    if output and target:
        target.replace(output)  # a complete archive or none


@click.command()
@click.option("-i", "--input", "source", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Read this file rather than stdin")  # fmt: skip
@api_command
def load(source: Path | None) -> None:
    """Load images from a docker-archive or OCI archive (as docker load does)."""
    data = source.read_bytes() if source else sys.stdin.buffer.read()
    for raw in client().request("POST", "/images/load", content=data, timeout=None).iter_lines():
        if raw:
            click.echo(json.loads(raw).get("stream", ""), nl=False)


@click.command("import")
@click.argument("source")
@click.argument("ref", required=False)
@click.option("-m", "--message", default="", help="A note for the image's history")
@api_command
def import_(source: str, ref: str | None, message: str) -> None:
    """A root filesystem tarball (FILE or - for stdin) as a one-layer image."""
    data = sys.stdin.buffer.read() if source == "-" else _read(Path(source))
    params = {"fromSrc": "-", "repo": ref or "", "message": message}
    result = client().json("POST", "/images/create", params=params, content=data, timeout=None)
    click.echo(result["status"])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)


@click.command()
@click.argument("container")
@click.argument("ref", required=False)
@click.option("-m", "--message", default="", help="A note for the image's history")
@click.option("-a", "--author", default="")
@click.option("-p/--no-pause", "pause", default=True, show_default=True,
              help="Pause the container while its files are copied")  # fmt: skip
@api_command
def commit(container: str, ref: str | None, message: str, author: str, pause: bool) -> None:
    """A writable container's changes (an environment's, by its id) as a new image."""
    params = {"container": container, "repo": ref or "", "comment": message, "author": author,
              "pause": int(pause)}  # fmt: skip
    click.echo(client().json("POST", "/commit", params=params, timeout=None)["Id"])
