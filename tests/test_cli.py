"""The `scow` CLI against a real `scow up`: output for people and scripts, and exit codes."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts import Host, scratch_host


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with scratch_host("scow-cli-") as running:
        assert running.scow("image", "bootstrap", "busybox").returncode == 0
        yield running


def test_build_images_history_tag_rmi(host: Host) -> None:
    built = host.scow("build", "-t", "examples/busybox-wc", "images/examples/busybox-wc")
    assert built.returncode == 0, built.stderr
    assert "Successfully tagged examples/busybox-wc" in built.stdout
    listed = json.loads(host.scow("images", "--format", "json").stdout)
    assert any("examples/busybox-wc:latest" in i["RepoTags"] for i in listed)
    table = host.scow("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    history = host.scow("history", "examples/busybox-wc")
    assert history.returncode == 0 and "CMD" in history.stdout
    assert host.scow("tag", "examples/busybox-wc", "tests/wc:2").returncode == 0
    removed = host.scow("rmi", "tests/wc:2")
    assert removed.returncode == 0 and "Untagged: tests/wc:2" in removed.stdout
    missing = host.scow("rmi", "tests/wc:2")
    assert missing.returncode == 4 and "tests/wc:2" in missing.stderr


def test_functions_from_yaml_and_flags(host: Host, tmp_path: Path) -> None:
    assert host.scow("build", "-q", "-t", "examples/busybox-wc",
                     "images/examples/busybox-wc").returncode == 0  # fmt: skip
    spec = tmp_path / "fn.yaml"
    spec.write_text("name: wc\nimage: examples/busybox-wc\nprotocol: stdio\npool:\n  min: 1\n")
    deployed = host.scow("fn", "deploy", "-f", str(spec))
    assert deployed.returncode == 0 and deployed.stdout.startswith("Deployed wc"), deployed
    updated = host.scow("fn", "deploy", "-f", str(spec), "--timeout", "5s")
    assert updated.stdout.startswith("Updated wc")
    assert json.loads(host.scow("fn", "inspect", "wc").stdout)["timeout"] == 5.0

    called = host.scow("fn", "invoke", "wc", input="hello world\n")
    assert called.returncode == 0 and called.stdout.split() == ["1", "2", "12"]
    listed = json.loads(host.scow("fn", "ls", "--format", "json").stdout)
    assert [(f["name"], f["invocationCount"]) for f in listed] == [("wc", 1)]
    assert host.scow("fn", "ls").stdout.split()[:6] == [
        "NAME", "IMAGE", "PROTOCOL", "INVOCATIONS", "WARM", "QUEUED"]  # fmt: skip
    call_id = host.scow("fn", "invoke", "wc", "--async", "-d", "a b").stdout.strip()
    assert len(call_id) == 24
    scaled = host.scow("fn", "scale", "wc", "2")
    assert scaled.returncode == 0 and "2 warm" in scaled.stdout

    assert host.scow("fn", "rm", "wc").returncode == 0
    assert host.scow("fn", "inspect", "wc").returncode == 4
    assert host.scow("fn", "invoke", "wc", "-d", "x").returncode == 4


def test_bad_input_gives_usage_exit_codes(host: Host, tmp_path: Path) -> None:
    no_image = host.scow("fn", "deploy", "x")
    assert no_image.returncode == 2 and "image" in no_image.stderr
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    assert host.scow("fn", "deploy", "-f", str(bad_yaml)).returncode == 2
    refused = host.scow("fn", "deploy", "Bad_Name", "--image", "busybox")
    assert refused.returncode == 1 and "name" in refused.stderr
    assert host.scow("fn", "deploy", "a", "--image", "b", "-e", "novalue").returncode == 2


def test_environments(host: Host) -> None:
    created = host.scow("env", "create", "--ttl", "1m", "--format", "json", "busybox",
                        "sleep", "600")  # fmt: skip
    assert created.returncode == 0, created.stderr
    env = json.loads(created.stdout)
    listed = host.scow("env", "ls")
    assert env["id"] in listed.stdout
    extended = json.loads(host.scow("env", "extend", env["id"], "--ttl", "10m",
                                    "--format", "json").stdout)  # fmt: skip
    assert extended["expires_in"] > 500
    assert host.scow("env", "rm", env["id"]).returncode == 0
    assert host.scow("env", "inspect", env["id"]).returncode == 4


def test_tcp_with_the_token_file_and_unreachable_hosts(host: Host) -> None:
    tcp = {**host.env, "SCOW_HOST": f"tcp://127.0.0.1:{host.port}"}
    assert host.scow("info", env=tcp).returncode == 0  # token from the state dir's file
    wrong = host.scow("info", env={**tcp, "SCOW_TOKEN": "wrong"})
    assert wrong.returncode == 1 and "Bearer" in wrong.stderr
    gone = host.scow("info", env={**host.env, "SCOW_RUN_DIR": "/nonexistent"})
    assert gone.returncode == 3 and "scow up" in gone.stderr
    info = host.scow("info")
    assert "node" in info.stdout and "live" in info.stdout
    assert host.scow("version").stdout.startswith("client")


def test_save_load_import_commit(host: Host, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    saved = host.scow("save", "-o", str(archive), "busybox")
    assert saved.returncode == 0, saved.stderr
    assert archive.stat().st_size > 100_000 and not list(tmp_path.glob(".*part"))
    loaded = host.scow("load", "-i", str(archive))
    assert loaded.returncode == 0 and "Loaded image: busybox:latest" in loaded.stdout
    assert host.scow("save", "-o", str(tmp_path / "x.tar"), "no/such").returncode == 4
    assert not (tmp_path / "x.tar").exists()

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        motd = tmp_path / "motd"
        motd.write_text("hi\n")
        tar.add(motd, arcname="etc/motd")
    imported = host.scow("import", str(rootfs), "tests/imported:1", "-m", "by hand")
    assert imported.returncode == 0 and imported.stdout.startswith("sha256:")
    assert "by hand" in host.scow("history", "tests/imported:1").stdout
    assert host.scow("rmi", "tests/imported:1").returncode == 0

    env = json.loads(host.scow("env", "create", "--format", "json", "busybox", "sh", "-c",
                               "touch /made && sleep 600").stdout)  # fmt: skip
    committed = host.scow("commit", env["id"], "tests/committed", "-m", "snapshot")
    assert committed.returncode == 0 and committed.stdout.startswith("sha256:"), committed.stderr
    assert host.scow("env", "rm", env["id"]).returncode == 0
    assert host.scow("rmi", "tests/committed").returncode == 0


def test_calls_events_top_and_info(host: Host) -> None:
    assert host.scow("build", "-q", "-t", "examples/busybox-wc",
                     "images/examples/busybox-wc").returncode == 0  # fmt: skip
    assert host.scow("fn", "deploy", "obs", "--image", "examples/busybox-wc",
                     "--protocol", "stdio").returncode == 0  # fmt: skip
    started = time.time()
    assert host.scow("fn", "invoke", "obs", "-d", "one two").returncode == 0
    calls = json.loads(host.scow("fn", "calls", "obs", "--format", "json").stdout)
    assert len(calls) == 1 and calls[0]["status"] == 200 and calls[0]["state"] == "done"
    assert host.scow("fn", "calls", "obs").stdout.split()[:3] == ["CALL", "STATE", "STATUS"]
    events = host.scow("events", "--since", str(started - 1), "--until", str(time.time() + 1),
                       "-f", "function=obs", "--format", "json")  # fmt: skip
    actions = [(e["Type"], e["Action"]) for e in map(json.loads, events.stdout.splitlines())]
    assert ("container", "start") in actions and ("container", "destroy") in actions
    screen = host.scow("top", "--once")
    assert screen.returncode == 0 and "obs" in screen.stdout and "START p50/p99" in screen.stdout
    info = host.scow("info").stdout
    assert "metrics http://127.0.0.1:" in info
    port = int(info.split("metrics http://127.0.0.1:")[1].split("/")[0])
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'scow_calls_total{code="200",function="obs"} 1.0' in scraped
    assert host.scow("fn", "rm", "obs").returncode == 0


@pytest.mark.parametrize("auth", [False, True])
def test_fn_invoke_sends_the_token_only_to_a_function_that_needs_it(auth: bool) -> None:
    """Over TCP the CLI holds the API token: a function deployed without auth must not be
    handed it. The API here is a recorder on a real socket, so that what the CLI sent is
    seen as sent."""
    seen: dict[str, str | None] = {}

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(json.dumps({"name": "f", "auth": auth}).encode())

        def do_POST(self) -> None:
            seen["authorization"] = self.headers.get("Authorization")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(b"called")

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        env = {**os.environ, "SCOW_HOST": f"tcp://127.0.0.1:{server.server_port}",
               "SCOW_TOKEN": "the-api-token"}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "fn", "invoke", "f", "-d", "x"],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    assert done.returncode == 0 and done.stdout == "called", done.stderr
    assert seen["authorization"] == ("Bearer the-api-token" if auth else None)


def test_each_lazy_subcommand_is_the_command_its_help_line_stands_for() -> None:
    """`scow --help` shows SUBCOMMANDS' lines without importing their modules: each names
    its command, and no command of those modules is left out of the table."""
    import importlib

    import click

    from gateway.cli import SUBCOMMANDS, main

    modules = set()
    for name, (target, line) in SUBCOMMANDS.items():
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == name, (name, target)
        assert line and len(line) <= 60 and not line.endswith("."), line
        modules.add(module)
    for module in modules:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, click.Command) and value.callback is not None:
                top_level = value.name in SUBCOMMANDS or value.name in main.commands
                nested = any(value.name in getattr(g, "commands", {})
                             for g in vars(importlib.import_module(module)).values()
                             if isinstance(g, click.Group))  # fmt: skip
                assert top_level or nested, f"{module}: {value.name} is in no group"
    from gateway.cli.containers import COMMANDS  # the docker verbs, each top-level too

    assert {c.name for c in COMMANDS} <= set(SUBCOMMANDS)
    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "--help"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    for name, (_, line) in SUBCOMMANDS.items():
        assert f"  {name} " in shown and line in shown, name
