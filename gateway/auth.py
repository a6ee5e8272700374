"""The API token: made on first start, required on TCP, not on the root-only Unix socket.

A request over the Unix socket is trusted: only root can connect to it (mode
0600). Over TCP, everything but /healthz and function calls needs
``Authorization: Bearer <token>``; a function deployed with ``auth: true``
needs it too (the call route checks that, knowing the function).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http import error_response, printable

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
    header = dict(scope["headers"]).get(b"authorization", b"")
    scheme, _, given = header.partition(b" ")
    # Bytes, not text: a token with bytes outside ASCII is a wrong token (401), not a 500.
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())


def carries_token(value: str, token: str) -> bool:
    """Whether a header's value holds the API token, as it is or inside Basic's base64:
    such a header never reaches a function, whatever it is called."""
    if not token:
        return False
    if token in value:
        return True
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            return token in base64.b64decode(rest.strip(), validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            return False
    return False


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


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether a TCP request's ``Host`` may be served: an IP address (a browser sends one
    only to a page loaded from that address), ``localhost``, or a name the operator
    configured (``SCOW_ALLOWED_HOSTS``; ``*.example.com`` covers its subdomains). Any
    other name is how DNS rebinding reaches a loopback API from a web page.

    >>> host_allowed("127.0.0.1:8080", ()), host_allowed("evil.example:8080", ())
    (True, False)
    >>> host_allowed("fn.example.com", ["*.example.com"]), host_allowed("[::1]:80", ())
    (True, True)
    """
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if name == "localhost" or not name:
        return True
    for pattern in allowed:
        pattern = pattern.strip().lower().rstrip(".")
        if name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class HostCheck:
    """ASGI middleware: a request on TCP whose ``Host`` is not allowed gets 400."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app, self.allowed = app, tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not over_unix_socket(scope):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not host_allowed(host, self.allowed):
                response = error_response(
                    400, "invalid_host", f"Host {printable(host[:100])!r} is not this API's "
                    "address or a name in SCOW_ALLOWED_HOSTS",
                )  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
