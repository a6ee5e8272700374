"""ADD <url> in builds: the node downloads, within its outbound policy (contract/outbound.py).

The URL is a Dockerfile's, so anyone's: it is checked as a callback's is, the name
resolved once and every address it has checked, and the connection made to that
address (TLS still verified against the name). Redirects are not followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import shutil
import socket
import ssl
from collections.abc import Callable
from typing import BinaryIO

from pool.contract import outbound

MAX_DOWNLOAD = 1 << 30


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to a fixed address, its certificate checked against the URL's name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetcher(allow: outbound.Allow, timeout: float = 60.0) -> Callable[[str, BinaryIO], None]:
    """A ``fetch(url, out)`` for the builder, keeping to ``allow``."""

    def fetch(url: str, out: BinaryIO) -> None:
        target = outbound.check_url(url, allow)
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
        if target.host not in allow.names:
            refused = [a for a in addresses if not allow.address_allowed(a)]
            if refused:
                raise outbound.OutboundRefused(url, f"{target.host} resolves to {refused[0]}")
        address = str(addresses[0])
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = _Pinned(target.host, address, target.port, timeout)
        else:
            conn = http.client.HTTPConnection(address, target.port, timeout=timeout)
        try:
            conn.request("GET", target.path, headers={"Host": target.host})
            response = conn.getresponse()
            if response.status != 200:
                raise outbound.OutboundRefused(url, f"answered {response.status}")
            length = int(response.getheader("content-length") or 0)
            if length > MAX_DOWNLOAD:
                raise outbound.OutboundRefused(url, f"{length} bytes, over {MAX_DOWNLOAD}")
            shutil.copyfileobj(_Capped(response, MAX_DOWNLOAD, url), out, 1 << 20)
        finally:
            conn.close()

    return fetch


class _Capped:
    def __init__(self, src: http.client.HTTPResponse, cap: int, url: str) -> None:
        self.src, self.left, self.url = src, cap, url

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n if n > 0 else 1 << 20)
        self.left -= len(data)
        if self.left < 0:
            raise outbound.OutboundRefused(self.url, f"more than {MAX_DOWNLOAD} bytes")
        return data
