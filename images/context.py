"""The build context: files a Dockerfile may COPY, less what .dockerignore excludes.

``.dockerignore`` follows Docker: one pattern a line, ``#`` comments, ``*``, ``?``
and ``**`` (any number of directories), ``!`` for exceptions; the last matching
pattern wins, and a pattern that matches a directory matches all below it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + "(?:/.*)?$")


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    exception: bool


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append(IgnoreRule(_pattern_regex(pattern), exception))
    return rules


class BuildContext:
    def __init__(self, root: Path, rules: list[IgnoreRule] | None = None) -> None:
        self.root = root.resolve()
        self.rules = rules or []

    @classmethod
    def load(cls, root: Path) -> BuildContext:
        ignore = root / ".dockerignore"
        rules = parse_dockerignore(ignore.read_text()) if ignore.exists() else []
        return cls(root, rules)

    def ignored(self, rel: str) -> bool:
        verdict = False
        for rule in self.rules:
            if rule.regex.match(rel):
                verdict = not rule.exception
        return verdict

    def select(self, source: str) -> list[Path]:
        """Context paths a COPY source names (globs allowed); refuses escaping the context.

        Raises ValueError with the reason.
        """
        rel = PurePosixPath(source.lstrip("/"))
        if ".." in PurePosixPath(os.path.normpath(str(rel) or ".")).parts:
            raise ValueError(f"{source}: outside the build context")
        pattern = str(self.root / rel)
        matches = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [
            self.root / rel
        ]  # fmt: skip
        found = []
        for path in matches:
            real = path.resolve()
            if real != self.root and self.root not in real.parents:
                raise ValueError(f"{source}: outside the build context (through a symlink)")
            rel_path = str(path.relative_to(self.root))
            if path.exists() and (rel_path == "." or not self.ignored(rel_path)):
                found.append(path)
        if not found:
            raise ValueError(f"{source}: no such file or directory in the build context")
        return found

    def files(self, path: Path) -> list[Path]:
        """``path`` and, for a directory, everything below it that is not ignored."""
        if not path.is_dir() or path.is_symlink():
            return [path]
        out = [path]
        for dirpath, dirnames, filenames in os.walk(path):
            base = Path(dirpath)
            keep = []
            for name in sorted(dirnames):
                if not self.ignored(str((base / name).relative_to(self.root))):
                    keep.append(name)
            dirnames[:] = keep
            for name in sorted(keep + filenames):
                full = base / name
                if not self.ignored(str(full.relative_to(self.root))):
                    out.append(full)
        return out

    def digest(self, paths: list[Path]) -> str:
        """A hash of names, modes and contents: equal when COPY would copy the same thing."""
        h = hashlib.sha256()
        for top in paths:
            for path in self.files(top):
                st = os.lstat(path)
                h.update(f"{path.relative_to(self.root)}\0{st.st_mode}\0".encode())
                if path.is_symlink():
                    h.update(os.readlink(path).encode())
                elif path.is_file():
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
        return h.hexdigest()
