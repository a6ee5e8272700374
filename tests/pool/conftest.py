"""Helpers for pool tests; the image, manager and client fixtures are in tests/conftest.py."""

from __future__ import annotations

from pool.contract.specs import FunctionSpec, parse_spec


def spec(**fields: object) -> FunctionSpec:
    return parse_spec(fields)
