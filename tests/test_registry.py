"""Push and pull against a real registry (distribution 2.8) started by the test on
127.0.0.1, through a real `scow up`, with the docker CLI and scow's own: plain, behind
basic auth after `docker login`, behind a token service, and behind a proxy that spoils
what the registry sends."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts import Host, docker, docker_host, ok
from tests.registry import REGISTRY, SpoilingProxy, TokenService, registry

pytestmark = [
    pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI"),
    pytest.mark.skipif(REGISTRY is None, reason="no docker-registry"),
    pytest.mark.slow,
]

DOCKERFILE = "FROM busybox\nRUN echo shipped > /shipped && head -c 300000 /dev/urandom > /noise\n"


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with docker_host("scow-reg-") as running:
        yield running


def _build(host: Host, tmp: Path, tag: str) -> str:
    (tmp / "Dockerfile").write_text(DOCKERFILE)
    ok(docker(host, "build", "-q", "-t", tag, str(tmp)))
    return ok(docker(host, "inspect", "-f", "{{.Id}}", tag)).strip()


def _layers(host: Host) -> set[str]:
    return {p.name for p in (host.state / "images" / "layers").iterdir()}


def _manifest_layers(registry_dir: Path, repo: str, tag: str) -> set[str]:
    """The layer digests of repo:tag, read from the registry's own storage."""
    root = registry_dir / "data" / "docker" / "registry" / "v2"
    link = root / "repositories" / repo / "_manifests" / "tags" / tag / "current" / "link"
    digest = link.read_text().strip().removeprefix("sha256:")
    blob = root / "blobs" / "sha256" / digest[:2] / digest / "data"
    return {layer["digest"] for layer in json.loads(blob.read_text())["layers"]}


def test_push_rmi_pull_same_image_and_a_second_pull_moves_no_layer_bytes(
    host: Host, tmp_path: Path
) -> None:
    with registry(tmp_path / "registry") as reg:
        ref = f"{reg.host}/team/app:1"
        built = _build(host, tmp_path, ref)
        pushed = ok(docker(host, "push", ref))
        assert "Pushed" in pushed and "digest: sha256:" in pushed
        ok(docker(host, "rmi", ref))
        ok(docker(host, "image", "prune", "-a", "-f"))  # its layers go too: a real download
        layers = _manifest_layers(tmp_path / "registry", "team/app", "1")
        before = reg.blob_bytes(layers)
        pulled = ok(docker(host, "pull", ref))
        assert "Pull complete" in pulled
        assert ok(docker(host, "inspect", "-f", "{{.Id}}", ref)).strip() == built  # same id
        moved = reg.blob_bytes(layers) - before
        assert moved > 300_000  # the layers came over the wire, once
        again = ok(docker(host, "pull", ref))
        assert "Image is up to date" in again and "Pull complete" not in again
        assert reg.blob_bytes(layers) - before == moved  # a second pull moves no layer bytes
        assert ok(docker(host, "run", "--rm", ref, "cat", "/shipped")) == "shipped\n"
        digests = ok(docker(host, "images", "--digests", "--format", "{{.Digest}}", ref))
        assert digests.startswith("sha256:")

        # the scow CLI's verbs; another repository of the same registry mounts the layers
        other = f"{reg.host}/team/copy:2"
        ok(docker(host, "tag", ref, other))
        scow_push = host.scow("push", other)
        assert scow_push.returncode == 0, scow_push.stderr
        assert "Mounted from team/app" in scow_push.stdout
        ok(docker(host, "rmi", other))
        scow_pull = host.scow("pull", other)
        assert scow_pull.returncode == 0 and scow_pull.stdout.strip().endswith(other)
        ok(docker(host, "rmi", other, ref))


def test_basic_auth_after_docker_login(host: Host, tmp_path: Path) -> None:
    with registry(tmp_path / "registry", users={"ann": "s3cret"}) as reg:
        ref = f"{reg.host}/private/app:1"
        _build(host, tmp_path, ref)
        denied = docker(host, "push", ref)
        assert denied.returncode != 0 and "login" in denied.stderr + denied.stdout
        wrong = docker(host, "login", "-u", "ann", "--password-stdin", reg.host, input=b"nope")
        assert wrong.returncode != 0
        login = docker(host, "login", "-u", "ann", "--password-stdin", reg.host,
                       input=b"s3cret\n")  # fmt: skip
        assert login.returncode == 0 and b"Login Succeeded" in login.stdout, login.stderr
        ok(docker(host, "push", ref))
        ok(docker(host, "rmi", ref))
        ok(docker(host, "pull", ref))
        ok(docker(host, "logout", reg.host))
        # scow's own login keeps the credentials where docker's config has them
        logged = host.scow("login", "-u", "ann", "--password-stdin", reg.host, input="s3cret")
        assert logged.returncode == 0 and "Login Succeeded" in logged.stdout, logged.stderr
        ok(docker(host, "rmi", ref))
        assert host.scow("pull", ref).returncode == 0
        ok(docker(host, "rmi", ref))


def test_the_registrys_token_flow(host: Host, tmp_path: Path) -> None:
    tokens = TokenService(tmp_path / "tokens", {"bo": "pa55"})
    try:
        with registry(tmp_path / "registry", token=tokens) as reg:
            ref = f"{reg.host}/tokened/app:1"
            _build(host, tmp_path, ref)
            login = docker(host, "login", "-u", "bo", "--password-stdin", reg.host,
                           input=b"pa55")  # fmt: skip
            assert login.returncode == 0, login.stderr
            ok(docker(host, "push", ref))
            ok(docker(host, "rmi", ref))
            ok(docker(host, "pull", ref))
            assert tokens.issued >= 2  # the registry sent us to its token service
            ok(docker(host, "rmi", ref))
    finally:
        tokens.close()


def test_a_registry_that_lies_is_caught_nothing_is_stored_and_a_retry_works(
    host: Host, tmp_path: Path
) -> None:
    with registry(tmp_path / "registry") as reg:
        _build(host, tmp_path, f"{reg.host}/spoiled/app:1")
        ok(docker(host, "push", f"{reg.host}/spoiled/app:1"))
        ok(docker(host, "rmi", f"{reg.host}/spoiled/app:1"))
        ok(docker(host, "image", "prune", "-a", "-f"))
        proxy = SpoilingProxy(reg.port)
        try:
            ref = f"{proxy.host}/spoiled/app:1"
            layers = _layers(host)
            for mode, said in (("manifest", "manifest sha256:"), ("corrupt", "blob sha256:"),
                               ("cut", "stopped sending it")):  # fmt: skip
                proxy.mode = mode
                failed = docker(host, "pull", ref)
                out = failed.stdout + failed.stderr
                assert failed.returncode != 0 and said in out, (mode, out)
                assert _layers(host) == layers  # nothing half-stored
                assert ref not in ok(docker(host, "images", "--format",
                                            "{{.Repository}}:{{.Tag}}"))  # fmt: skip
            proxy.mode = "pass"
            ok(docker(host, "pull", ref))  # the same pull, again: it works
            assert ok(docker(host, "run", "--rm", ref, "cat", "/shipped")) == "shipped\n"
            ok(docker(host, "rmi", ref))
        finally:
            proxy.close()
