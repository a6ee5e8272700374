"""Dockerfiles parsed as Docker parses them: pure functions, no I/O.

``parse(text)`` gives the stages and instructions with their line numbers;
``words(text, env)`` is Docker's word lexer with variable substitution, used by
the builder for the instructions Docker substitutes in.

Handled: parser directives (``# escape=`` and ``# syntax=``, which is ignored),
comments (also inside continued lines), line continuations with the escape
character, case-insensitive instruction names, ``--flag=value`` options, JSON
(exec) forms, and ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:+alt}``
with quotes and escapes. Heredocs are refused with a clear error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from images.errors import ImageError

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
    "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
    "HEALTHCHECK", "SHELL",
}  # fmt: skip
# Instructions whose arguments Docker expands variables in.
SUBSTITUTED = {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
               "VOLUME", "WORKDIR", "ARG"}  # fmt: skip
JSON_FORMS = {"RUN", "CMD", "ENTRYPOINT", "SHELL", "ADD", "COPY", "VOLUME"}
# The flags scow implements; Docker's others are refused by name, never ignored (a
# RUN --mount=type=secret ignored would build something else than was asked for).
FLAGS = {
    "FROM": {"platform"},
    "RUN": {"network"},
    "ADD": {"chown", "chmod"},
    "COPY": {"chown", "chmod", "from"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
NOT_IMPLEMENTED = {
    "RUN": {"mount", "security"},
    "ADD": {"checksum", "keep-git-dir", "link", "exclude"},
    "COPY": {"link", "parents", "exclude"},
}
RUN_NETWORKS = ("default", "none", "host")


class DockerfileError(ImageError):
    """A Dockerfile's line at fault, and why."""

    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message
        super().__init__(f"Dockerfile line {line}: {message}")


@dataclass(frozen=True)
class Instruction:
    line: int
    cmd: str  # upper case
    args: str  # the argument text, flags removed, continuations joined
    original: str  # the instruction as written (continuations joined): history, cache
    flags: Mapping[str, str] = field(default_factory=dict)
    json: tuple[str, ...] | None = None  # the exec/JSON form, when used


@dataclass(frozen=True)
class Stage:
    index: int
    base: str  # as written, variables not yet expanded
    name: str  # the AS name, lower case, or ""
    line: int
    instructions: tuple[Instruction, ...]
    platform: str = ""  # FROM --platform, as written


@dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]
    global_args: tuple[Instruction, ...]  # ARGs before the first FROM
    escape: str = "\\"

    def stage(self, ref: str) -> Stage:
        for s in self.stages:
            if s.name and s.name == ref.lower():
                return s
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        raise KeyError(ref)


_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_]*)\s*=\s*(.+?)\s*$")


def _logical_lines(text: str) -> tuple[list[tuple[int, str]], str]:
    lines = text.splitlines()
    escape = "\\"
    start = 0
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line)
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileError(i + 1, f"invalid escape character {m.group(2)!r}")
            escape = m.group(2)
        start = i + 1
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    first = 0
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if stripped.startswith("#"):
            continue  # a comment, even in the middle of a continued instruction
        if not buf and not stripped:
            continue
        if not buf:
            first = i + 1
        body = lines[i].rstrip()
        if body.endswith(escape) and not (escape == "\\" and body.endswith("\\\\")):
            buf.append(body[:-1])
            continue
        if buf and not stripped:
            continue
        buf.append(body)
        out.append((first, " ".join(p.strip() for p in buf if p.strip())))
        buf = []
    if buf:
        out.append((first, " ".join(p.strip() for p in buf if p.strip())))
    return out, escape


def _split_flags(line: int, cmd: str, rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, eq, value = word[2:].partition("=")
        if name in NOT_IMPLEMENTED.get(cmd, set()):
            raise DockerfileError(line, f"{cmd} --{name} is not implemented by scow")
        if name not in FLAGS.get(cmd, set()):
            raise DockerfileError(line, f"unknown flag --{name} for {cmd}")
        flags[name] = value if eq else "true"
    if cmd == "RUN" and flags.get("network", "default") not in RUN_NETWORKS:
        raise DockerfileError(line, f"RUN --network={flags['network']}: expected "
                              f"{', '.join(RUN_NETWORKS)}")  # fmt: skip
    if "chmod" in flags and not re.fullmatch(r"[0-7]{3,4}", flags["chmod"]):
        raise DockerfileError(line, f"{cmd} --chmod={flags['chmod']}: expected octal, e.g. 755")
    for name, value in flags.items():
        if cmd == "HEALTHCHECK" and name == "retries" and not value.isdigit():
            raise DockerfileError(line, f"HEALTHCHECK --retries={value}: expected a number")
        elif cmd == "HEALTHCHECK" and name != "retries":
            try:
                go_duration(value)
            except ValueError as exc:
                raise DockerfileError(line, f"HEALTHCHECK --{name}={value}: {exc}") from None
    return flags, rest


_GO_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}  # fmt: skip
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def go_duration(text: str) -> int:
    """Nanoseconds of a duration as Go writes it (what Docker takes in a Dockerfile):
    ``30s``, ``1m30s``, ``500ms``, ``1.5h``, or ``0``. Never negative here.

    >>> go_duration("1m30s"), go_duration("250ms"), go_duration("0")
    (90000000000, 250000000, 0)
    """
    if text == "0":
        return 0
    parts = _GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 30s, 1m30s or 500ms")
    return round(sum(float(n) * _GO_UNITS[u] for n, u in parts))


def json_form(text: str) -> tuple[str, ...] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # not JSON: Docker then takes it as the shell form
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def parse(text: str) -> Dockerfile:
    lines, escape = _logical_lines(text)
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    header: tuple[str, str, int, str] | None = None

    def close() -> None:
        if header is not None:
            base, name, line, platform = header
            stages.append(Stage(len(stages), base, name, line, tuple(current), platform))

    for number, logical in lines:
        word, _, rest = logical.partition(" ")
        cmd = word.upper()
        rest = rest.strip()
        if cmd not in INSTRUCTIONS:
            raise DockerfileError(number, f"unknown instruction {word!r}")
        if "<<" in rest and re.search(r"<<-?\s*['\"]?[A-Za-z_]", rest) and cmd in ("RUN", "COPY"):
            raise DockerfileError(number, "heredocs are not supported")
        flags, rest = _split_flags(number, cmd, rest)
        form = json_form(rest) if cmd in JSON_FORMS else None
        if cmd == "SHELL" and form is None:
            raise DockerfileError(
                number, 'SHELL requires the JSON form, e.g. SHELL ["/bin/sh", "-c"]'
            )
        instruction = Instruction(number, cmd, rest, logical, flags, form)
        if cmd == "FROM":
            close()
            current = []
            parts = rest.split()
            platform = flags.get("platform", "")
            if len(parts) == 3 and parts[1].lower() == "as":
                header = (parts[0], parts[2].lower(), number, platform)
            elif len(parts) == 1:
                header = (parts[0], "", number, platform)
            else:
                raise DockerfileError(number, "expected FROM IMAGE [AS NAME]")
            continue
        if header is None:
            if cmd != "ARG":
                raise DockerfileError(
                    number, f"{cmd} before the first FROM: a Dockerfile starts with FROM"
                )
            global_args.append(instruction)
            continue
        if not rest and cmd not in ("HEALTHCHECK",):
            raise DockerfileError(number, f"{cmd} needs arguments")
        current.append(instruction)
    close()
    if not stages:
        raise DockerfileError(max((n for n, _ in lines), default=1), "no FROM instruction")
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise DockerfileError(s.line, f"duplicate stage name {s.name!r}")
        if s.name:
            seen.add(s.name)
    return Dockerfile(tuple(stages), tuple(global_args), escape)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def words(
    text: str, env: Mapping[str, str], escape: str = "\\", *, one_word: bool = False
) -> list[str]:
    """Split into words as Docker does, expanding variables outside single quotes
    (``one_word``: all of ``text`` is one word, its unquoted spaces kept).

    >>> words("a=$X b='$X' c=\\"${Y:-d e}\\"", {"X": "1"})
    ['a=1', 'b=$X', 'c=d e']
    """
    out: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0
    quote = ""
    while i < len(text):
        c = text[i]
        if c == escape and i + 1 < len(text) and quote != "'":
            word.append(text[i + 1])
            in_word = True
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
            elif c == "$" and quote == '"':
                value, i = _expand(text, i, env)
                word.append(value)
                continue
            else:
                word.append(c)
            i += 1
            continue
        if c in "'\"":
            quote = c
            in_word = True
        elif c.isspace() and not one_word:
            if in_word:
                out.append("".join(word))
                word, in_word = [], False
        elif c == "$":
            value, i = _expand(text, i, env)
            word.append(value)
            in_word = True
            continue
        else:
            word.append(c)
            in_word = True
        i += 1
    if quote:
        raise ValueError(f"unterminated {quote} quote in {text!r}")
    if in_word:
        out.append("".join(word))
    return out


def substitute(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand variables in ``text``, keeping its quotes and spacing (for FROM, paths)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == escape and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
        elif c == "$":
            value, i = _expand(text, i, env)
            out.append(value)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _expand(text: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand the variable at text[i] == "$"; (value, index after it)."""
    if i + 1 < len(text) and text[i + 1] == "{":
        end = text.find("}", i + 2)
        if end < 0:
            raise ValueError(f"missing '}}' in {text!r}")
        inner = text[i + 2 : end]
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?", inner, re.DOTALL)
        if not m:
            raise ValueError(f"bad substitution ${{{inner}}}")
        name, op, word = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name, "")
        if op == "-":
            value = value or substitute(word, env)
        elif op == "+":
            value = substitute(word, env) if value else ""
        return value, end + 1
    m = _NAME.match(text, i + 1)
    if not m:
        return "$", i + 1
    return env.get(m.group(0), ""), m.end()
