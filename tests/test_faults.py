"""Faults: a tool hwgen started dies with hwgen (Ctrl-C, SIGTERM, SIGKILL of hwgen)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A stand-in hwgen: runs a long "tool" through synth._run; the tool writes its pid and sleeps.
_PARENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from hwgen import synth
    d = Path(sys.argv[1])
    tool = [sys.executable, "-c",
            "import os, time; open('tool.pid', 'w').write(str(os.getpid())); time.sleep(600)"]
    synth._run(tool, d, d / "tool.log", "tool", timeout=600)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too: look at its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and pdeathsig")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_tool_dies_with_hwgen(tmp_path, sig):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "tool.pid"
    for _ in range(600):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    tool = int(pid_file.read_text())
    assert _alive(tool)
    assert os.getpgid(tool) != os.getpgid(parent.pid)  # its own process group
    parent.send_signal(sig)
    parent.wait(timeout=30)
    for _ in range(200):
        if not _alive(tool):
            break
        time.sleep(0.05)
    else:
        os.kill(tool, signal.SIGKILL)
        pytest.fail(f"the tool outlived hwgen killed by {sig.name}")


def test_stale_build_folders_of_dead_builds_are_cleaned(tmp_path):
    from hwgen import flow
    from hwgen.testmodels import random_digits_model

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "b"
    stale = tmp_path / f".b.building-{dead.pid}-x1"
    live = tmp_path / f".b.building-{os.getpid()}-x2"  # a build still running: kept
    other = tmp_path / f".c.building-{dead.pid}-x3"    # another build folder's: not ours
    for p in (stale, live, other):
        p.mkdir()
    flow.build(random_digits_model(), out)
    assert (out / "manifest.json").is_file()
    assert not stale.exists() and live.exists() and other.exists()
