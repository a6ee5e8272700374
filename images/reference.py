"""Image references as people write them: ``busybox``, ``app:v2``, ``reg:5000/team/app:1``."""

from __future__ import annotations

import re

from images.errors import InvalidReference

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?"
NAME_RE = re.compile(rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
ID_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{4,64}$")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def parse(ref: str) -> tuple[str, str]:
    """(name, tag) with ``latest`` as the default tag.

    >>> parse("registry:5000/team/app")
    ('registry:5000/team/app', 'latest')
    """
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    if "@" in ref:
        raise InvalidReference(ref, "digest references are not supported; use the image id")
    if not NAME_RE.match(name) or len(name) > 255:
        raise InvalidReference(ref, "a name is lowercase letters, digits and . _ - separated by /")
    if not TAG_RE.match(tag):
        raise InvalidReference(ref, "a tag is letters, digits, '_', '.' and '-' (max 128)")
    return name, tag


def normalize(ref: str) -> str:
    """``busybox`` -> ``busybox:latest``."""
    name, tag = parse(ref)
    return f"{name}:{tag}"
