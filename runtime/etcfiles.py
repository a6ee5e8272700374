"""The /etc/hosts, /etc/resolv.conf and /etc/hostname a container sees."""

from __future__ import annotations

from collections.abc import Iterable


def hosts_file(
    ip: str,
    hostname: str,
    links: Iterable[tuple[str, str, str]] = (),
    members: Iterable[tuple[str, Iterable[str]]] = (),
) -> str:
    r"""``links`` are (address, alias, container name) of linked containers, a container
    once per alias; ``members`` (address, names) of everyone on the container's user-defined
    networks, itself included. A name comes once, on the first address given for it.

    >>> hosts_file("10.0.0.2", "web", [("10.0.0.3", "db", "pg1"), ("10.0.0.3", "pg", "pg1")],
    ...            [("10.1.0.5", ["cache", "redis"])]).splitlines()[2:]
    ['10.0.0.2\tweb', '10.0.0.3\tdb pg1 pg', '10.1.0.5\tcache redis']
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    rows: dict[str, list[str]] = {ip or "127.0.0.1": [hostname]}
    seen = {hostname}
    for addr, alias, name in links:
        rows.setdefault(addr, [])
        for n in (alias, name):
            if n not in seen:
                seen.add(n)
                rows[addr].append(n)
    for addr, names in members:
        rows.setdefault(addr, [])
        for n in names:
            if n not in seen:
                seen.add(n)
                rows[addr].append(n)
    lines += [f"{addr}\t{' '.join(names)}" for addr, names in rows.items() if names]
    return "\n".join(lines) + "\n"


def own_resolv_conf(servers: Iterable[str], search: Iterable[str], options: Iterable[str]) -> str:
    """A container's own resolver config (``--dns``, ``--dns-search``, ``--dns-option``).

    >>> own_resolv_conf(["10.0.0.53"], ["corp"], ["ndots:2"])
    'nameserver 10.0.0.53\\nsearch corp\\noptions ndots:2\\n'
    """
    lines = [f"nameserver {s}" for s in servers]
    if search := list(search):
        lines.append("search " + " ".join(search))
    if options := list(options):
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n" if lines else ""


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
