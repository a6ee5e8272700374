"""Function specs are checked once, naming the field and the value at fault."""

from __future__ import annotations

import pytest

from pool.contract.specs import FunctionSpec, InvalidSpec, parse_spec


def test_defaults_follow_the_design() -> None:
    spec = parse_spec({"name": "hello", "image": "examples/python-hello"})
    assert spec == FunctionSpec(name="hello", image="examples/python-hello")
    assert (spec.memory, spec.cpu_shares, spec.pids, spec.timeout) == (128 << 20, 1024, 128, 30.0)
    assert (spec.max_invocations, spec.pool_min, spec.pool_max, spec.read_only) == (1, 1, 16, True)
    assert spec.user == "65534" and spec.throwaway
    assert FunctionSpec.from_json(spec.to_json()) == spec


def test_yaml_shaped_fields() -> None:
    spec = parse_spec({
        "name": "wc", "image": "busybox", "protocol": "stdio", "command": "wc -l",
        "env": {"A": "1"}, "memory": "64m", "timeout": "500ms", "pool": {"min": 0, "max": 3},
    })  # fmt: skip
    assert spec.command == ("sh", "-c", "wc -l")
    assert spec.env == ("A=1",)
    assert (spec.memory, spec.timeout, spec.pool_min, spec.pool_max) == (64 << 20, 0.5, 0, 3)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"name": "Bad_Name", "image": "x"}, "name", "a-z"),
        ({"name": "a"}, "image", "required"),
        ({"name": "a", "image": "x", "protocol": "grpc"}, "protocol", "'http' or 'stdio'"),
        ({"name": "a", "image": "x", "memory": "12 parsecs"}, "memory", "a size"),
        ({"name": "a", "image": "x", "timeout": "soon"}, "timeout", "a duration"),
        ({"name": "a", "image": "x", "pool": {"min": 5, "max": 2}}, "pool.min", "above pool.max"),
        ({"name": "a", "image": "x", "port": 70000}, "port", "1 to 65535"),
        ({"name": "a", "image": "x", "colour": "red"}, "colour", "unknown field"),
        ({"name": "a", "image": "x", "concurrency": 4}, "concurrency", "max_invocations != 1"),
        ({"name": "a", "image": "x", "protocol": "stdio", "max_invocations": 5},
         "max_invocations", "one process per call"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_field_and_value(
    fields: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(fields)
    assert info.value.option == field
    assert reason in str(info.value)
