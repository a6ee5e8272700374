"""The contract's parsers of what people write: sizes, durations, -v, -p, --ulimit,
--tmpfs. Pure logic; each error names the value."""

from __future__ import annotations

import pytest

from images import reference as node_reference
from pool.contract import references
from pool.contract.containers import BindSpec, PortSpec, UlimitSpec, parse_tmpfs
from pool.contract.errors import InvalidSpec
from pool.contract.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("65536", 65536), ("512k", 512 << 10), ("128m", 128 << 20), ("1g", 1 << 30),
     ("1.5g", 3 << 29), ("64MiB", 64 << 20), ("2 GB", 2 << 30), (4096, 4096)],
)  # fmt: skip
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12 parsecs", "", "m", "-1m", "1x", "1.2.3m", {}, [1], 1.5, None])
def test_parse_size_rejects_with_the_value(bad: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_size(bad, "memory")  # type: ignore[arg-type]
    assert repr(bad) in str(info.value) and "memory" in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h30m", 5400.0), (2.5, 2.5)],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "-3s", "1d", {}, None, float("inf")])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_duration(bad, "ttl")  # type: ignore[arg-type]
    assert repr(bad) in str(info.value) and "ttl" in str(info.value)


@pytest.mark.parametrize(
    ("text", "volume"),
    [
        ("/data", BindSpec("/data")),
        ("cache:/var/cache", BindSpec("/var/cache", "cache")),
        ("/srv:/srv:ro", BindSpec("/srv", "/srv", read_only=True)),
        ("/data:ro", BindSpec("/data", read_only=True)),
        ("/srv:/srv:ro,rslave,Z", BindSpec("/srv", "/srv", True, "rslave")),
        ("cache:/c:nocopy", BindSpec("/c", "cache", nocopy=True)),
        ("cache:/c:rshared", None),
        ("/a/../b", None),
        ("rel/path", None),
        ("bad name:/x", None),
        ("/a:/b:rx", None),
    ],
)
def test_volume_parse(text: str, volume: BindSpec | None) -> None:
    if volume is None:
        with pytest.raises(InvalidSpec, match="volume"):
            BindSpec.parse(text)
    else:
        assert BindSpec.parse(text) == volume


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("8080", PortSpec(8080)),
        ("9000:8080", PortSpec(8080, 9000)),
        ("0.0.0.0:9000:8080", PortSpec(8080, 9000, "0.0.0.0")),
        ("127.0.0.1::80/tcp", PortSpec(80, 0, "127.0.0.1")),
        ("53:53/udp", PortSpec(53, 53, "", "udp")),
        ("[::1]:9000:80", PortSpec(80, 9000, "::1")),
        ("70000", None),
        ("80/sctp", None),
        ("x:80", None),
        ("nowhere:9000:80", None),
    ],
)
def test_port_parse(text: str, port: PortSpec | None) -> None:
    if port is None:
        with pytest.raises(InvalidSpec, match="port"):
            PortSpec.parse(text)
    else:
        assert PortSpec.parse(text) == port


def test_ulimit_and_tmpfs_parse() -> None:
    assert UlimitSpec.parse("nofile=1024:2048") == UlimitSpec("nofile", 1024, 2048)
    assert UlimitSpec.parse("nproc=64") == UlimitSpec("nproc", 64, 64)
    with pytest.raises(InvalidSpec, match="soft limit is above"):
        UlimitSpec.parse("nofile=10:5")
    with pytest.raises(InvalidSpec, match="NAME=SOFT"):
        UlimitSpec.parse("nofile=lots")
    assert parse_tmpfs("/run:size=16m,nosuid") == ("/run", 16 << 20)
    assert parse_tmpfs("/cache") == ("/cache", 64 << 20)


@pytest.mark.parametrize(
    "name",
    ["busybox", "team/app", "localhost/app", "localhost:5000/app", "127.0.0.1:5000/team/app",
     "reg.lan/app", "docker.io/library/busybox", "index.docker.io/x", "registry-1.docker.io/y",
     "Host_With.Dot/app", "a:b", "weird..host/app"],
)  # fmt: skip
def test_both_floors_name_the_same_registry(name: str) -> None:
    """The gateway's rule (pool.contract) and the node's (images) are one rule written
    twice, because neither floor may import the other."""
    assert references.registry_of(name) == node_reference.registry_of(name)
    assert references.DOCKER_HUB == node_reference.DOCKER_HUB
