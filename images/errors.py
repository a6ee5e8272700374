"""The image package's exceptions: one root, subclasses that carry what went wrong."""

from __future__ import annotations


class ImageError(Exception):
    """Root of everything images/ raises on purpose."""


class ImageNotFound(ImageError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"No such image: {ref}")  # Docker's words: clients match them


class InvalidReference(ImageError):
    def __init__(self, ref: str, reason: str) -> None:
        self.ref, self.reason = ref, reason
        super().__init__(f"invalid image reference {ref!r}: {reason}")


class ImageInUse(ImageError):
    def __init__(self, ref: str, users: list[str]) -> None:
        self.ref, self.users = ref, users
        super().__init__(
            f"image {ref} is in use by container {', '.join(users)} (force removes it)"
        )

