"""The build context: files a Dockerfile may COPY, less what .dockerignore excludes.

A context is hostile: it came as a tar from the client and its symlinks may
point anywhere. It is read only through a RootDir: a source path is resolved
inside the context (its symlinks followed there, never onto the host), globs
match the context's own list of files, and what COPY copies is read through
fds (runtime/tarfs.py ``read_tree``), links kept as links.

``.dockerignore`` follows Docker: one pattern a line, ``#`` comments, ``*``, ``?``
and ``**`` (any number of directories), ``!`` for exceptions; the last matching
pattern wins, and a pattern that matches a directory matches all below it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.rootdir import RootDir, UnsafePath, clean
from runtime.tarfs import Member, read_tree


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


def ignored_by(rules: list[IgnoreRule], rel: str) -> bool:
    verdict = False
    for rule in rules:
        if rule.regex.match(rel):
            verdict = not rule.exception
    return verdict


@dataclass(frozen=True)
class Source:
    """One thing a COPY source names: its in-context path, and whether it is a directory."""

    path: str  # absolute in the context: /src/app.py
    is_dir: bool


class BuildContext:
    """A context directory, opened as a RootDir for the build's lifetime."""

    def __init__(self, root: RootDir, rules: list[IgnoreRule] | None = None) -> None:
        self.root = root
        self.rules = rules or []

    @classmethod
    def load(cls, path: Path) -> BuildContext:
        root = RootDir(path)
        return cls(root, parse_dockerignore(root.read_text("/.dockerignore")))

    def close(self) -> None:
        self.root.close()

    def ignored(self, rel: str) -> bool:
        return ignored_by(self.rules, rel.lstrip("/"))

    def read_dockerfile(self, name: str) -> str | None:
        """The Dockerfile ``name`` (in the context, its symlinks followed there)."""
        data = self.root.read_bytes("/" + name, 8 << 20)
        return data.decode(errors="replace") if data is not None else None

    def select(self, source: str) -> list[Source]:
        """What a COPY source names (globs allowed); refuses escaping the context.

        Raises ValueError with the reason.
        """
        rel = posixpath.normpath(source.lstrip("/") or ".")
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{source}: outside the build context")
        if _has_magic(rel):
            found = [Source(p, d) for p, d in self._listing() if _glob_match(rel, p.lstrip("/"))]
        else:
            try:
                path = self.root.resolve("/" + rel)
            except UnsafePath as exc:
                raise ValueError(f"{source}: {exc.reason}") from None
            st = self.root.lstat(path)
            found = [] if st is None or (path != "/" and self.ignored(path)) else [
                Source(path, self.root.is_dir(path))]  # fmt: skip
        if not found:
            raise ValueError(f"{source}: no such file or directory in the build context")
        return found

    def _listing(self) -> Iterator[tuple[str, bool]]:
        for m in read_tree(self.root, "/"):
            if m.name:
                path = "/" + m.name
                if not self.ignored(path):
                    yield path, m.kind == "dir"

    def members(self, source: Source) -> Iterator[Member]:
        """What COPY copies of ``source``: a file, or a directory's contents (not the
        directory), named relative to it, less what .dockerignore excludes."""
        for m in read_tree(self.root, source.path, follow=True):
            if not m.name and source.is_dir:
                continue  # Docker copies a directory's contents, not the directory
            rel = clean(f"{source.path}/{m.name}") if m.name else source.path
            if rel != "/" and self.ignored(rel):
                continue
            yield m if source.is_dir else replace(m, name="")

    def digest(self, sources: list[Source]) -> str:
        """A hash of names, modes and contents: equal when COPY would copy the same thing."""
        h = hashlib.sha256()
        for source in sources:
            h.update(f"{source.path}\0".encode())
            for m in self.members(source):
                h.update(f"{m.name}\0{m.kind}\0{m.mode}\0{m.uid}\0{m.linkname}\0".encode())
                if m.kind == "file" and m.open is not None:
                    with m.open() as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
        return h.hexdigest()


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _glob_match(pattern: str, path: str) -> bool:
    """Go's filepath.Match, as Docker applies it to COPY sources: ``*`` never crosses
    a ``/``, so the pattern and the path have the same number of components."""
    parts, names = pattern.split("/"), path.split("/")
    return len(parts) == len(names) and all(
        fnmatch.fnmatchcase(n, p) for p, n in zip(parts, names, strict=True)
    )
