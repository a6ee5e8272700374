"""Sizes and durations as people write them: ``128m``, ``1g``, ``30s``, ``5m``."""

from __future__ import annotations

import math
import re

from pool.contract.errors import InvalidSpec

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(value: str | int, option: str = "size") -> int:
    """Bytes from ``65536``, ``"512k"``, ``"128m"``, ``"1.5g"``, ``"1GiB"`` (units of 1024).

    >>> parse_size("128m")
    134217728
    """
    if isinstance(value, bool):
        raise InvalidSpec(option, value, "expected a size such as 128m, 1g or 65536")
    if isinstance(value, int):
        if value < 0:
            raise InvalidSpec(option, value, "a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise InvalidSpec(option, value, "expected a size such as 128m, 1g or 65536")
    m = _SIZE.match(value)
    if not m:
        raise InvalidSpec(option, value, "expected a size such as 128m, 1g or 65536")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: str | float, option: str = "duration") -> float:
    """Seconds from ``30``, ``"30s"``, ``"500ms"``, ``"1h30m"``.

    >>> parse_duration("1m30s")
    90.0
    """
    if isinstance(value, bool):
        raise InvalidSpec(option, value, "expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise InvalidSpec(option, value, "expected a finite number of seconds")
    elif not isinstance(value, str):
        raise InvalidSpec(option, value, "expected a duration such as 30s, 5m or 1h")
    else:
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+", text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text))
        else:
            raise InvalidSpec(option, value, "expected a duration such as 30s, 5m or 1h")
    if seconds < 0:
        raise InvalidSpec(option, value, "a duration cannot be negative")
    return seconds
