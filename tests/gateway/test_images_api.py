"""Image routes: build with streamed progress, bootstrap, list, inspect, history, tag, remove."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile

import httpx

from pool.manager import PoolManager


def context_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


DOCKERFILE = b"""FROM busybox
ARG GREETING=hi
LABEL purpose=test
COPY hello.txt /hello.txt
RUN echo "$GREETING" > /greeting
CMD ["cat", "/greeting"]
"""


async def _stream(api: httpx.AsyncClient, method: str, url: str, **kw: object) -> list[dict]:  # type: ignore[type-arg]
    async with api.stream(method, url, **kw) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, await response.aread()
        return [json.loads(line) async for line in response.aiter_lines() if line]


async def test_build_streams_progress_and_the_image_is_usable(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    body = context_tar({"Dockerfile": DOCKERFILE, "hello.txt": b"hello\n"})
    messages = await _stream(
        api, "POST", "/v1.43/build",
        params={"t": "tests/built:1", "buildargs": json.dumps({"GREETING": "hey"})},
        content=body, headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    text = "".join(m.get("stream", "") for m in messages)
    assert "Step 1/6 : FROM busybox" in text and "Successfully tagged tests/built:1" in text
    image_id = next(m["aux"]["ID"] for m in messages if "aux" in m)
    try:
        listed = (await api.get("/images/json")).json()
        mine = next(i for i in listed if "tests/built:1" in i["RepoTags"])
        assert mine["Id"] == image_id and mine["Labels"] == {"purpose": "test"}
        inspected = (await api.get("/images/tests/built:1/json")).json()
        assert inspected["Config"]["Cmd"] == ["cat", "/greeting"]
        history = (await api.get("/images/tests/built:1/history")).json()
        assert any("COPY" in row["CreatedBy"] for row in history)
        assert history[0]["Id"] == image_id

        tagged = await api.post("/images/tests/built:1/tag", params={"repo": "tests/other",
                                                                     "tag": "2"})  # fmt: skip
        assert tagged.status_code == 201
        untagged = (await api.delete("/images/tests/other:2")).json()
        assert untagged == [{"Untagged": "tests/other:2"}]
    finally:
        removed = (await api.delete("/images/tests/built:1")).json()
    assert {"Deleted": image_id} in removed
    assert (await api.get("/images/tests/built:1/json")).status_code == 404


async def test_build_errors_arrive_in_the_stream(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    bad = context_tar({"Dockerfile": b"FROM busybox\nRUN exit 7\n"})
    messages = await _stream(api, "POST", "/build", content=bad)
    errors = [m for m in messages if "error" in m]
    assert errors and "7" in errors[0]["error"] and errors[0]["errorDetail"]["message"]
    # Refused before any progress: a 4xx of its own, as dockerd answers.
    no_dockerfile = await api.post("/build", content=context_tar({"a": b""}))
    assert no_dockerfile.status_code == 400 and "no Dockerfile" in no_dockerfile.json()["message"]
    empty = await api.post("/build", content=b"")
    assert empty.status_code == 400


async def test_bootstrap_streams_progress(api: httpx.AsyncClient, manager: PoolManager) -> None:
    messages = await _stream(api, "POST", "/system/images/bootstrap", params={"name": "busybox"})
    assert any("busybox" in m.get("stream", "") for m in messages)
    assert any("aux" in m for m in messages)
    unknown = await api.post("/system/images/bootstrap", params={"name": "windows"})
    assert unknown.status_code == 404 and "windows" in unknown.json()["message"]


async def test_image_errors(api: httpx.AsyncClient, manager: PoolManager) -> None:
    missing = await api.get("/images/no/such:image/json")
    assert missing.status_code == 404 and "no/such" in missing.json()["message"]
    assert (await api.delete("/images/no/such:image")).status_code == 404
    no_repo = await api.post("/images/busybox/tag")
    assert no_repo.status_code == 400


async def test_no_node_is_503_at_once(api: httpx.AsyncClient) -> None:
    response = await api.get("/images/json")
    assert response.status_code == 503 and response.json()["error"] == "no_node"
    build = await api.post("/build", content=context_tar({"Dockerfile": DOCKERFILE}))
    assert build.status_code == 503


async def test_save_load_round_trip(api: httpx.AsyncClient, manager: PoolManager) -> None:
    context = context_tar({"Dockerfile": DOCKERFILE, "hello.txt": b"hi\n"})
    built = await _stream(api, "POST", "/build", params={"t": "tests/saved:1"}, content=context)
    image_id = next(m["aux"]["ID"] for m in built if "aux" in m)
    async with api.stream("GET", "/images/get", params={"names": "tests/saved:1"}) as response:
        assert response.status_code == 200
        archive = b"".join([chunk async for chunk in response.aiter_bytes()])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["tests/saved:1"]
    await api.delete("/images/tests/saved:1")
    loaded = await api.post("/images/load", content=archive)
    assert loaded.status_code == 200
    assert "Loaded image: tests/saved:1" in loaded.text
    assert (await api.get("/images/tests/saved:1/json")).json()["Id"] == image_id
    assert (await api.get("/images/get", params={"names": "no/such"})).status_code == 404
    junk = await api.post("/images/load", content=b"not a tar")
    assert junk.status_code == 400
    await api.delete("/images/tests/saved:1")


async def test_import_a_rootfs_and_pull_a_base(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    rootfs = context_tar({"etc/motd": b"imported\n"})
    made = await api.post("/images/create", params={"fromSrc": "-", "repo": "tests/imported",
                                                     "tag": "1"}, content=rootfs)  # fmt: skip
    assert made.status_code == 200, made.text
    history = (await api.get("/images/tests/imported:1/history")).json()
    assert len(history) == 1 and history[0]["Size"] > 0
    await api.delete("/images/tests/imported:1")
    pulled = await api.post("/images/create", params={"fromImage": "busybox", "tag": "latest"})
    assert "up to date" in pulled.text
    unknown = await api.post("/images/create", params={"fromImage": "alpine"})
    assert unknown.status_code == 404 and "alpine" in unknown.json()["message"]


async def test_commit_an_environment(api: httpx.AsyncClient, manager: PoolManager) -> None:
    env = (await api.post("/system/environments", json={
        "image": "busybox", "cmd": "echo seeded > /seed && sleep 600"})).json()  # fmt: skip
    await asyncio.sleep(0.5)
    committed = await api.post("/commit", params={"container": env["id"], "repo": "tests/seeded",
                                                  "comment": "a seeded box"})  # fmt: skip
    assert committed.status_code == 201, committed.text
    await api.delete(f"/system/environments/{env['id']}")
    again = await api.post("/system/environments", json={
        "image": "tests/seeded", "cmd": "sleep 600", "wait": {"cmd": ["test", "-f", "/seed"],
                                                             "timeout": "5s"}})  # fmt: skip
    assert again.status_code == 201, again.text
    await api.delete(f"/system/environments/{again.json()['id']}")
    history = (await api.get("/images/tests/seeded/history")).json()
    assert history[0]["Comment"] == "a seeded box"
    await api.delete("/images/tests/seeded")
    missing = await api.post("/commit", params={"container": "nope"})
    assert missing.status_code == 404
