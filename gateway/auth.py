"""The API token: made on first start, required on TCP, not on the root-only Unix socket.

A request over the Unix socket is trusted: only root can connect to it (mode
0600). Over TCP, everything but /healthz and function calls needs
``Authorization: Bearer <token>``; a function deployed with ``auth: true``
needs it too (the call route checks that, knowing the function).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http import error_response

OPEN_PREFIXES = ("/function/", "/async-function/")
OPEN_PATHS = {"/healthz"}


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new one written there (mode 0600) when there is none."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    try:
        os.link(tmp, path)  # atomic, and loses to a concurrent first start
    except FileExistsError:
        return path.read_text().strip()
    finally:
        tmp.unlink()
    return token


def over_unix_socket(scope: Scope) -> bool:
    # uvicorn gives (path, None) as the server of a Unix socket connection, (host,
    # port) for TCP. Anything else counts as TCP: an unknown listener needs the token.
    server = scope.get("server")
    return isinstance(server, tuple | list) and len(server) == 2 and server[1] is None


def authorized(scope: Scope, token: str) -> bool:
    if over_unix_socket(scope):
        return True
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


class TokenAuth:
    """ASGI middleware: 401 for a request on TCP without the token, where one is needed."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        needed = scope["type"] == "http" and not self._open(scope["path"])
        if needed and not authorized(scope, self.token):
            response = error_response(
                401, "unauthorized", "this route needs Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="scow"'},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
