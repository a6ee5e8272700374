"""The closed sets of values some fields take, as ``Literal`` types for the specs and as
tuples for the CLI's choices: one place for each, light enough for the CLI to import
without the specs themselves."""

from __future__ import annotations

from typing import Literal, get_args

# How a function is called: an HTTP server in the container, or one process per call.
Protocol = Literal["http", "stdio"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

