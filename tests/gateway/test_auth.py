"""The token: made once with mode 0600, required on TCP, not on the Unix socket."""

from __future__ import annotations

import logging
import stat
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gateway.auth import load_or_create_token
from pool.contract.config import HostConfig
from tests.gateway.conftest import RunningGateway, serve


def test_token_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token"
    first = load_or_create_token(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == first
    assert list(path.parent.iterdir()) == [path]  # no temp file left


@pytest.mark.parametrize(
    "path",
    ["/system/functions", "/system/info", "/metrics", "/openapi.json", "/system/environments",
     "/images/json", "/v1.43/images/json", "/system/calls/abc"],
)  # fmt: skip
async def test_tcp_needs_the_token(gateway: RunningGateway, path: str) -> None:
    async with gateway.tcp(token=None) as anonymous, gateway.tcp("wrong-token") as wrong:
        for client in (anonymous, wrong):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_right_token_and_unix_socket_pass(gateway: RunningGateway) -> None:
    async with gateway.tcp() as tcp, gateway.unix() as unix:
        assert (await tcp.get("/system/functions")).status_code == 200
        assert (await unix.get("/system/functions")).status_code == 200
        assert (await unix.get("/metrics")).status_code == 200


async def test_open_routes_need_no_token(gateway: RunningGateway) -> None:
    async with gateway.tcp(token=None) as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        # Function routes are open (the function is unknown: 404, not 401).
        assert (await anonymous.post("/function/nope")).status_code == 404
        assert (await anonymous.post("/async-function/nope")).status_code == 404


async def test_the_unix_socket_is_root_only(gateway: RunningGateway) -> None:
    mode = gateway.socket.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600 and gateway.socket.stat().st_uid == 0


async def test_every_response_has_a_request_id(gateway: RunningGateway) -> None:
    async with gateway.tcp() as tcp:
        given = await tcp.get("/healthz", headers={"X-Request-Id": "abc-123"})
        made = await tcp.get("/healthz")
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 16


async def test_json_errors_everywhere(gateway: RunningGateway) -> None:
    async with gateway.tcp() as tcp:
        missing = await tcp.get("/no/such/route")
        wrong_method = await tcp.delete("/system/info")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405
    assert set(wrong_method.json()) == {"error", "message"}


async def test_a_token_with_bytes_outside_ascii_is_a_401(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get("/system/info", headers={"Authorization": b"Bearer t\xe9st"})
    assert response.status_code == 401


async def test_a_host_that_is_not_ours_is_refused_on_tcp_only(gateway: RunningGateway) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own name."""
    async with gateway.tcp() as client:
        rebound = await client.get("/system/info", headers={"Host": "evil.example:8080"})
        assert rebound.status_code == 400 and rebound.json()["error"] == "invalid_host"
        ok = await client.get("/healthz", headers={"Host": "localhost:8080"})
        assert ok.status_code == 200
    async with gateway.unix() as local:
        assert (await local.get("/healthz", headers={"Host": "evil.example"})).status_code == 200


async def test_a_configured_name_is_allowed(settings: HostConfig, run_dir: Path) -> None:
    named = replace(settings, allowed_hosts="*.example.com")
    async with serve(named, run_dir) as gw, gw.tcp() as client:
        response = await client.get("/healthz", headers={"Host": "fn.example.com"})
        assert response.status_code == 200
        assert (await client.get("/healthz", headers={"Host": "example.org"})).status_code == 400


async def test_a_path_cannot_forge_a_log_line(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="scow.gateway"):
        async with gateway.tcp() as client:
            await client.get("/nope%0A2026-01-01 INFO forged line")
    lines = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    assert "\\x0a" in lines[0]
