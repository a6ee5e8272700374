"""The /etc/hosts, /etc/resolv.conf and /etc/hostname a container sees."""

from __future__ import annotations

from collections.abc import Iterable


def hosts_file(ip: str, hostname: str, links: Iterable[tuple[str, str, str]] = ()) -> str:
    r"""``links`` are (address, alias, container name) of linked containers.

    >>> hosts_file("10.0.0.2", "web", [("10.0.0.3", "db", "pg1")]).splitlines()[2:]
    ['10.0.0.2\tweb', '10.0.0.3\tdb pg1']
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{ip or '127.0.0.1'}\t{hostname}")
    for addr, alias, name in links:
        names = alias if alias == name else f"{alias} {name}"
        lines.append(f"{addr}\t{names}")
    return "\n".join(lines) + "\n"


def resolv_conf(host_resolv: str) -> str:
    """The host's resolver config without loopback nameservers (unreachable from a netns).

    >>> resolv_conf("nameserver 127.0.0.53\\nnameserver 10.1.1.1\\nsearch lan\\n")
    'nameserver 10.1.1.1\\nsearch lan\\n'
    """
    out = []
    for line in host_resolv.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            addr = words[1]
            if addr.startswith("127.") or addr == "::1":
                continue
        out.append(line.strip())
    return "\n".join(out) + "\n" if out else ""
