"""``hwgen infer`` end to end against the simulated board: a pseudo-terminal bridged to the
cocotb UART model of sim/board.py (Icarus), the host's printed predictions against the golden
model's."""

import re
import subprocess
import sys
import threading
import time

import numpy as np

from board_fixtures import tiny_build
from hwgen.boards.bench import simulate_board


def test_infer_through_a_pty_prints_the_golden_predictions(tmp_path):
    build = tiny_build(tmp_path / "tiny")
    pty_file, stop = tmp_path / "pty", tmp_path / "stop"
    done = {}

    def board():
        done["summary"] = simulate_board(build, "icarus", test="board_bridge", extra_env={
            "HWGEN_PTY_FILE": str(pty_file), "HWGEN_BRIDGE_STOP": str(stop)})

    thread = threading.Thread(target=board)
    thread.start()
    try:
        deadline = time.monotonic() + 300
        while not pty_file.is_file() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pty_file.is_file(), "the simulated board did not open its terminal"
        host = subprocess.run(
            [sys.executable, "-m", "hwgen.cli", "infer", "--port", pty_file.read_text(),
             "--build", str(build), "--images", "10", "--batch", "3", "--timeout", "60"],
            capture_output=True, text=True, timeout=600)
    finally:
        stop.write_text("")
        thread.join(timeout=120)
    assert host.returncode == 0, host.stderr
    printed = [int(p) for p in re.findall(r"^image \d+: predicted (\d+)", host.stdout, re.M)]
    with np.load(build / "vectors.npz") as v:
        golden, labels = v["argmax"][:10].tolist(), v["labels"][:10]
    assert printed == golden
    assert "golden model agrees on 10/10" in host.stdout
    assert f"accuracy {np.mean(labels == golden):.4f}" in host.stdout
    assert re.search(r"^link: 10 images in [\d.]+ s", host.stdout, re.M)
    assert re.search(r"^accelerator: \d+ cycles/image", host.stdout, re.M)
    assert done["summary"]["passed"] and done["summary"]["bytes"] > 0
