"""Docker's detach keys: a sequence typed on an attached stdin that leaves the container
running and ends the attach (``ctrl-p,ctrl-q`` unless the client names others).

The bytes of a sequence begun are held back until it is complete (then the attach
ends and they go nowhere) or broken (then they go to the container after all), as
Docker's escape proxy does.
"""

from __future__ import annotations

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


class DetachKeysError(ValueError):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid detach keys {text!r}: {reason}")


def parse_detach_keys(text: str) -> bytes:
    """Docker's form: comma-separated single characters and ``ctrl-<x>``.

    >>> parse_detach_keys("ctrl-p,ctrl-q"), parse_detach_keys("a,ctrl-@,ctrl-[")
    (b'\\x10\\x11', b'a\\x00\\x1b')
    """
    out = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            out.append(ord(key))
        elif key.lower().startswith("ctrl-") and len(key) == 6:
            c = key[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
            elif c in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
            else:
                raise DetachKeysError(text, f"no control key {key!r}")
        else:
            raise DetachKeysError(text, f"{key!r} is neither a character nor ctrl-<key>")
    if not out:
        raise DetachKeysError(text, "no key")
    return bytes(out)


class Detacher:
    """Finds the detach sequence in what a client types.

    >>> d = Detacher(b"\\x10\\x11")
    >>> d.feed(b"ls\\x10"), d.feed(b"x"), d.feed(b"\\x10\\x11rest"), d.detached
    (b'ls', b'\\x10x', b'', True)
    """

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = 0  # how many bytes of the sequence were typed so far
        self.detached = False

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` goes to the container; ``detached`` once the sequence is in."""
        out = bytearray()
        for byte in data:
            if byte == self.keys[self.held]:
                self.held += 1
                if self.held == len(self.keys):
                    self.detached = True
                    return bytes(out)
                continue
            out += self.keys[: self.held]
            self.held = 0
            if byte == self.keys[0]:
                self.held = 1
            else:
                out.append(byte)
        return bytes(out)
