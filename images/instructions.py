"""What each metadata instruction (ENV, LABEL, CMD, EXPOSE...) does to the image's config:
pure functions of the state and the instruction, no I/O. The builder runs the steps
that make layers (RUN, COPY, ADD, WORKDIR's directory) itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from images.dockerfile import DockerfileError, Instruction, go_duration, json_form, words
from images.store import Image


@dataclass
class BuildState:
    """A stage's image as far as it is built: its config, the image it stands on, its
    ARGs and its SHELL."""

    config: dict[str, Any]
    image: Image | None  # the image the next step builds on (None: scratch, no step yet)
    args: dict[str, str]
    shell: list[str]

    @property
    def cfg(self) -> dict[str, Any]:
        inner: dict[str, Any] = self.config.setdefault("config", {})
        return inner

    def env(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.cfg.get("Env") or [])

    def scope(self) -> dict[str, str]:
        """Variables for substitution: ARGs, then ENV over them (Docker's precedence)."""
        return {**self.args, **self.env()}


def workdir(state: BuildState, args: str) -> str:
    """WORKDIR: the new working directory, relative to the last (the builder makes it)."""
    path = os.path.normpath(os.path.join(state.cfg.get("WorkingDir") or "/", args))
    state.cfg["WorkingDir"] = path
    return path


def apply(state: BuildState, ins: Instruction, args: str, escape: str) -> None:
    """A metadata instruction's change to ``state`` (its args substituted already)."""
    cfg = state.cfg
    match ins.cmd:
        case "ENV":
            env = state.env()
            env.update(pairs(ins, escape, state.scope()))
            cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
        case "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(pairs(ins, escape, state.scope()))
            cfg["Labels"] = labels
        case "MAINTAINER":
            state.config["author"] = args
        case "USER":
            cfg["User"] = args
        case "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in args.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
        case "VOLUME":
            volumes = dict(cfg.get("Volumes") or {})
            for v in ins.json if ins.json is not None else args.split():
                volumes[v] = {}
            cfg["Volumes"] = volumes
        case "CMD":
            cfg["Cmd"] = list(ins.json) if ins.json is not None else [*state.shell, args]
        case "ENTRYPOINT":
            cfg["Entrypoint"] = (
                list(ins.json) if ins.json is not None else [*state.shell, args]
            )
            cfg["Cmd"] = None  # Docker resets an inherited CMD
        case "SHELL":
            state.shell = list(ins.json or ())
            cfg["Shell"] = state.shell
        case "STOPSIGNAL":
            cfg["StopSignal"] = args
        case "HEALTHCHECK":
            cfg["Healthcheck"] = healthcheck(ins)
        case "ONBUILD":
            trigger = args.split(None, 1)[0].upper() if args else ""
            if trigger in ("ONBUILD", "FROM", "MAINTAINER", ""):
                raise DockerfileError(ins.line, f"{trigger or 'nothing'} is not allowed in ONBUILD")
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), args]
        case _:
            raise ValueError(f"{ins.cmd} is not a metadata instruction")


def pairs(ins: Instruction, escape: str, scope: Mapping[str, str]) -> dict[str, str]:
    """KEY=VALUE words, or the legacy ``KEY VALUE...`` form (the rest of the line, its
    spaces kept, is the value)."""
    first = ins.args.split(None, 1)
    if first and "=" not in first[0]:
        if len(first) < 2:
            raise DockerfileError(ins.line, f"{ins.cmd} {first[0]} needs a value")
        return {first[0]: "".join(words(first[1], scope, escape, one_word=True))}
    out = {}
    for word in words(ins.args, scope, escape):
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise DockerfileError(ins.line, f"{ins.cmd} expects KEY=VALUE, got {word!r}")
        out[key] = value
    return out


def healthcheck(ins: Instruction) -> dict[str, Any]:
    if ins.args.strip().upper() == "NONE":
        return {"Test": ["NONE"]}
    kind, _, rest = ins.args.partition(" ")
    if kind.upper() != "CMD":
        raise DockerfileError(ins.line, "HEALTHCHECK expects [OPTIONS] CMD command, or NONE")
    rest = rest.strip()
    exec_form = json_form(rest)  # not a JSON list of strings: the shell form, as Docker has it
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", rest]
    check: dict[str, Any] = {"Test": test}
    names = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
             "start-interval": "StartInterval"}  # fmt: skip
    for flag, value in ins.flags.items():
        if flag == "retries":
            check["Retries"] = int(value)
        else:
            check[names[flag]] = go_duration(value)  # checked when the Dockerfile was parsed
    return check
