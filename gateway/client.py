"""The API client the `scow` CLI uses: the Unix socket by default, TCP with a token.

``SCOW_HOST`` picks TCP (``tcp://127.0.0.1:8080`` or ``http://...``); the
token comes from ``SCOW_TOKEN`` or the token file in the state dir.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.config import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR

TOKEN_FILE = "token"


class ApiClientError(Exception):
    """The API said no (status, code, message), or could not be reached (status 0)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        self.status, self.error, self.message = status, error, message
        super().__init__(message)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    socket: Path | None = None
    token: str = ""

    @classmethod
    def from_env(cls) -> Endpoint:
        host = os.environ.get("SCOW_HOST", "")
        if not host or host.startswith("unix://"):
            run_dir = Path(os.environ.get("SCOW_RUN_DIR") or DEFAULT_RUN_DIR)
            socket = Path(host.removeprefix("unix://")) if host else run_dir / "scow.sock"
            return cls("http://scow", socket=socket)
        url = "http://" + host.removeprefix("tcp://") if host.startswith("tcp://") else host
        return cls(url.rstrip("/"), token=find_token())

    def describe(self) -> str:
        return f"unix://{self.socket}" if self.socket else self.base_url


def find_token() -> str:
    if token := os.environ.get("SCOW_TOKEN", ""):
        return token
    path = Path(os.environ.get("SCOW_STATE_DIR") or DEFAULT_STATE_DIR) / TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class ApiClient:
    def __init__(self, endpoint: Endpoint, timeout: float | None = 120.0) -> None:
        self.endpoint = endpoint
        transport = httpx.HTTPTransport(uds=str(endpoint.socket)) if endpoint.socket else None
        headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
        self.http = httpx.Client(
            base_url=endpoint.base_url, transport=transport, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The response; ApiClientError for a status of 400 or more, or no connection."""
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def stream_lines(self, method: str, path: str, **kw: Any) -> Iterator[str]:
        try:
            with self.http.stream(method, path, **kw) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> ApiClientError:
        hint = " (is `scow up` running?)" if self.endpoint.socket else ""
        return ApiClientError(
            0, "unreachable", f"cannot reach {self.endpoint.describe()}{hint}: {exc}"
        )


def error_of(response: httpx.Response) -> ApiClientError:
    try:
        body = response.json()
        return ApiClientError(
            response.status_code, str(body.get("error", "")), str(body.get("message", body))
        )
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        text = response.text.strip() or response.reason_phrase
        return ApiClientError(response.status_code, "", text)
