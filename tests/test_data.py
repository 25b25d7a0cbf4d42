"""Data sets: the user's .npz file or arrays in, checked in one line; the digits stay the default
and are never used in place of the data a user gave."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hwgen import data, ir
from hwgen.quant import quantize_input


def hwgen(*args):
    return subprocess.run([sys.executable, "-m", "hwgen.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=1800)


def assert_user_error(proc, text):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hwgen: error: ") and text in lines[0], lines[0]


def colour_digits(size=12, extra_classes=2):
    """A 3-channel, ``size``×``size``, 12-class data set made from the digits: resampled, each
    channel its own intensity, and two classes more (rotated 3s and 4s). Integer pixels 0..255."""
    x_tr, y_tr, x_te, y_te = data.digits()
    x = np.concatenate([x_tr, x_te])[:, 0]
    y = np.concatenate([y_tr, y_te])
    idx = (np.arange(size) * 8) // size
    x = x[:, idx][:, :, idx]
    extra = [np.rot90(x[y == 3 + k], axes=(1, 2)) for k in range(extra_classes)]
    x = np.concatenate([x, *extra])
    y = np.concatenate([y, *[np.full(len(e), 10 + k) for k, e in enumerate(extra)]])
    x = np.stack([x, x ** 2, 1 - x], axis=1)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8), y.astype(np.int64)


def test_digits_is_the_fixed_split():
    d = data.digits_dataset()
    assert d.name == "digits" and d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert (len(d.x_train), len(d.x_test)) == (1437, 360)
    assert data.digits()[2] is d.x_test
    assert d.describe()["sha256"] == data.digits_dataset().sha256


def test_load_scales_integer_pixels_and_keeps_classes(tmp_path):
    x, y = colour_digits()
    names = np.array([f"class-{k}" for k in range(12)])
    np.savez(tmp_path / "colour.npz", x=x, y=y, classes=names)
    d = data.load(tmp_path / "colour.npz")
    assert d.name == "colour" and d.input_shape == (3, 12, 12) and d.num_classes == 12
    assert d.classes[11] == "class-11"
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() == 1
    assert len(d.x_train) + len(d.x_test) == len(x)
    assert set(d.y_test) == set(range(12))  # stratified


def test_explicit_split_and_test_set(tmp_path):
    x, y = colour_digits()
    split = np.zeros(len(x), bool)
    split[::3] = True
    d = data.from_arrays(x, y, split=split, name="s")
    np.testing.assert_array_equal(d.y_test, y[split])
    np.savez(tmp_path / "t.npz", x=x[:100], y=y[:100], x_test=x[100:120], y_test=y[100:120],
             pixel_max=np.float32(510))
    d = data.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(d.y_test, y[100:120])
    assert d.x_test.max() == pytest.approx(0.5)
    assert data.load(tmp_path / "t.npz").sha256 == d.sha256
    assert d.sha256 != data.from_arrays(x, y, split=split).sha256


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.zeros(4, int)}, "no array 'x'"),
    ({"x": np.zeros((4, 8, 8))}, "no array 'y'"),
    ({"x": np.zeros((4, 8, 8)), "y": np.zeros(3, int)}, "y must be 4 integer labels"),
    ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4)}, "y must be 4 integer labels"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4, int)}, "x must be N×C×H×W"),
    ({"x": -np.ones((4, 8, 8)), "y": np.zeros(4, int)}, "negative pixels"),
    ({"x": np.full((4, 8, 8), np.nan), "y": np.zeros(4, int)}, "NaN or infinite"),
    ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 2, 3]), "classes": np.array(["a", "b"])},
     "label 3 but only 2 class names"),
    ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4, int)}, "2 to"),
    ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 0, 1]), "labels": np.zeros(4)},
     "unknown array 'labels'"),
    ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 0, 1]), "x_test": np.zeros((2, 8, 8))},
     "x_test and y_test come together"),
    ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 0, 1]), "x_test": np.zeros((2, 9, 8)),
      "y_test": np.zeros(2, int)}, "x_test has 1×9×8 images, x has 1×8×8"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(data.DataError, match=message):
        data.load(tmp_path / "bad.npz")


def test_files_that_would_run_code_or_are_cut_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 4), y=np.zeros(4, int))
    with pytest.raises(data.DataError, match="Python objects"):
        data.load(tmp_path / "obj.npz")
    x, y = colour_digits()
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    blob = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="not a readable .npz"):
        data.load(tmp_path / "cut.npz")
    with pytest.raises(data.DataError, match="no such data set"):
        data.load(tmp_path / "missing.npz")


@pytest.fixture(scope="module")
def colour_build(tmp_path_factory):
    """A 12-class, 3×12×12 AdderNet trained (briefly) and built on its own .npz data set."""
    tmp = tmp_path_factory.mktemp("colour")
    x, y = colour_digits()
    np.savez(tmp / "colour.npz", x=x, y=y)
    proc = hwgen("train", "--arch", "adder", "--epochs", "3", "--data", tmp / "colour.npz",
                 "--out", tmp / "colour.pt", "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = hwgen("build", tmp / "colour.pt", "--data", tmp / "colour.npz", "--out", tmp / "b")
    assert proc.returncode == 0, proc.stderr
    return tmp, proc.stdout


def test_given_data_is_what_a_build_uses(colour_build):
    tmp, stdout = colour_build
    d = data.load(tmp / "colour.npz")
    manifest = json.loads((tmp / "b" / "manifest.json").read_text())
    assert manifest["data"] == d.describe()
    model = ir.Model.load(tmp / "b")
    assert model.input_shape == (3, 12, 12) and model.num_classes == 12
    assert model.meta["data"]["sha256"] == d.sha256
    with np.load(tmp / "b" / "vectors.npz") as v:
        np.testing.assert_array_equal(v["labels"], d.y_test)
        np.testing.assert_array_equal(v["x"], quantize_input(model, d.x_test))
        accuracy = float((v["argmax"] == v["labels"]).mean())
    assert manifest["golden_accuracy"] == accuracy
    assert f"the colour test set ({len(d.x_test)} images)" in stdout


def test_a_model_of_other_data_never_falls_back_to_the_digits(colour_build, tmp_path):
    tmp, _ = colour_build
    assert_user_error(hwgen("build", tmp / "colour.pt", "--out", tmp_path / "o"),
                      "made with data set 'colour', not the bundled digits; give that data set")
    assert_user_error(hwgen("build", tmp / "b", "--out", tmp_path / "o"), "made with data set 'colour'")
    assert not (tmp_path / "o").exists()


def test_data_that_does_not_fit_the_model(colour_build, tmp_path):
    tmp, _ = colour_build
    assert_user_error(hwgen("build", "--data", tmp / "colour.npz", "--out", tmp_path / "o"),
                      "has 3×12×12 images, model")
    x, y = colour_digits(size=8)
    np.savez(tmp_path / "wide.npz", x=x[:, :1], y=y)
    assert_user_error(hwgen("build", "--data", tmp_path / "wide.npz", "--out", tmp_path / "o"),
                      "has label 11, model")
    assert_user_error(hwgen("train", "--data", tmp_path / "wide.npz", "--set", "num_classes=10",
                            "--out", tmp_path / "m.pt"), "num_classes=10 but data set 'wide'")
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.pt").exists()


def test_simulation_of_a_build_on_other_data_is_bit_exact(colour_build):
    tmp, _ = colour_build
    proc = hwgen("sim", tmp / "b", "--images", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
