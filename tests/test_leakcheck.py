import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.leakcheck import Snapshot

REPO = Path(__file__).resolve().parent.parent


def test_added_since_reports_only_new_resources_by_kind() -> None:
    before = Snapshot(netns=frozenset({"scow-old"}), links=frozenset({"svaaaaaa"}))
    after = Snapshot(
        netns=frozenset({"scow-old", "scow-new"}),
        links=frozenset(),
        processes=frozenset({"42 sleep 30"}),
    )
    assert after.added_since(before) == {"netns": ["scow-new"], "processes": ["42 sleep 30"]}
    assert before.added_since(before) == {}


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return pytester


def test_clean_session_passes(inner: pytest.Pytester) -> None:
    inner.makepyfile("def test_nothing_left():\n    assert 1 + 1 == 2\n")
    result = inner.runpytest_subprocess("-p", "tests.leakcheck")
    assert result.ret == 0
    assert "LEAK CHECK FAILED" not in result.stdout.str()


def test_a_changed_runc_binary_fails_the_session(
    inner: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runc = tmp_path / "runc"
    runc.write_bytes(b"the real one")
    monkeypatch.setenv("SCOW_LEAKCHECK_RUNC", str(runc))
    inner.makepyfile(
        f"""
        def test_harmless():
            pass
        def test_overwrites_runc():
            open({str(runc)!r}, "ab").write(b"payload")
        """
    )
    result = inner.runpytest_subprocess("-p", "tests.leakcheck")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*RUNC CHANGED: the sha256 of {runc}*test_overwrites_runc*"])


def test_leftover_child_process_fails_the_session(inner: pytest.Pytester, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    inner.makepyfile(
        f"""
        import subprocess
        def test_leaves_a_process():
            p = subprocess.Popen(["sleep", "60"])
            open({str(pid_file)!r}, "w").write(str(p.pid))
        """
    )
    try:
        result = inner.runpytest_subprocess("-p", "tests.leakcheck")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            ["*LEAK CHECK FAILED*", "*processes: * sleep 60*", "*after*test_leaves_a_process*"]
        )
    finally:
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            # Re-parented to us when this process is a subreaper (the runtime makes it one).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def test_leftover_netns_fails_the_session(inner: pytest.Pytester) -> None:
    name = f"scow-leaktest-{uuid.uuid4().hex[:8]}"
    inner.makepyfile(
        f"""
        import subprocess
        def test_leaves_a_netns():
            subprocess.run(["ip", "netns", "add", {name!r}], check=True)
        """
    )
    try:
        result = inner.runpytest_subprocess("-p", "tests.leakcheck")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*LEAK CHECK FAILED*", f"*netns: {name}*"])
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
