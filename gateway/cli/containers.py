"""Container and volume commands, with the docker CLI's verbs and flags, on the same
Docker API routes the docker CLI uses.

Streams (run, logs, exec) come as Docker's multiplexed frames over a plain
streamed response: stdout frames go to stdout, stderr frames to stderr.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
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
    table,
)
from gateway.client import ApiClient, ApiClientError, error_of

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


def demux(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, data) from Docker's multiplexed frames: 1 stdout, 2 stderr."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 8:
            kind, size = struct.unpack(">BxxxI", buffer[:8])
            if len(buffer) < 8 + size:
                break
            yield kind, buffer[8 : 8 + size]
            buffer = buffer[8 + size :]


def _write_frames(chunks: Iterator[bytes]) -> None:
    for kind, data in demux(chunks):
        out = sys.stderr.buffer if kind == 2 else sys.stdout.buffer
        out.write(data)
        out.flush()


def _stream(api: ApiClient, method: str, path: str, **kw: Any) -> Iterator[bytes]:
    with api.stream(method, path, timeout=None, **kw) as response:
        if response.status_code >= 400:
            response.read()
            raise error_of(response)
        yield from response.iter_bytes()


_SIZE = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """``-m 32m`` -> bytes (b, k, m, g as the docker CLI takes them)."""
    m = _SIZE.match(text.strip())
    if not m:
        fail(f"invalid memory {text!r}: a number with b, k, m or g", EXIT_USAGE)
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(m.group(1)) * scale


def parse_publish(specs: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``-p [IP:][HOST:]PORT`` -> (ExposedPorts, PortBindings)."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[Any]] = {}
    for spec in specs:
        parts = spec.split(":")
        if not 1 <= len(parts) <= 3 or not parts[-1].split("/")[0].isdigit():
            fail(f"invalid publish {spec!r}: expected [IP:][HOSTPORT:]PORT", EXIT_USAGE)
        port = parts[-1] if "/" in parts[-1] else f"{parts[-1]}/tcp"
        host_ip = parts[0] if len(parts) == 3 else ""
        host_port = parts[-2] if len(parts) >= 2 else ""
        exposed[port] = {}
        bindings.setdefault(port, []).append({"HostIp": host_ip, "HostPort": host_port})
    return exposed, bindings


# Everything after the image (or the container, for exec) is the command, flags included.
ARGS_AFTER_IMAGE = {"allow_interspersed_args": False}

run_options = [
    click.option("--name", default="", help="The container's name"),
    click.option("-e", "--env", multiple=True, help="KEY=VALUE"),
    click.option("-p", "--publish", multiple=True, help="[IP:][HOSTPORT:]PORT (on 127.0.0.1)"),
    click.option("-P", "--publish-all", is_flag=True, help="Publish every exposed port"),
    click.option("-v", "--volume", multiple=True, help="[NAME|/HOST:]/PATH[:ro]"),
    click.option("-m", "--memory", default="", help="Memory limit, e.g. 64m"),
    click.option("--cpu-shares", type=int, default=0, help="Relative CPU weight"),
    click.option("--pids-limit", type=int, default=0, help="Most processes"),
    click.option(
        "--network", type=click.Choice(["bridge", "none"]), default="bridge", show_default=True
    ),
    click.option("--entrypoint", default=None),
    click.option("-w", "--workdir", default=""),
    click.option("-u", "--user", default=""),
    click.option("-l", "--label", multiple=True, help="KEY=VALUE"),
    click.option("--read-only", is_flag=True, help="A read-only root filesystem"),
    click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits"),
]


def with_run_options(fn: Any) -> Any:
    for option in reversed(run_options):
        fn = option(fn)
    return fn


def create_body(image: str, command: tuple[str, ...], o: dict[str, Any]) -> dict[str, Any]:
    exposed, bindings = parse_publish(o["publish"])
    host: dict[str, Any] = {
        "Binds": list(o["volume"]), "PortBindings": bindings,
        "PublishAllPorts": o["publish_all"], "NetworkMode": o["network"],
        "ReadonlyRootfs": o["read_only"], "AutoRemove": o["auto_remove"],
        "CpuShares": o["cpu_shares"], "PidsLimit": o["pids_limit"],
        "Memory": parse_memory(o["memory"]) if o["memory"] else 0,
    }  # fmt: skip
    return {
        "Image": image, "Cmd": list(command) or None, "Env": list(o["env"]),
        "Entrypoint": [o["entrypoint"]] if o["entrypoint"] is not None else None,
        "WorkingDir": o["workdir"], "User": o["user"], "ExposedPorts": exposed,
        "Labels": key_values(o["label"], "label"), "HostConfig": host,
    }  # fmt: skip


def _create(api: ApiClient, image: str, command: tuple[str, ...], o: dict[str, Any]) -> str:
    """Create it; an image not here is pulled first, as the docker CLI does (here: made, for
    the base images scow can make)."""
    body = create_body(image, command, o)
    params = {"name": o["name"]}
    try:
        cid: str = api.json("POST", "/containers/create", params=params, json=body)["Id"]
    except ApiClientError as exc:
        if exc.status != 404 or "image" not in exc.message:
            raise
        click.echo(f"Unable to find image {image!r} here: pulling", err=True)
        for raw in api.stream_lines("POST", "/images/create", params={"fromImage": image}):
            message = json.loads(raw) if raw else {}
            if "error" in message:
                fail(message["error"])
        cid = api.json("POST", "/containers/create", params=params, json=body)["Id"]
    return cid


@click.command(context_settings=ARGS_AFTER_IMAGE)
@click.option("-d", "--detach", is_flag=True, help="Print the id and leave it running")
@with_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@api_command
def run(detach: bool, image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create and start a container; without -d, stream its output and exit with its code."""
    api = client()
    cid = _create(api, image, command, o)
    if detach:
        api.request("POST", f"/containers/{cid}/start")
        click.echo(cid)
        return
    params = {"stream": 1, "stdout": 1, "stderr": 1}
    condition = "removed" if o["auto_remove"] else "next-exit"
    # As the docker CLI does: attached and waiting (both responses begun) before the start,
    # so that neither the output nor the exit code of a quick --rm container is missed.
    with (
        api.stream("POST", f"/containers/{cid}/attach", params=params,
                   timeout=None) as attached,
        api.stream("POST", f"/containers/{cid}/wait", params={"condition": condition},
                   timeout=None) as waited,
    ):  # fmt: skip
        for response in (attached, waited):
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
        api.request("POST", f"/containers/{cid}/start")
        _write_frames(attached.iter_bytes())
        code = json.loads(waited.read())
    if code.get("Error"):
        fail(f"waiting for {cid[:12]}: {code['Error'].get('Message', code['Error'])}")
    sys.exit(int(code["StatusCode"]))


@click.command(context_settings=ARGS_AFTER_IMAGE)
@with_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@api_command
def create(image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create a container without starting it; print its id."""
    click.echo(_create(client(), image, command, o))


def _each(action: str, path: str, refs: tuple[str, ...], **params: Any) -> None:
    api = client()
    for ref in refs:
        api.request("POST" if action != "DELETE" else "DELETE", path.format(ref), params=params)
        click.echo(ref)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@api_command
def start(containers: tuple[str, ...]) -> None:
    """Start created or stopped containers."""
    _each("POST", "/containers/{}/start", containers)


@click.command()
@click.option("-t", "--time", "seconds", type=int, default=10, show_default=True,
              help="Seconds to wait before killing it")  # fmt: skip
@click.argument("containers", nargs=-1, required=True)
@api_command
def stop(seconds: int, containers: tuple[str, ...]) -> None:
    """Stop containers: their stop signal, then SIGKILL after the timeout."""
    _each("POST", "/containers/{}/stop", containers, t=seconds)


@click.command()
@click.option("-t", "--time", "seconds", type=int, default=10, show_default=True)
@click.argument("containers", nargs=-1, required=True)
@api_command
def restart(seconds: int, containers: tuple[str, ...]) -> None:
    """Stop containers, then start them again."""
    _each("POST", "/containers/{}/restart", containers, t=seconds)


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True)
@click.argument("containers", nargs=-1, required=True)
@api_command
def kill(sig: str, containers: tuple[str, ...]) -> None:
    """Send a signal to containers."""
    _each("POST", "/containers/{}/kill", containers, signal=sig)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill running containers first")
@click.option("-v", "--volumes", is_flag=True, help="Also remove their anonymous volumes")
@click.argument("containers", nargs=-1, required=True)
@api_command
def rm(force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""
    _each("DELETE", "/containers/{}", containers, force=int(force), v=int(volumes))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@api_command
def pause(containers: tuple[str, ...]) -> None:
    """Freeze every process of containers."""
    _each("POST", "/containers/{}/pause", containers)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@api_command
def unpause(containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""
    _each("POST", "/containers/{}/unpause", containers)


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
    _write_frames(_stream(client(), "GET", f"/containers/{container}/logs", params=params))


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
    _write_frames(_stream(api, "POST", f"/exec/{exec_id}/start", json={"Detach": False}))
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
        data = b"".join(_stream(api, "GET", f"/containers/{container}/archive",
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
    _each("DELETE", "/volumes/{}", names, force=int(force))


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
