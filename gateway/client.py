"""The API client the `scow` CLI uses: the Unix socket by default, TCP with a token.

``SCOW_HOST`` picks TCP (``tcp://127.0.0.1:8080`` or ``http://...``); the token
comes from ``SCOW_TOKEN`` or the token file in the state dir. It stands on the
standard library's ``http.client`` alone, imported with the first request: a CLI
that starts in tens of milliseconds cannot afford an HTTP library's imports, and
``scow --help`` sends none.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from pool.contract.config import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR

if TYPE_CHECKING:  # imported with the first request (see above), not with the CLI
    import http.client

TOKEN_FILE = "token"
DEFAULT_TIMEOUT = 120.0


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
            socket_path = Path(host.removeprefix("unix://")) if host else run_dir / "scow.sock"
            return cls("http://scow", socket=socket_path)
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


@functools.cache
def _http() -> Any:
    """http.client, and a connection class of it for a Unix socket."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: Path, timeout: float | None) -> None:
            super().__init__("scow", timeout=timeout)
            self.path = path

        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                raise
            self.sock = sock

    http.client.UnixConnection = UnixConnection  # type: ignore[attr-defined]
    return http.client


class Headers:
    """A response's headers, looked up without regard to case."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, key: str, default: str | None = None) -> str | None:
        key = key.lower()
        return next((v for k, v in self._pairs if k.lower() == key), default)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


class Response:
    """One answer, read as it comes (``iter_bytes``, ``iter_lines``) or whole (``read``)."""

    def __init__(self, conn: http.client.HTTPConnection, raw: http.client.HTTPResponse) -> None:
        self._conn, self._raw = conn, raw
        self.status_code = raw.status
        self.reason_phrase = raw.reason
        self.headers = Headers([(k.lower(), v) for k, v in raw.getheaders()])
        self._content: bytes | None = None

    def read(self) -> bytes:
        if self._content is None:
            try:
                self._content = self._raw.read()
            except (OSError, _http().HTTPException) as exc:
                raise ApiClientError(0, "cut_short", f"the answer was cut short: {exc}") from None
            self.close()
        return self._content

    @property
    def content(self) -> bytes:
        return self.read()

    @property
    def text(self) -> str:
        return self.read().decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.read())

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            while chunk := self._raw.read1(65536):
                yield chunk
        except (OSError, _http().HTTPException) as exc:
            raise ApiClientError(0, "cut_short", f"the answer was cut short: {exc}") from None

    def iter_lines(self) -> Iterator[str]:
        if self._content is not None:
            yield from self._content.decode(errors="replace").splitlines()
            return
        try:
            while line := self._raw.readline():
                yield line.decode(errors="replace").rstrip("\r\n")
        except (OSError, _http().HTTPException) as exc:
            raise ApiClientError(0, "cut_short", f"the answer was cut short: {exc}") from None

    def close(self) -> None:
        self._raw.close()
        self._conn.close()


class ApiClient:
    def __init__(self, endpoint: Endpoint, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def close(self) -> None:
        """Nothing held between requests (each has its connection)."""

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        client = _http()
        conn: http.client.HTTPConnection
        if self.endpoint.socket is not None:
            conn = client.UnixConnection(self.endpoint.socket, timeout)
            return conn
        url = urlsplit(self.endpoint.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        if url.scheme == "https":
            conn = client.HTTPSConnection(url.hostname or "", port, timeout=timeout)
        else:
            conn = client.HTTPConnection(url.hostname or "", port, timeout=timeout)
        return conn

    def open(
        self, method: str, path: str, *, params: dict[str, Any] | None = None,
        json: Any = None, content: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float | str | None = "default", token: bool = True,
    ) -> Response:  # fmt: skip
        """Send a request and return its answer unread (the caller reads or closes it).

        ``token=False`` leaves the API token out (a function's route).
        """
        import json as json_module

        sent = dict(headers or {})
        body = content
        if json is not None:
            body = json_module.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        if token and self.endpoint.token:
            sent.setdefault("Authorization", f"Bearer {self.endpoint.token}")
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
        target = path + (f"?{query}" if query else "")
        conn = self._connection(self.timeout if timeout == "default" else timeout)  # type: ignore[arg-type]
        try:
            conn.request(method, target, body=body if body is not None else None, headers=sent)
            return Response(conn, conn.getresponse())
        except (OSError, _http().HTTPException) as exc:
            conn.close()
            raise self._unreachable(exc) from None

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kw: Any) -> Iterator[Response]:
        response = self.open(method, path, **kw)
        try:
            yield response
        finally:
            response.close()

    def request(self, method: str, path: str, **kw: Any) -> Response:
        """The response, read whole; ApiClientError for a status of 400 or more, or none."""
        response = self.open(method, path, **kw)
        response.read()
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def stream_lines(self, method: str, path: str, **kw: Any) -> Iterator[str]:
        with self.stream(method, path, **kw) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            yield from response.iter_lines()

    def _unreachable(self, exc: Exception) -> ApiClientError:
        hint = " (is `scow up` running?)" if self.endpoint.socket else ""
        return ApiClientError(
            0, "unreachable", f"cannot reach {self.endpoint.describe()}{hint}: {exc}"
        )


def error_of(response: Response) -> ApiClientError:
    try:
        body = response.json()
        return ApiClientError(
            response.status_code, str(body.get("error", "")), str(body.get("message", body))
        )
    except (ValueError, AttributeError, UnicodeDecodeError):
        text = response.text.strip() or response.reason_phrase
        return ApiClientError(response.status_code, "", text)
