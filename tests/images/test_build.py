"""Dockerfile builds against the real runtime: every instruction, the cache, bad input."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from images.builder import Builder, BuildError, BuildOptions
from images.errors import ImageNotFound
from images.store import Image, ImageStore
from runtime.engine import Runtime
from runtime.spec import RunOptions

EVERYTHING = r"""# escape=\
ARG BASE=busybox
FROM ${BASE} AS builder
RUN mkdir -p /out && echo built > /out/artifact

FROM busybox
MAINTAINER scow tests
LABEL org.example.name="hello world" version=1
ARG GREETING=hi
ENV APP_HOME=/app \
    MSG="${GREETING} there"
# a comment between instructions
WORKDIR $APP_HOME
COPY --chown=nobody:nobody app.txt ./
COPY . /ctx/
ADD files.tar /opt/
COPY --from=builder /out/artifact /opt/artifact
RUN ["sh", "-c", "echo exec-form > /app/exec.txt"]
RUN echo "$MSG" > /app/msg.txt && \
    rm /bin/vi
SHELL ["/bin/sh", "-c"]
USER nobody
EXPOSE 8080 9000/tcp
VOLUME /data
HEALTHCHECK --interval=5s --retries=2 CMD wget -q -O - http://localhost:8080/ || exit 1
ONBUILD RUN echo triggered > /tmp/onbuild.txt
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/msg.txt; id -u; pwd; stat -c %U /app/app.txt; cat /opt/hello/inside.txt \
/opt/artifact /app/exec.txt; ls /ctx; ls /bin/vi 2>&1"]
"""


def make_context(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(EVERYTHING)
    (root / "app.txt").write_text("app v1\n")
    (root / "secret.txt").write_text("do not ship\n")
    (root / "debug.log").write_text("noise\n")
    (root / ".dockerignore").write_text("secret.txt\n*.log\n")
    with tarfile.open(root / "files.tar", "w") as tar:
        data = b"from the tar\n"
        info = tarfile.TarInfo("hello/inside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return root


async def run_image(runtime: Runtime, store: ImageStore, image: Image, **opts: object) -> str:
    rec = await runtime.create(image.run_config, store.layer_dirs(image), RunOptions(**opts))  # type: ignore[arg-type]
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    out = "\n".join(ln.text for ln in runtime.logs(rec.id))
    volumes = rec.anonymous_volumes
    await runtime.remove(rec.id, volumes=True)
    return out + ("\nVOLUMES " + " ".join(volumes) if volumes else "")


@pytest.fixture
def builder(store: ImageStore, runtime: Runtime) -> tuple[Builder, list[str]]:
    lines: list[str] = []
    return Builder(store, runtime, progress=lines.append), lines


@pytest.mark.slow
async def test_every_instruction_takes_effect(
    builder: tuple[Builder, list[str]], store: ImageStore, runtime: Runtime, busybox: Image,
    tmp_path: Path,
) -> None:  # fmt: skip
    b, lines = builder
    ctx = make_context(tmp_path / "ctx")
    image = await b.build(
        BuildOptions(ctx, tag="every:1", build_args={"GREETING": "hello"}, labels={"extra": "x"})
    )
    assert store.get("every:1").id == image.id
    assert "Successfully tagged every:1" in lines

    out = (await run_image(runtime, store, image)).splitlines()
    assert out[0] == "hello there"  # ENV with ARG substituted, build-arg over the default
    assert out[1] == "65534"  # USER nobody
    assert out[2] == "/app"  # WORKDIR
    assert out[3] == "nobody"  # COPY --chown
    assert out[4:7] == ["from the tar", "built", "exec-form"]  # ADD tar, COPY --from, RUN exec
    assert "app.txt" in out and "secret.txt" not in out and "debug.log" not in out
    assert "No such file or directory" in out[-2]  # rm /bin/vi in a later layer
    assert out[-1].startswith("VOLUMES ")  # VOLUME made an anonymous volume

    cfg = image.config["config"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9000/tcp": {}}
    assert cfg["Healthcheck"]["Test"][0] == "CMD-SHELL"
    assert (cfg["Healthcheck"]["Interval"], cfg["Healthcheck"]["Retries"]) == (5_000_000_000, 2)
    assert cfg["Labels"] == {"org.example.name": "hello world", "version": "1", "extra": "x"}
    assert image.config["author"] == "scow tests"
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/onbuild.txt"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    empty = [h for h in image.config["history"] if h.get("empty_layer")]
    assert any("ENV" in h["created_by"] for h in empty)  # metadata steps add no layer

    child_ctx = tmp_path / "child"
    child_ctx.mkdir()
    (child_ctx / "Dockerfile").write_text('FROM every:1\nCMD ["cat /tmp/onbuild.txt"]\n')
    child = await b.build(BuildOptions(child_ctx, tag="child:1"))
    assert (await run_image(runtime, store, child)).splitlines()[0] == "triggered"
    assert "OnBuild" not in child.config["config"]


@pytest.mark.slow
async def test_rebuild_reuses_every_step_and_copy_change_reruns_from_there(
    builder: tuple[Builder, list[str]], store: ImageStore, busybox: Image, tmp_path: Path
) -> None:
    b, lines = builder
    ctx = make_context(tmp_path / "ctx")
    first = await b.build(BuildOptions(ctx, tag="cached:1"))
    steps = sum(1 for line in lines if line.startswith("Step "))

    lines.clear()
    started = time.perf_counter()
    again = await b.build(BuildOptions(ctx, tag="cached:1"))
    elapsed = time.perf_counter() - started
    print(f"fully cached rebuild took {elapsed * 1000:.0f} ms")
    assert again.id == first.id
    not_cacheable = 2 + 1  # the two FROMs and the ARG, which only changes the build's scope
    assert lines.count(" ---> Using cache") == steps - not_cacheable

    (ctx / "app.txt").write_text("app v2\n")
    lines.clear()
    changed = await b.build(BuildOptions(ctx, tag="cached:1"))
    assert changed.id != first.id
    step_lines = [i for i, line in enumerate(lines) if line.startswith("Step ")]
    copy_step = next(i for i in step_lines if "COPY --chown" in lines[i])
    # Before the changed COPY: the builder's RUN, MAINTAINER, LABEL, ENV and WORKDIR.
    assert lines[:copy_step].count(" ---> Using cache") == 5
    assert " ---> Using cache" not in lines[copy_step:]  # from the COPY on, all re-run

    lines.clear()
    await b.build(BuildOptions(ctx, tag="cached:1", no_cache=True))
    assert " ---> Using cache" not in lines


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM busybox\nFORM x\n", "line 2: unknown instruction 'FORM'"),
        ("RUN true\n", "line 1: RUN before the first FROM"),
        ("# only a comment\n", "no FROM instruction"),
        ("FROM busybox\nCOPY ../x /x\n", "line 2: COPY ../x: outside the build context"),
        ("FROM busybox\nADD evil.tar /\n", "line 2: ADD: refusing archive member '../evil'"),
        ("FROM busybox\nRUN echo partial > /f; exit 3\n", "line 2: RUN 'echo partial > /f; exit 3' "
         "failed with exit code 3"),
        ("FROM nosuchimage\n", "line 1: no such image: nosuchimage"),
    ],
)  # fmt: skip
async def test_bad_input_names_the_line_and_leaves_nothing(
    builder: tuple[Builder, list[str]], store: ImageStore, runtime: Runtime, busybox: Image,
    tmp_path: Path, dockerfile: str, message: str,
) -> None:  # fmt: skip
    b, _ = builder
    (tmp_path / "Dockerfile").write_text(dockerfile)
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../evil")
        tar.addfile(info, io.BytesIO(b""))
    before = {i.id for i in store.images()}
    with pytest.raises(BuildError, match=message.replace("(", r"\(")):
        await b.build(BuildOptions(tmp_path, tag="broken:1"))
    with pytest.raises(ImageNotFound):
        store.get("broken:1")
    assert {i.id for i in store.images()} == before
    assert runtime.store.ids() == set()  # the build container is gone
    assert not (tmp_path.parent / "evil").exists()
    assert [p for p in store.tmp.iterdir() if not p.name.endswith(".lock")] == []


async def test_from_a_base_that_is_missing_makes_it(
    builder: tuple[Builder, list[str]], store: ImageStore, tmp_path: Path
) -> None:
    b, lines = builder
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN test -x /bin/busybox\n")
    image = await b.build(BuildOptions(tmp_path, tag="ondemand:1"))
    assert " ---> busybox is not in the store: making it" in lines
    assert any("making busybox" in line for line in lines)
    assert store.get("busybox").diff_ids == image.diff_ids  # RUN changed nothing: no layer
