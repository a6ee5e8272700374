"""The front door: the HTTP API, the `scow` CLI and `scow up`."""

__version__ = "0.1.0"
