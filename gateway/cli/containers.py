"""Container commands, with the docker CLI's verbs and flags, on the same Docker API
routes the docker CLI uses (``run`` and ``create`` are in ``run``, volumes in
``volumes``).

Streams (logs, exec) come as Docker's multiplexed frames over a plain streamed
response: stdout frames go to stdout, stderr frames to stderr.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.output import (
    EXIT_USAGE,
    api_command,
    client,
    each,
    emit,
    fail,
    format_option,
    table,
)
from gateway.cli.run import ARGS_AFTER_IMAGE, create, run
from gateway.cli.streams import stream, write_frames
from gateway.cli.volumes import volume

_TEMPLATE = re.compile(r"\{\{\s*(json\s+)?(\.[A-Za-z0-9_.]*)\s*\}\}")


def render_template(template: str, value: Any) -> str:
    """The docker CLI's ``-f`` for the cases people script: ``{{.State.Running}}`` and
    ``{{json .Config}}``, with text around them.

    >>> render_template("{{.State.Running}} {{json .Config.Cmd}}",
    ...                 {"State": {"Running": True}, "Config": {"Cmd": ["sh"]}})
    'true ["sh"]'
    """

    def field(match: re.Match[str]) -> str:
        current = value
        for part in filter(None, match.group(2).split(".")):
            if not isinstance(current, dict) or part not in current:
                fail(f"template: {match.group(0)}: no field {part!r}", EXIT_USAGE)
            current = current[part]
        if match.group(1):
            return json.dumps(current)
        if isinstance(current, bool):
            return "true" if current else "false"
        if current is None:
            return "<no value>"
        return current if isinstance(current, str) else json.dumps(current)

    rest = _TEMPLATE.sub("", template)
    if "{{" in rest:
        fail(f"template {template!r}: only {{{{.Field}}}} and {{{{json .Field}}}} are supported",
             EXIT_USAGE)  # fmt: skip
    return _TEMPLATE.sub(field, template)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@api_command
def start(containers: tuple[str, ...]) -> None:
    """Start created or stopped containers."""
    each("POST", "/containers/{}/start", containers)


@click.command()
@click.option("-t", "--time", "seconds", type=int, default=10, show_default=True,
              help="Seconds to wait before killing it")  # fmt: skip
@click.argument("containers", nargs=-1, required=True)
@api_command
def stop(seconds: int, containers: tuple[str, ...]) -> None:
    """Stop containers: their stop signal, then SIGKILL after the timeout."""
    each("POST", "/containers/{}/stop", containers, t=seconds)


@click.command()
@click.option("-t", "--time", "seconds", type=int, default=10, show_default=True)
@click.argument("containers", nargs=-1, required=True)
@api_command
def restart(seconds: int, containers: tuple[str, ...]) -> None:
    """Stop containers, then start them again."""
    each("POST", "/containers/{}/restart", containers, t=seconds)


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True)
@click.argument("containers", nargs=-1, required=True)
@api_command
def kill(sig: str, containers: tuple[str, ...]) -> None:
    """Send a signal to containers."""
    each("POST", "/containers/{}/kill", containers, signal=sig)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill running containers first")
@click.option("-v", "--volumes", is_flag=True, help="Also remove their anonymous volumes")
@click.argument("containers", nargs=-1, required=True)
@api_command
def rm(force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""
    each("DELETE", "/containers/{}", containers, force=int(force), v=int(volumes))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@api_command
def pause(containers: tuple[str, ...]) -> None:
    """Freeze every process of containers."""
    each("POST", "/containers/{}/pause", containers)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@api_command
def unpause(containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""
    each("POST", "/containers/{}/unpause", containers)


@click.command()
@click.argument("container")
@click.argument("name")
@api_command
def rename(container: str, name: str) -> None:
    """Give a container a new name."""
    client().request("POST", f"/containers/{container}/rename", params={"name": name})


@click.command()
@click.option("-a", "--all", "everything", is_flag=True, help="Stopped ones too")
@click.option("-q", "--quiet", is_flag=True, help="Only ids")
@click.option("--filter", "filters", multiple=True, help="KEY=VALUE: label, name, status, id")
@format_option
@api_command
def ps(everything: bool, quiet: bool, filters: tuple[str, ...], fmt: str) -> None:
    """List containers."""
    wanted: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            fail(f"invalid filter {f!r}: expected KEY=VALUE", EXIT_USAGE)
        wanted.setdefault(key, []).append(value)
    params = {"all": int(everything), "filters": json.dumps(wanted)}
    rows = client().json("GET", "/containers/json", params=params)
    if quiet:
        for r in rows:
            click.echo(r["Id"][:12])
        return
    emit(rows, fmt, lambda rs: [
        (r["Id"][:12], r["Image"], r["Command"][:30], r["Status"],
         ", ".join(f"{p['IP']}:{p['PublicPort']}->{p['PrivatePort']}/tcp" for p in r["Ports"]),
         r["Names"][0].lstrip("/"))
        for r in rs
    ], ["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "PORTS", "NAMES"])  # fmt: skip


@click.command()
@click.option("-f", "--follow", is_flag=True)
@click.option("-t", "--timestamps", is_flag=True)
@click.option("-n", "--tail", default="all", show_default=True)
@click.option("--since", default="", help="Unix time or RFC 3339")
@click.argument("container")
@api_command
def logs(follow: bool, timestamps: bool, tail: str, since: str, container: str) -> None:
    """A container's output: stdout to stdout, stderr to stderr."""
    params = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": int(timestamps),
              "tail": tail, "since": since}  # fmt: skip
    write_frames(stream(client(), "GET", f"/containers/{container}/logs", params=params))


@click.command(name="exec", context_settings=ARGS_AFTER_IMAGE)
@click.option("-i", "--interactive", is_flag=True, help="Send stdin (read to its end first)")
@click.option("-e", "--env", multiple=True)
@click.option("-u", "--user", default="")
@click.option("-w", "--workdir", default="")
@click.option("-d", "--detach", is_flag=True)
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@api_command
def exec_(interactive: bool, env: tuple[str, ...], user: str, workdir: str, detach: bool,
          container: str, command: tuple[str, ...]) -> None:  # fmt: skip
    """Run a command in a running container; exit with its code."""
    api = client()
    body = {"Cmd": list(command), "Env": list(env), "User": user, "WorkingDir": workdir,
            "AttachStdin": interactive, "AttachStdout": True, "AttachStderr": True}  # fmt: skip
    exec_id = api.json("POST", f"/containers/{container}/exec", json=body)["Id"]
    if detach:
        api.request("POST", f"/exec/{exec_id}/start", json={"Detach": True})
        return
    if interactive:
        fail("exec -i needs a hijacked connection: use the docker CLI for it", EXIT_USAGE)
    write_frames(stream(api, "POST", f"/exec/{exec_id}/start", json={"Detach": False}))
    sys.exit(int(api.json("GET", f"/exec/{exec_id}/json")["ExitCode"]))


@click.command()
@click.option("-f", "--format", "template", default="", help="e.g. {{.State.OOMKilled}}")
@click.argument("containers", nargs=-1, required=True)
@api_command
def inspect(template: str, containers: tuple[str, ...]) -> None:
    """A container's full description (Docker's shape)."""
    found = [client().json("GET", f"/containers/{c}/json") for c in containers]
    if template:
        for item in found:
            click.echo(render_template(template, item))
    else:
        click.echo(json.dumps(found, indent=4))


@click.command()
@click.option("--condition", type=click.Choice(["not-running", "next-exit", "removed"]),
              default="not-running", show_default=True)  # fmt: skip
@click.argument("containers", nargs=-1, required=True)
@api_command
def wait(condition: str, containers: tuple[str, ...]) -> None:
    """Until containers stop; print their exit codes."""
    for c in containers:
        result = client().json("POST", f"/containers/{c}/wait", params={"condition": condition},
                               timeout=None)  # fmt: skip
        click.echo(result["StatusCode"])


@click.command()
@click.argument("container")
@api_command
def top(container: str) -> None:
    """A container's processes."""
    result = client().json("GET", f"/containers/{container}/top")
    table(result["Processes"], result["Titles"])


@click.command()
@click.argument("container")
@api_command
def diff(container: str) -> None:
    """What a container changed in its filesystem: A added, C changed, D deleted."""
    for change in client().json("GET", f"/containers/{container}/changes"):
        click.echo(f"{'CAD'[change['Kind']]} {change['Path']}")


@click.command()
@click.argument("container")
@api_command
def port(container: str) -> None:
    """A container's published ports."""
    ports = client().json("GET", f"/containers/{container}/json")["NetworkSettings"]["Ports"]
    for private, bindings in sorted(ports.items()):
        for b in bindings or []:
            click.echo(f"{private} -> {b['HostIp']}:{b['HostPort']}")


@click.command()
@click.option("--no-stream", is_flag=True, help="One sample, then exit")
@click.argument("container")
@api_command
def stats(no_stream: bool, container: str) -> None:
    """Memory, CPU and process counts of a container."""
    sample = client().json("GET", f"/containers/{container}/stats", params={"stream": 0})
    mem = sample["memory_stats"]
    table([(container, f"{mem['usage'] / 2**20:.1f}MiB / {mem['limit'] / 2**20:.0f}MiB",
            sample["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9,
            sample["pids_stats"]["current"])],
          ["CONTAINER", "MEM USAGE / LIMIT", "CPU SECONDS", "PIDS"])  # fmt: skip


@click.command()
@click.argument("source")
@click.argument("dest")
@api_command
def cp(source: str, dest: str) -> None:
    """Copy between a container and this host: CONTAINER:PATH DEST, or SRC CONTAINER:PATH."""
    import io
    import tarfile

    api = client()
    if ":" in source and not source.startswith(("/", ".")):
        container, _, path = source.partition(":")
        data = b"".join(stream(api, "GET", f"/containers/{container}/archive",
                                params={"path": path}))  # fmt: skip
        target = Path(dest)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            if target.is_dir():
                tar.extractall(target, filter="data")
            else:
                top_name = members[0].name.split("/")[0] if members else ""
                for m in members:
                    m.name = target.name + m.name[len(top_name) :]
                tar.extractall(target.parent, members=members, filter="data")
        return
    if ":" not in dest:
        fail("one side of cp must be CONTAINER:PATH", EXIT_USAGE)
    container, _, path = dest.partition(":")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(source, arcname=Path(source).name)
    api.request("PUT", f"/containers/{container}/archive", params={"path": path},
                content=buffer.getvalue())  # fmt: skip


# Top-level, as the docker CLI has them. ``top`` is only ``scow container top``: ``scow
# top`` is the host's live view.
COMMANDS = [run, create, start, stop, restart, kill, rm, pause, unpause, rename, ps, logs,
            exec_, inspect, wait, diff, port, stats, cp, volume]  # fmt: skip


@click.group()
def container() -> None:
    """Containers, as ``docker container``: every verb above plus top."""


for _command in [*COMMANDS[:-1], top]:
    container.add_command(_command)
container.add_command(ps, name="ls")
