"""Which registry an image reference names, as Docker decides it: the name's first
component when it has a dot or a port or is ``localhost``; none for a local name, nor
for Docker Hub's (scow reaches no registry it was not pointed at: its base images,
``busybox`` and ``debian``, are made on the node).

``images/reference.py`` holds the same rule for the node's side: the floors keep the
contract and ``images`` from importing each other, and
``tests/test_contract.py::test_both_floors_name_the_same_registry`` keeps them equal."""

from __future__ import annotations

DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def registry_of(name: str) -> str:
    """``127.0.0.1:5000/app:1`` -> ``127.0.0.1:5000``; ``team/app`` -> "".

    >>> registry_of("reg.lan/app"), registry_of("app:1"), registry_of("docker.io/library/x")
    ('reg.lan', '', '')
    """
    first, sep, _ = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return ""
    return "" if first in DOCKER_HUB else first
