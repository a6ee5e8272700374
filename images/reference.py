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
    """(name, tag) with ``latest`` as the default tag; a digest reference's "tag" is its
    digest (``sha256:...``).

    >>> parse("registry:5000/team/app"), parse("reg:5000/app@sha256:" + "a" * 64)[1][:9]
    (('registry:5000/team/app', 'latest'), 'sha256:aa')
    """
    if "@" in ref:
        name, _, digest = ref.partition("@")
        if not DIGEST_RE.fullmatch(digest):
            raise InvalidReference(ref, "a digest is sha256: and 64 hex digits")
        name = parse(name)[0] if name.rfind(":") <= name.rfind("/") else name[: name.rfind(":")]
        if not NAME_RE.match(name) or len(name) > 255:
            raise InvalidReference(ref, "a name is lowercase letters, digits and . _ - "
                                   "separated by /")  # fmt: skip
        return name, digest
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    if not NAME_RE.match(name) or len(name) > 255:
        raise InvalidReference(ref, "a name is lowercase letters, digits and . _ - separated by /")
    if not TAG_RE.match(tag):
        raise InvalidReference(ref, "a tag is letters, digits, '_', '.' and '-' (max 128)")
    return name, tag


def normalize(ref: str) -> str:
    """``busybox`` -> ``busybox:latest``; a digest reference stays one."""
    name, tag = parse(ref)
    return f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"


# Docker Hub's names: scow reaches no registry it was not pointed at, and makes the
# base images (busybox, debian) itself, so these prefixes are dropped, not dialled.
# pool/contract/references.py has the same rule for the gateway (neither floor may
# import the other); a test in tests/test_contract.py keeps the two equal.
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def registry_of(name: str) -> str:
    """The registry host a name's first component is, as Docker decides: it has a dot or a
    port, or is ``localhost``; "" for a local name (and Docker Hub's).

    >>> registry_of("127.0.0.1:5000/app"), registry_of("team/app"), registry_of("docker.io/x")
    ('127.0.0.1:5000', '', '')
    """
    first, sep, _ = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return ""
    return "" if first in DOCKER_HUB else first
