"""Unit tests of the Dockerfile parser and the word lexer (pure logic)."""

from __future__ import annotations

import pytest

from images.context import BuildContext, parse_dockerignore
from images.dockerfile import DockerfileError, go_duration, parse, substitute, words


def test_stages_instructions_lines_and_continuations() -> None:
    df = parse(
        "ARG V=1\n"
        "FROM busybox:${V} AS Build\n"
        "run echo a \\\n"
        "  # a comment inside a continuation\n"
        "    && echo b\n"
        "\n"
        "FROM scratch\n"
        'COPY --from=build ["/a b", "/c"]\n'
    )
    assert [a.args for a in df.global_args] == ["V=1"]
    first, second = df.stages
    assert (first.base, first.name, first.line) == ("busybox:${V}", "build", 2)
    (run,) = first.instructions
    assert (run.cmd, run.line, run.args) == ("RUN", 3, "echo a && echo b")
    (copy,) = second.instructions
    assert copy.flags == {"from": "build"}
    assert copy.json == ("/a b", "/c")
    assert df.stage("build") is first and df.stage("1") is second


def test_escape_directive_changes_the_continuation_character() -> None:
    df = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n")
    assert df.escape == "`"
    assert df.stages[0].instructions[0].args == "echo a b"


def test_shell_form_that_looks_like_json_stays_shell() -> None:
    (ins,) = parse("FROM x\nCMD [not json]\n").stages[0].instructions
    assert ins.json is None and ins.args == "[not json]"


@pytest.mark.parametrize(
    ("text", "ns"),
    [("0", 0), ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9),
     ("250ms", 250 * 10**6), ("10us", 10_000), (".5s", 5 * 10**8)],
)  # fmt: skip
def test_go_durations(text: str, ns: int) -> None:
    assert go_duration(text) == ns


@pytest.mark.parametrize("bad", ["", "5", "-1s", "1d", "1s ", "s", "1.2.3s"])
def test_go_durations_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        go_duration(bad)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM x\nBOGUS y\n", 2, "unknown instruction 'BOGUS'"),
        ("ENV A=1\n", 1, "ENV before the first FROM"),
        ("", 1, "no FROM instruction"),
        ("FROM x\nCOPY --nope=1 a b\n", 2, "unknown flag --nope for COPY"),
        ("FROM x\nSHELL sh -c\n", 2, "SHELL requires the JSON form"),
        ("FROM a b c d\n", 1, "expected FROM IMAGE"),
        ("FROM x AS a\nFROM y AS a\n", 2, "duplicate stage name 'a'"),
        ("FROM x\nRUN <<EOF\nhi\nEOF\n", 2, "heredocs are not supported"),
        ("FROM x\nRUN\n", 2, "RUN needs arguments"),
        ("# escape=x\nFROM x\n", 1, "invalid escape character"),
        ("FROM x\nHEALTHCHECK --interval=5 CMD true\n", 2, "--interval=5: '5' is not a dur"),
        ("FROM x\nHEALTHCHECK --timeout=1d CMD true\n", 2, "--timeout=1d"),
        ("FROM x\nHEALTHCHECK --retries=lots CMD true\n", 2, "--retries=lots: expected a n"),
    ],
)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert info.value.line == line
    assert message in str(info.value) and f"line {line}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a=$X", {"X": "1"}, ["a=1"]),
        ("a=${X}b", {"X": "1"}, ["a=1b"]),
        ("a='$X' b=\"$X\"", {"X": "1"}, ["a=$X", "b=1"]),
        ("a=${Y:-def} b=${X:+alt} c=${Y:+alt}", {"X": "1"}, ["a=def", "b=alt", "c="]),
        ("a=\\$X", {"X": "1"}, ["a=$X"]),
        ('msg="hello world" k=v', {}, ["msg=hello world", "k=v"]),
        ("a=b\\ c", {}, ["a=b c"]),
        ("$", {}, ["$"]),
    ],
)
def test_words_expand_and_unquote(text: str, env: dict[str, str], expected: list[str]) -> None:
    assert words(text, env) == expected


def test_substitute_keeps_spacing_and_escapes() -> None:
    assert substitute("busybox:${TAG:-latest} AS x", {}) == "busybox:latest AS x"
    assert substitute("/a/\\$HOME", {"HOME": "/root"}) == "/a/$HOME"


def test_dockerignore_patterns(tmp_path: object) -> None:
    rules = parse_dockerignore("# comment\n*.log\n**/tmp\nsecrets/\n!secrets/public.key\n")
    ctx = BuildContext.__new__(BuildContext)
    ctx.rules = rules
    assert ctx.ignored("debug.log") and not ctx.ignored("logs/app.txt")
    assert ctx.ignored("a/b/tmp") and ctx.ignored("tmp") and ctx.ignored("a/tmp/file")
    assert ctx.ignored("secrets/private.key") and not ctx.ignored("secrets/public.key")
    assert not ctx.ignored("src/main.py")
