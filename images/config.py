"""OCI image configs: a new one, a child of a parent, and a step in its history."""

from __future__ import annotations

import copy
import datetime
import platform
from typing import Any

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def empty_config() -> dict[str, Any]:
    machine = platform.machine()
    return {
        "architecture": _ARCH.get(machine, machine),
        "os": "linux",
        "created": now(),
        "config": {"Env": [DEFAULT_PATH]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def child_config(parent: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``parent`` (or an empty config) to build on."""
    config = copy.deepcopy(parent) if parent is not None else empty_config()
    config["created"] = now()
    config.setdefault("config", {})
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    config.setdefault("history", [])
    return config


def add_step(
    config: dict[str, Any], created_by: str, diff_id: str | None = None, comment: str = ""
) -> None:
    """Record one step; a step without a layer is marked ``empty_layer`` (Docker's way)."""
    step: dict[str, Any] = {"created": now(), "created_by": created_by}
    if comment:
        step["comment"] = comment
    if diff_id is None:
        step["empty_layer"] = True
    else:
        config["rootfs"]["diff_ids"].append(diff_id)
    config["history"].append(step)
    config["created"] = step["created"]
