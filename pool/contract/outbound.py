"""Where the host's own requests may go: X-Callback-Url, and ADD <url> in builds.

A callback URL comes from whoever calls a function, who may be anyone: left
alone, it would let them make the node POST to its own loopback (the metrics
port, another tenant's published port, the gateway) or to a cloud's metadata
address. So: http(s) only, and no loopback, link-local, unspecified or multicast
address unless the operator's allow-list (``SCOW_CALLBACK_ALLOW``: addresses,
networks such as ``10.0.0.0/8``, or host names, comma-separated) names it.

The gateway checks what a URL says (``check_url``: an address written in it, or
``localhost``); the node checks again where the name leads at the moment it
connects (``resolve``), and connects to that address: a name that resolves
elsewhere between the two checks (DNS rebinding) does not get through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundRefused(Exception):
    """A URL the host will not request, and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"refusing {url[:200]!r}: {reason}")


@dataclass(frozen=True)
class Allow:
    """The operator's exceptions to the rule."""

    networks: tuple[Network, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> Allow:
        """``127.0.0.1:9000`` is not an entry (ports are not checked); ``127.0.0.1`` is.

        >>> Allow.parse("127.0.0.1, 10.0.0.0/8,hooks.internal").names
        frozenset({'hooks.internal'})
        """
        networks: list[Network] = []
        names: set[str] = set()
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(names))

    def address_allowed(self, address: Address) -> bool:
        if any(address in net for net in self.networks):
            return True
        return not (address.is_loopback or address.is_link_local or address.is_unspecified
                    or address.is_multicast or address.is_reserved)  # fmt: skip


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # with its query


def check_url(url: str, allow: Allow) -> Target:
    """What a URL says, checked: http(s), a host, and (when the host is an address, or
    localhost) an address that may be reached."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(url, f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(url, "only http:// and https:// are allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise OutboundRefused(url, "it names no host")
    if host in allow.names:
        pass
    elif host == "localhost" or host.endswith(".localhost"):
        raise OutboundRefused(url, "loopback is not allowed (SCOW_CALLBACK_ALLOW)")
    else:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not allow.address_allowed(address):
            raise OutboundRefused(url, f"{address} is a loopback, link-local or otherwise "
                                  "private-to-this-host address (SCOW_CALLBACK_ALLOW)")  # fmt: skip
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default, path)


async def resolve(target: Target, allow: Allow) -> str:
    """The address to connect to for ``target``: every address its name has now must be
    allowed (a name that also leads to loopback is refused whole)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM)  # fmt: skip
    except OSError as exc:
        raise OutboundRefused(target.url, f"cannot resolve {target.host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if target.host in allow.names:  # the operator vouches for the name, wherever it leads
        return str(addresses[0])
    refused = [a for a in addresses if not allow.address_allowed(a)]
    if refused or not addresses:
        where = refused[0] if refused else "nothing"
        raise OutboundRefused(target.url, f"{target.host} resolves to {where}, which is not "
                              "allowed (SCOW_CALLBACK_ALLOW)")  # fmt: skip
    return str(addresses[0])


async def post(
    target: Target, address: str, body: bytes, headers: list[tuple[str, str]],
    timeout: float = 10.0,
) -> int:  # fmt: skip
    """POST ``body`` to ``target`` at ``address`` (as ``resolve`` gave it: the name is not
    looked up again); its status. The answer's body is not read past 64 KiB."""
    import ssl

    context = ssl.create_default_context() if target.scheme == "https" else None
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    if ":" in target.host:
        host_header = f"[{target.host}]:{target.port}"
    head = [f"POST {target.path} HTTP/1.1", f"Host: {host_header}", "Connection: close",
            f"Content-Length: {len(body)}"]  # fmt: skip
    for key, value in headers:
        if key.lower() not in ("host", "content-length", "connection", "transfer-encoding"):
            head.append(f"{key}: {value}".replace("\r", "").replace("\n", ""))
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + body

    async def exchange() -> int:
        reader, writer = await asyncio.open_connection(
            address, target.port, ssl=context,
            server_hostname=target.host if context is not None else None,
        )  # fmt: skip
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise OSError(f"not an HTTP answer: {status_line[:80]!r}")
            await reader.read(64 << 10)
            return int(parts[1])
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)
