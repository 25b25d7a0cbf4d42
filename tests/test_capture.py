"""A model in, the PyTorch way: a forward() captured by torch.fx, a .pt2 written by torch.export,
a path.py:function, the architectures' kernel/stride/padding options and non-square inputs —
each through the CLI and through hwgen.convert, built and bit-exact on Icarus against
hwgen.golden."""

import contextlib
import io
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwgen
from hwgen import capture, cli, data, golden, ir, quant
from hwgen.nn import AdderConv2d, AdderLinear, ShiftConv2d, build_model, save_checkpoint
from hwgen.nn.train import train

H, W = 10, 14  # a non-square input


def hwgen_cli(*args):
    """``hwgen ARGS`` in a new process (the installed entry point)."""
    return subprocess.run([sys.executable, "-m", "hwgen.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=900)


def hwgen_main(*args):
    """``hwgen ARGS`` through :func:`hwgen.cli.main` in this process (no interpreter start-up)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_user_error(proc, *texts):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hwgen: error: "), lines[0]
    for text in texts:
        assert text in lines[0], lines[0]


def colour_wide():
    """500 of the digits as 3-channel 10×14 images (resampled; each channel its own intensity)."""
    x_tr, y_tr, x_te, y_te = data.digits()
    x = np.concatenate([x_tr, x_te])[:500, 0]
    x = x[:, (np.arange(H) * 8) // H][:, :, (np.arange(W) * 8) // W]
    x = np.stack([x, x ** 2, 1 - x], axis=1)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8), np.concatenate([y_tr, y_te])[:500]


# The user's own model file: a forward() with functional ReLU, max-pool and flatten; kernels 5
# (padding 2) and 1 (padding 0); 3 channels in, a 10×14 input.
USER_MODEL = textwrap.dedent("""
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from torch import nn

    from hwgen.nn import AdderConv2d, AdderLinear


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = AdderConv2d(3, 4, 5, padding=2)
            self.bn1 = nn.BatchNorm2d(4)
            self.conv2 = AdderConv2d(4, 6, 1)
            self.bn2 = nn.BatchNorm2d(6)
            self.fc = AdderLinear(6 * 2 * 3, 10)
            self.bn3 = nn.BatchNorm1d(10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = F.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
            x = x.view(x.size(0), -1)
            return self.bn3(self.fc(x))


    def untrained():
        torch.manual_seed(0)
        return Net()


    def trained():
        net = untrained()
        net.load_state_dict(torch.load(Path(__file__).with_name("weights.pt"), weights_only=True))
        return net


    def not_a_module():
        return 42
""")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's file, its model trained for 1 epoch through the Python API, saved as weights,
    as a .pt2 export, and the data set as .npz."""
    tmp = tmp_path_factory.mktemp("user")
    (tmp / "mine.py").write_text(USER_MODEL)
    x, y = colour_wide()
    np.savez(tmp / "wide.npz", x=x, y=y)
    dataset = data.load(tmp / "wide.npz")
    net = capture.load_function(f"{tmp / 'mine.py'}:untrained")
    metrics = train(model=net, epochs=3, dataset=dataset, progress=False)
    assert metrics["test_accuracy"] > 0.2  # well above chance (0.1), after 3 short epochs
    torch.save(net.state_dict(), tmp / "weights.pt")
    net.eval()
    ep = torch.export.export(net, (torch.tensor(dataset.x_train[:2]),))
    torch.export.save(ep, tmp / "mine.pt2")
    return tmp, net.eval(), dataset


@pytest.fixture(scope="module")
def user_cli_build(user):
    tmp, _, _ = user
    proc = hwgen_cli("build", f"{tmp / 'mine.py'}:trained", "--data", tmp / "wide.npz",
                     "--out", tmp / "cli")
    assert proc.returncode == 0, proc.stderr
    return tmp / "cli", proc.stdout


def _same_build(a, b):
    """Two build folders with the same Verilog and the same test vectors (hence the same
    simulation)."""
    assert (a / "hwgen_top.v").read_bytes() == (b / "hwgen_top.v").read_bytes()
    with np.load(a / "vectors.npz") as va, np.load(b / "vectors.npz") as vb:
        for key in ("x", "labels", "scores"):
            np.testing.assert_array_equal(va[key], vb[key])


# --------------------------------------------------------------------------- capture


class _Functional(nn.Module):
    """Every spelling the capture reads, in one forward()."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.bn(self.conv(x)).relu()
        x = nn.functional.max_pool2d(x, kernel_size=2)
        x = torch.flatten(self.drop(x), 1)
        x = x.reshape(x.shape[0], -1)
        return self.fc(F.dropout(x, 0.1, self.training))


def test_forward_is_read_as_written_and_sequential_is_unchanged():
    m = _Functional().eval()
    nodes = capture.capture(m)
    assert [(n.name, type(n.module).__name__) for n in nodes] == [
        ("conv", "Conv2d"), ("bn", "BatchNorm2d"), ("relu", "ReLU"), ("max_pool2d", "MaxPool2d"),
        ("flatten", "Flatten"), ("reshape", "Flatten"), ("fc", "Linear")]
    assert nodes[0].inputs == (capture.INPUT,) and nodes[-1].inputs == ("reshape",)
    seq = nn.Sequential(m.conv, m.bn, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Identity(), m.fc)
    x = data.digits_dataset().x_train
    a, b = quant.quantize(m, x), quant.quantize(seq, x)
    assert a.to_json() == b.to_json()
    nested = build_model("shiftadd")
    assert [n.name for n in capture.capture(nested)] == [str(i) for i in range(len(nested))]


def test_a_residual_add_is_captured_and_refused_in_one_line():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = AdderConv2d(1, 1, 3, padding=1), ShiftConv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return torch.flatten(self.b(self.a(x)) + x, 1)

    nodes = capture.capture(Residual())
    add = next(n for n in nodes if isinstance(n.module, capture.Add))
    assert add.inputs == ("b", capture.INPUT)
    with pytest.raises(ir.ModelError, match=r"module 'add' of type Add is not supported \(x \+ y"):
        quant.quantize(Residual(), np.ones((2, 1, 4, 4), np.float32))


@pytest.mark.parametrize("forward, message", [
    (lambda self, x: torch.sigmoid(self.conv(x)), "torch.sigmoid at node 'sigmoid'"),
    (lambda self, x: self.conv(x).view(-1, 16), "x.view() to a shape other than"),
    (lambda self, x: self.conv(x) * 2, "operator.mul at node 'mul'"),
    (lambda self, x: F.conv2d(x, self.conv.weight), "the attribute 'conv.weight'"),
    (lambda self, x: self.conv(x) if x.sum() > 0 else x, "torch.fx cannot trace"),
])
def test_unsupported_ops_are_named_with_their_node(forward, message):
    model = type("M", (nn.Module,), {"forward": forward})()
    model.conv = nn.Conv2d(1, 1, 3)
    with pytest.raises(ir.ModelError, match=re.escape(message)) as e:
        capture.capture(model)
    assert "\n" not in str(e.value)
    if "at node" in message:
        assert "supported: hwgen.nn layers" in str(e.value)


def test_exported_program_maps_to_the_same_modules(user):
    tmp, net, dataset = user
    loaded = capture.load_exported(tmp / "mine.pt2")
    assert [type(n.module).__name__ for n in loaded.nodes] == [
        "AdderConv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AdderConv2d", "BatchNorm2d", "ReLU",
        "MaxPool2d", "Flatten", "AdderLinear", "BatchNorm1d"]
    x = torch.tensor(dataset.x_test)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    a = quant.quantize(loaded, dataset.x_train)
    b = quant.quantize(net, dataset.x_train)
    assert a.to_json() == b.to_json()


def test_every_hwgen_layer_is_one_exported_node():
    names = {}
    for arch in ("shiftadd", "winograd-adder"):
        model = build_model(arch).eval()
        ep = torch.export.export(model, (torch.rand(2, 1, 8, 8),))
        names[arch] = [str(n.target) for n in ep.graph.nodes if str(n.target).startswith("hwgen.")]
        loaded = capture.capture_exported(ep)
        x = torch.rand(3, 1, 8, 8)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    assert names["shiftadd"] == ["hwgen.shift_conv2d.default", "hwgen.adder_conv2d.default"] * 2 + [
        "hwgen.shift_linear.default", "hwgen.adder_linear.default"]
    assert names["winograd-adder"] == ["hwgen.winograd_adder_conv2d.default"] * 2 + [
        "hwgen.adder_linear.default"]


def test_training_still_uses_the_eager_autograd():
    layer = AdderConv2d(2, 3, 3, padding=1)
    x = torch.rand(2, 2, 5, 5, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    assert "hwgen" not in type(layer(x).grad_fn).__name__  # not the operator's (none)


# --------------------------------------------------------------------------- a user's model


def test_path_function_through_the_cli_is_bit_exact(user, user_cli_build):
    tmp, _, dataset = user
    build, stdout = user_cli_build
    model = ir.Model.load(build)
    assert model.input_shape == (3, H, W) and model.meta["data"]["sha256"] == dataset.sha256
    assert f"the wide test set ({len(dataset.x_test)} images)" in stdout
    proc = hwgen_main("sim", build, "--images", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 mismatches" in proc.stdout


def test_pt2_through_the_cli_builds_the_same_design(user, user_cli_build):
    tmp, _, _ = user
    proc = hwgen_main("build", tmp / "mine.pt2", "--data", tmp / "wide.npz", "--out", tmp / "pt2")
    assert proc.returncode == 0, proc.stderr
    _same_build(tmp / "pt2", user_cli_build[0])


def test_live_module_through_the_api_is_bit_exact(user, user_cli_build, tmp_path):
    tmp, net, dataset = user
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(dataset.x_train),
                                       torch.tensor(dataset.y_train)),
        batch_size=256)
    build = hwgen.convert(net, calibration=loader, test=(dataset.x_test, dataset.y_test),
                          out=tmp_path / "api")
    assert build.model.input_shape == (3, H, W) and "module hwgen_top" in build.verilog
    result = build.simulate(images=2)
    assert not result["mismatches"] and result["images"] == 2
    expected = golden.run(build.model, quant.quantize_input(build.model, dataset.x_test)).argmax
    assert build.accuracy == float((expected == dataset.y_test).mean())
    # The same model and data through .pt2 and path.py:function give the same design.
    _same_build(build.build_dir, user_cli_build[0])
    for source in (tmp / "mine.pt2", f"{tmp / 'mine.py'}:trained"):
        other = hwgen.convert(source, data=dataset, out=tmp_path / "other")
        _same_build(other.build_dir, user_cli_build[0])


def test_a_pt2_runs_no_code_when_loaded(tmp_path):
    marker = tmp_path / "touched"

    class Sneaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = AdderLinear(64, 10)

        def forward(self, x):
            marker.write_text("ran")  # a side effect of the Python code, not of the graph
            print("SNEAKY")
            return self.fc(torch.flatten(x, 1))

    torch.export.save(torch.export.export(Sneaky().eval(), (torch.rand(2, 1, 8, 8),)),
                      tmp_path / "sneaky.pt2")
    marker.unlink()
    proc = hwgen_cli("build", tmp_path / "sneaky.pt2", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists() and "SNEAKY" not in proc.stdout + proc.stderr


def test_model_source_errors_are_one_line(user, tmp_path):
    tmp, _, _ = user
    out = tmp_path / "o"
    cases = [
        (f"{tmp_path / 'none.py'}:make", "no such Python file"),
        (f"{tmp / 'mine.py'}:missing", "no function 'missing'"),
        (f"{tmp / 'mine.py'}:not_a_module", "returned int, not a torch.nn.Module"),
        (tmp_path / "none.pt2", "no such exported model file"),
        (tmp / "wide.npz", "not a readable PyTorch checkpoint"),
    ]
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    cases.append((tmp_path / "bad.pt2", "not a readable torch.export program"))
    for source, message in cases:
        assert_user_error(hwgen_main("build", source, "--out", out), message)
    # The digits (the default data) do not fit the model: one line, before anything is written.
    assert_user_error(hwgen_main("build", f"{tmp / 'mine.py'}:trained", "--out", out),
                      "has 1×8×8 images; the model does not take them")
    (tmp_path / "sig.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, 10)
            def forward(self, x):
                return torch.sigmoid(self.fc(torch.flatten(x, 1)))
        def make():
            return M()
    """))
    assert_user_error(hwgen_main("build", f"{tmp_path / 'sig.py'}:make", "--out", out),
                      "torch.sigmoid at node 'sigmoid'", "supported:")
    assert not out.exists()
    with pytest.raises(capture.CaptureError, match="returned int"):
        hwgen.convert(f"{tmp / 'mine.py'}:not_a_module", out=out)
    assert not out.exists()


# --------------------------------------------------------------------------- architectures


def test_architecture_options_shape_the_layers():
    m = build_model("adder", kernel="5,1", padding=[2, 0], input_size="10x14", in_channels=3)
    convs = [l for l in m if isinstance(l, AdderConv2d)]
    assert [(c.kernel_size, c.padding) for c in convs] == [(5, 2), (1, 0)]
    assert m(torch.rand(2, 3, 10, 14)).shape == (2, 10)
    m = build_model("conv", kernel=[3, 5], padding=[0, 2], input_size=[10, 14])
    assert m(torch.rand(2, 1, 10, 14)).shape == (2, 10)
    for bad, message in (({"kernel": [3]}, "kernel must be an integer >= 1 or 2 of them"),
                         ({"input_size": "10y14"}, "input_size must be"),
                         ({"kernel": 9}, "leaves a 0×0 map")):
        with pytest.raises(ValueError, match=message):
            build_model("adder", **bad)


def test_architecture_with_options_through_the_cli_is_bit_exact(user, tmp_path):
    tmp, _, dataset = user
    proc = hwgen_main("train", "--arch", "adder", "--epochs", "1", "--data", tmp / "wide.npz",
                     "--set", "kernel=5,1", "--set", "padding=2,0", "--set", "channels=[4,6]",
                     "--out", tmp_path / "a.pt", "--quiet")
    assert proc.returncode == 0, proc.stderr
    config = torch.load(tmp_path / "a.pt", weights_only=True)["config"]
    assert config["input_size"] == [H, W] and config["in_channels"] == 3
    proc = hwgen_main("build", tmp_path / "a.pt", "--data", tmp / "wide.npz",
                      "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["data"]["input_shape"] == [3, H, W]
    proc = hwgen_main("sim", tmp_path / "b", "--images", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # input_size from --set must agree with the data set's, in one line.
    assert_user_error(hwgen_main("train", "--data", tmp / "wide.npz", "--set", "input_size=14x10",
                                "--out", tmp_path / "c.pt"), "input_size=14x10 but data set 'wide'")
    # Stride 2 quantizes and builds (the window generator steps by the stride).  Random weights
    # will do.
    config = {"stride": [2, 1], "channels": [4, 4], "in_channels": 3, "input_size": [H, W]}
    save_checkpoint(tmp_path / "s.pt", build_model("conv", **config).eval(), "conv", config,
                    {"data": dataset.describe()})
    proc = hwgen_main("build", tmp_path / "s.pt", "--data", tmp / "wide.npz", "--out", tmp_path / "s")
    assert proc.returncode == 0, proc.stderr
    engines = json.loads((tmp_path / "s" / "manifest.json").read_text())["engines"]
    assert [e.get("stride") for e in engines if e.get("stride")][:1] == [2]


def test_architecture_with_options_through_the_api_is_bit_exact(user, tmp_path):
    tmp, _, dataset = user
    train(arch="conv", epochs=1, dataset=dataset, progress=False, out=tmp_path / "c.pt",
          config={"kernel": [3, 5], "padding": [0, 2], "channels": [4, 6]})
    build = hwgen.convert(tmp_path / "c.pt", data=dataset, out=tmp_path / "b")
    convs = [layer for layer in build.model.layers if isinstance(layer, ir.Conv2d)]
    assert [c.padding for c in convs] == [0, 2]
    assert build.model.input_shape == (3, H, W)
    result = build.simulate(images=2)
    assert not result["mismatches"] and result["passed"]
