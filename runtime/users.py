"""Resolving ``-u name|uid[:group|gid]`` against the image's /etc/passwd and /etc/group."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import InvalidOption


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _table(text: str, width: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            if len(fields) >= width:
                rows.append(fields)
    return rows


def resolve_user(spec: str, passwd: str, group: str) -> User:
    """The uid, gid, supplementary groups and home for ``spec`` inside an image.

    >>> resolve_user("nobody", "nobody:x:65534:65534::/nonexistent:/bin/false", "")
    User(uid=65534, gid=65534, additional_gids=(), home='/nonexistent')
    """
    user_part, _, group_part = (spec or "0").partition(":")
    users = _table(passwd, 7)
    groups = _table(group, 4)

    entry = next((u for u in users if u[0] == user_part), None)
    if entry is None and user_part.isdigit():
        entry = next((u for u in users if u[2] == user_part), None)
        uid = int(user_part)
    elif entry is None:
        raise InvalidOption("user", spec, f"no user {user_part!r} in the image's /etc/passwd")
    else:
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry and entry[5] else "/"

    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((g for g in groups if g[0] == group_part), None)
            if g is None:
                raise InvalidOption(
                    "user", spec, f"no group {group_part!r} in the image's /etc/group"
                )
            gid = int(g[2])
    name = entry[0] if entry else None
    extra = tuple(
        sorted({int(g[2]) for g in groups if name and name in g[3].split(",") and int(g[2]) != gid})
    )
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise InvalidOption("user", spec, "ids must be below 4294967295")
    return User(uid=uid, gid=gid, additional_gids=extra, home=home)
