"""The Python API: one call from a PyTorch model to a build, in the style of hls4ml.

::

    import hwgen

    build = hwgen.convert(model, calibration=x_train, test=(x_test, y_test), out="build/mine")
    build.model          # the integer model (hwgen.ir.Model)
    build.verilog        # the Verilog text of hwgen_top.v
    build.simulate()     # cocotb on Icarus: bit-exact against hwgen.golden
    build.synthesize()   # Yosys + nextpnr: LUTs, Fmax
    build.report()       # report.html/.md/.json

:func:`convert` runs the same steps as ``hwgen build`` (:func:`hwgen.flow.quantize_module`,
:func:`hwgen.flow.build`); the methods of :class:`Build` call :func:`hwgen.simulate.simulate`,
:func:`hwgen.synth.synthesize` and :func:`hwgen.report.write_report` on its folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import data, flow, ir
from .buildfolder import BuildFolder

__all__ = ["convert", "Build"]


class Build:
    """A build folder and what :func:`convert` made into it.

    Members
    -------
    build_dir : Path
        The build folder (see :mod:`hwgen.flow`).
    model : hwgen.ir.Model
        The integer model.
    manifest : dict
        The build's manifest (ports, folding, cycles per image, accuracy, data set).
    dataset : hwgen.data.Dataset
        The data set the model was calibrated and tested on.
    """

    def __init__(self, build_dir, model: ir.Model, manifest: dict, dataset: data.Dataset):
        self.build_dir = Path(build_dir)
        self.model = model
        self.manifest = manifest
        self.dataset = dataset

    @property
    def verilog(self) -> str:
        """The Verilog of the accelerator (``hwgen_top.v``)."""
        return BuildFolder(self.build_dir).verilog(self.manifest).read_text()

    @property
    def accuracy(self) -> float:
        """The integer (golden) model's accuracy on the test images."""
        return float(self.manifest["golden_accuracy"])

    def simulate(self, simulator: str = "icarus", images: int | None = 20, **options) -> dict:
        """Run the cocotb testbench (:func:`hwgen.simulate.simulate`); returns its summary."""
        from .simulate import simulate

        return simulate(self.build_dir, simulator=simulator, images=images, **options)

    def synthesize(self, device: str | None = None, **options) -> dict:
        """Synthesize, place and route (:func:`hwgen.synth.synthesize`); returns the report."""
        from .synth import synthesize

        return synthesize(self.build_dir, device or self.manifest.get("device") or "ice40-up5k",
                          **options)

    def report(self, out=None, **options) -> dict:
        """Write report.json/.md/.html (:func:`hwgen.report.write_report`) into ``out`` (default:
        the build folder); returns the report document."""
        from .report import write_report

        return write_report(Path(out or self.build_dir), self.build_dir, **options)

    def __repr__(self):
        return (f"<hwgen.Build {self.build_dir} {self.model.name!r}: "
                f"{self.manifest['cycles_per_image']} cycles/image, accuracy {self.accuracy:.4f}>")


def _arrays(source, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` of images given as an array, an ``(x, y)`` pair or a DataLoader (``y`` may be
    None for calibration images)."""
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return _numpy(source[0], what), _numpy(source[1], what)
    if hasattr(source, "__iter__") and not hasattr(source, "shape") and hasattr(source, "dataset"):
        xs, ys = [], []
        for batch in source:  # a torch DataLoader: batches of x or (x, y)
            if isinstance(batch, (tuple, list)):
                xs.append(_numpy(batch[0], what))
                if len(batch) > 1:
                    ys.append(_numpy(batch[1], what))
            else:
                xs.append(_numpy(batch, what))
        if not xs:
            raise data.DataError(f"{what}: the DataLoader gave no batches")
        return np.concatenate(xs), (np.concatenate(ys) if ys else None)
    return _numpy(source, what), None


def _numpy(value, what: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as e:
        raise data.DataError(f"{what}: not an array of images or labels ({e})") from None


def _dataset(module, data_arg, calibration, test, classes) -> data.Dataset:
    """The data set of a :func:`convert` call (see there)."""
    if data_arg is not None:
        if calibration is not None or test is not None:
            raise data.DataError("convert: give data, or calibration and test, not both")
        return data_arg if isinstance(data_arg, data.Dataset) else data.load(data_arg)
    if calibration is None and test is None:
        return data.digits_dataset()
    if calibration is None or test is None:
        raise data.DataError("convert: give both calibration and test data (or data=)")
    if isinstance(calibration, data.Dataset):
        x_cal, y_cal = calibration.x_train, calibration.y_train
    else:
        x_cal, y_cal = _arrays(calibration, "calibration")
    if isinstance(test, data.Dataset):
        x_te, y_te = test.x_test, test.y_test
    else:
        x_te, y_te = _arrays(test, "test")
        if y_te is None:
            raise data.DataError("test: labels are needed, as (x, y) or batches of (x, y)")
    if y_cal is None:  # calibration needs images only; labels are not read
        y_cal = np.zeros(len(x_cal), dtype=np.int64)
    if classes is None and module is not None:
        classes = [str(i) for i in range(_outputs(module, x_te))]
    return data.from_arrays(x_cal, y_cal, x_test=x_te, y_test=y_te, classes=classes, name="arrays")


def _outputs(module, x) -> int:
    """The number of outputs of ``module`` on an image of ``x`` (0 if it cannot tell)."""
    import torch

    try:
        with torch.no_grad():
            out = module.eval()(torch.as_tensor(np.array(x[:1], dtype=np.float32)))
        return int(out.shape[1]) if out.dim() == 2 else 0
    except Exception:  # noqa: BLE001 -- flow.quantize_module reports it in one line
        return 0


def convert(model, calibration=None, test=None, *, data=None, act_bits: int = 8,  # noqa: C901
            weight_bits: int = 8, device: str = "ice40-up5k", folding: dict | None = None,
            cycles: int | None = None, out: str | os.PathLike | None = None,
            classes=None, name: str | None = None) -> Build:
    """Quantize ``model``, generate its accelerator into ``out`` and return the :class:`Build`.

    Parameters
    ----------
    model : nn.Module or path
        A live module (read by :func:`hwgen.capture.capture`: ``nn.Sequential`` or any
        ``forward()`` of supported layers), or what ``hwgen build`` takes: a checkpoint
        (``.pt``), an exported program (``.pt2``), ``path.py:function``, an integer model folder.
    calibration, test
        Calibration images (an ``N×C×H×W`` array or tensor, ``(x, y)``, a DataLoader or a
        :class:`hwgen.data.Dataset`, whose training images are used) and labelled test images
        (``(x, y)``, a DataLoader of ``(x, y)`` batches or a Dataset, whose test split is used).
        Float pixels are taken as they are (the model's own scale); integer pixels are divided
        by the largest (see :mod:`hwgen.data`).
    data : hwgen.data.Dataset or path of a .npz
        Instead of ``calibration``/``test``: one data set, both splits.  With none of the
        three: the bundled digits.
    act_bits, weight_bits : int
        Activation and weight widths of the integer model.
    device, folding, cycles
        As ``hwgen build --device/--fold/--cycles``: ``folding`` is ``{"conv0": {"pe": 2}}``.
    out : path
        The build folder (default: a new temporary folder).
    classes : list of str
        Class names (default: ``"0"``, ``"1"``, … one per output).
    name : str
        The integer model's name (default: ``"<data set>-<model class>"``).

    Raises
    ------
    hwgen.capture.UnsupportedOpError, hwgen.ir.ModelError, hwgen.data.DataError
        For a model or data hwgen cannot take (one line each).
    """
    from torch import nn

    from . import capture

    if isinstance(model, nn.Module):
        module, stem = model, type(model).__name__
        dataset = _dataset(module, data, calibration, test, classes)
        qmodel = flow.quantize_module(module, dataset, name or f"{dataset.name}-{stem}",
                                      act_bits, weight_bits)
    elif isinstance(model, (str, os.PathLike)):
        if capture.is_module_source(model):
            module, stem = capture.load_module(model)
            dataset = _dataset(module, data, calibration, test, classes)
            qmodel = flow.quantize_module(module, dataset, name or f"{dataset.name}-{stem}",
                                          act_bits, weight_bits)
        else:
            given = None if data is None and calibration is None else \
                _dataset(None, data, calibration, test, classes)
            qmodel = flow.load_model(model, act_bits=act_bits, weight_bits=weight_bits,
                                     dataset=given)
            dataset = flow.dataset_for(qmodel.meta.get("data"), given, str(model))
    else:
        raise capture.CaptureError(f"convert: model must be a torch.nn.Module or a path, not "
                                   f"{type(model).__name__}")
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="hwgen-build-"))
    manifest = flow.build(qmodel, out, device=device, folding=folding, target_cycles=cycles,
                          dataset=dataset)
    return Build(out, qmodel, manifest, dataset)
