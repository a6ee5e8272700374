"""What the metadata instructions do to an image's config: pure logic."""

from __future__ import annotations

import pytest

from images.dockerfile import DockerfileError, parse
from images.instructions import BuildState, apply, workdir


def _state() -> BuildState:
    return BuildState({"config": {"Env": ["PATH=/bin"]}}, None, {"V": "1"}, ["/bin/sh", "-c"])


def _apply(state: BuildState, text: str) -> None:
    for ins in parse(f"FROM x\n{text}\n").stages[0].instructions:
        apply(state, ins, ins.args, "\\")


def test_env_label_expose_volume_and_the_forms_of_cmd() -> None:
    state = _state()
    _apply(state, "ENV A=1 B=two\nENV C three words\nLABEL team=a\nEXPOSE 80 53/udp\n"
                  'VOLUME ["/data"]\nCMD echo hi\nUSER nobody\nSTOPSIGNAL SIGINT')  # fmt: skip
    cfg = state.cfg
    assert cfg["Env"] == ["PATH=/bin", "A=1", "B=two", "C=three words"]
    assert cfg["Labels"] == {"team": "a"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert (cfg["User"], cfg["StopSignal"]) == ("nobody", "SIGINT")


def test_an_entrypoint_resets_the_inherited_cmd_and_shell_changes_the_form() -> None:
    state = _state()
    _apply(state, 'CMD ["serve"]\nSHELL ["/bin/bash", "-c"]\nENTRYPOINT run it')
    assert state.cfg["Entrypoint"] == ["/bin/bash", "-c", "run it"]
    assert state.cfg["Cmd"] is None and state.shell == ["/bin/bash", "-c"]


def test_healthcheck_flags_become_nanoseconds() -> None:
    state = _state()
    _apply(state, "HEALTHCHECK --interval=1m30s --retries=2 CMD wget -q localhost")
    assert state.cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"],
                                        "Interval": 90 * 10**9, "Retries": 2}  # fmt: skip
    _apply(state, 'HEALTHCHECK CMD ["true"]')
    assert state.cfg["Healthcheck"] == {"Test": ["CMD", "true"]}
    _apply(state, "HEALTHCHECK NONE")
    assert state.cfg["Healthcheck"] == {"Test": ["NONE"]}


def test_workdir_is_relative_to_the_last() -> None:
    state = _state()
    assert workdir(state, "/srv") == "/srv"
    assert workdir(state, "app/../web") == "/srv/web" == state.cfg["WorkingDir"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ENV A", "ENV A needs a value"),
        ("LABEL =x", "expects KEY=VALUE"),
        ("ONBUILD FROM y", "FROM is not allowed in ONBUILD"),
        ("HEALTHCHECK --interval=1s echo", "expects [OPTIONS] CMD"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message.replace("[", r"\[")) as info:
        _apply(_state(), text)
    assert info.value.line == 2
