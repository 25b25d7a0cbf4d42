"""The command line: the whole flow on the embedded model, and every user mistake
ending in one line, a non-zero exit and no partial output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwgen import ir

ROOT = Path(__file__).resolve().parents[1]


def hwgen(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "hwgen.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=1800)


def assert_user_error(proc, text):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hwgen: error: ") and text in lines[0], lines[0]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The embedded model built once for the session."""
    out = tmp_path_factory.mktemp("e2e") / "digits"
    proc = hwgen("build", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_build_writes_the_build_folder(built):
    names = sorted(p.name for p in built.iterdir())
    for name in ("hwgen_top.v", "manifest.json", "model.json", "model.npz", "vectors.npz"):
        assert name in names
    assert not any(n.startswith(".") for n in names)
    manifest = json.loads((built / "manifest.json").read_text())
    model = ir.Model.load(built)
    assert manifest["ports"]["result"]["classes"] == model.num_classes == 10
    assert manifest["golden_accuracy"] >= 0.94
    vectors = np.load(built / "vectors.npz")
    assert vectors["x"].shape == (360, 1, 8, 8)


def test_missing_checkpoint(tmp_path):
    out = tmp_path / "b"
    assert_user_error(hwgen("build", tmp_path / "nope.pt", "--out", out), "nope.pt")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04this is not a checkpoint")
    out = tmp_path / "b"
    assert_user_error(hwgen("build", bad, "--out", out), "bad.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_layer_sequence_without_an_engine(tmp_path):
    """A conv layer straight into a flatten (no requantization) has no engine: one line."""
    rng = np.random.default_rng(0)
    model = ir.Model("mac", (1, 8, 8), 8, 1 / 255, [
        ir.Conv2d("conv", weight=rng.integers(-4, 4, (2, 1, 3, 3)), padding=1),
        ir.Flatten("flatten"),
        ir.AdderDense("fc", weight=rng.integers(-4, 4, (10, 128))),
    ])
    model.save(tmp_path / "m")
    out = tmp_path / "b"
    assert_user_error(hwgen("build", tmp_path / "m", "--out", out), "'conv' (conv2d) must be followed by a requant")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_not_a_build_folder(tmp_path):
    assert_user_error(hwgen("sim", tmp_path, "--images", "1"), "not an hwgen build folder")
    assert_user_error(hwgen("synth", tmp_path, "--device", "ice40-up5k"), "not an hwgen build folder")


def test_unknown_device(built):
    assert_user_error(hwgen("synth", built, "--device", "ice40-up9000"), "ice40-up9000")


def test_missing_simulator(built, tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))  # the venv only: no iverilog
    assert_user_error(hwgen("sim", built, "--simulator", "icarus", "--images", "1", env=env), "iverilog")


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_sim_bit_exact(built, simulator):
    proc = hwgen("sim", built, "--simulator", simulator, "--images", "6", "--backpressure")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((built / f"sim_{simulator}.json").read_text())
    assert report["images"] == 6 and report["mismatches"] == []


@pytest.mark.parametrize("device", ["ice40-up5k", "ecp5-25f"])
def test_synth_fits(built, device):
    proc = hwgen("synth", built, "--device", device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((built / "report.json").read_text())["synth"][device]
    assert 0 < report["luts"] and report["logic_cells"] <= report["logic_cells_available"]
    assert report["fmax_mhz"] > 5


def test_model_that_does_not_fit(tmp_path):
    out = tmp_path / "big"
    assert hwgen("build", "--out", out, "--fold", "conv1=pe:8,simd:8").returncode == 0
    assert_user_error(hwgen("synth", out, "--device", "ice40-up5k"), "fold more or pick a larger device")
    assert not (out / "report.json").exists()


def test_bad_folding_is_one_line(tmp_path):
    out = tmp_path / "b"
    assert_user_error(hwgen("build", "--out", out, "--fold", "conv1=pe:3"), "conv1")
    assert_user_error(hwgen("build", "--out", out, "--fold", "nolayer=pe:1"), "nolayer")
    assert_user_error(hwgen("build", "--out", out, "--fold", "garbage"), "--fold")
    assert not out.exists()


def test_train_refuses_unknown_arch(tmp_path):
    assert_user_error(hwgen("train", "--arch", "capsule", "--out", tmp_path / "m.pt"), "capsule")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_whole_test_set_bit_exact(built, simulator):
    proc = hwgen("sim", built, "--simulator", simulator, "--images", "360")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((built / f"sim_{simulator}.json").read_text())
    assert report["images"] == 360 and report["mismatches"] == []
    assert report["accuracy"] >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("device", ["ice40-hx8k", "ecp5-85f"])
def test_synth_other_devices(built, device):
    proc = hwgen("synth", built, "--device", device)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_command_takes_verbose_and_quiet():
    import logging

    from hwgen import cli

    parser = cli.make_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"build", "sim", "synth", "sweep", "compare", "train"} <= set(commands)
    for name, sub in commands.items():
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"-v", "--verbose", "-q", "--quiet"} <= flags, name
    logger = logging.getLogger("hwgen")
    level = logger.level
    try:
        for verbose, quiet, want in ((0, False, logging.WARNING), (1, False, logging.INFO),
                                     (2, False, logging.DEBUG), (0, True, logging.ERROR)):
            cli._configure_logging(verbose, quiet)
            assert logger.level == want
        assert sum(getattr(h, "_hwgen_cli", False) for h in logger.handlers) == 1
    finally:
        logger.setLevel(level)
