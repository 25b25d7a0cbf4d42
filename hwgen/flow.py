"""The build: a model becomes a build folder (:class:`hwgen.buildfolder.BuildFolder`, which
knows the folder's files).

A build is written into a temporary sibling folder and moved into place at the end, so a failed
build leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import data, golden, ir
from .buildfolder import BuildError, BuildFolder

log = logging.getLogger(__name__)

__all__ = ["build", "load_model", "dataset_for", "test_vectors", "read_manifest", "BuildError",
           "BuildFolder"]


def load_model(source: str | os.PathLike | None, act_bits: int = 8, weight_bits: int = 8,
               dataset: data.Dataset | None = None) -> ir.Model:
    """An integer model from a PyTorch checkpoint (quantized here, calibrated on ``dataset``'s
    training images), an integer model folder or JSON file, or, with ``source=None``, the
    embedded default checkpoint.

    ``dataset`` defaults to the bundled digits, but only for a model that was trained on them
    (or records no data set): a model trained on other data without ``dataset`` is refused
    rather than calibrated and tested on the digits."""
    if source is not None:
        path = Path(source)
        if path.is_dir() or path.suffix == ".json":
            model = ir.Model.load(path)
            dataset_for(model.meta.get("data"), dataset, str(path))
            return model
        from . import capture

        if capture.is_module_source(source):  # a .pt2 file or path.py:function
            module, stem = capture.load_module(source)
            dataset = dataset_for(None, dataset, str(source))
            return quantize_module(module, dataset, f"{dataset.name}-{stem}", act_bits, weight_bits)
    from .nn.checkpoint import embedded_checkpoint, load_checkpoint
    from .nn.models import input_shape

    path = embedded_checkpoint() if source is None else Path(source)
    module, info = load_checkpoint(path)
    dataset = dataset_for(info["metrics"].get("data"), dataset, str(path))
    config = info.get("config", {})
    if "input_size" in config:
        dataset.check_model(input_shape(config), config.get("num_classes", dataset.num_classes),
                            f"model {path}")
    return quantize_module(module, dataset, f"{dataset.name}-{info.get('arch', 'model')}",
                           act_bits, weight_bits)


def quantize_module(module, dataset: data.Dataset, name: str, act_bits: int = 8,
                    weight_bits: int = 8) -> ir.Model:
    """Quantize a float ``module`` (see :mod:`hwgen.capture`), calibrated on ``dataset``'s
    training images and tested on its test images; the model records the data set."""
    import torch

    from .quant import quantize

    with torch.no_grad():
        try:
            out = module.eval()(torch.as_tensor(np.array(dataset.x_train[:2])))
        except Exception as e:  # noqa: BLE001 -- shapes that do not fit: the user's to mend
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise data.DataError(f"data set {dataset.name!r} has "
                                 f"{'×'.join(map(str, dataset.input_shape))} images; the model "
                                 f"does not take them ({type(e).__name__}: {first})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ir.ModelError(f"the model must return one (N, outputs) tensor, got "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
    dataset.check_model(dataset.input_shape, int(out.shape[1]), "the model")
    model = quantize(module, dataset.x_train, act_bits=act_bits, weight_bits=weight_bits,
                     name=name, classes=list(dataset.classes),
                     x_test=dataset.x_test, y_test=dataset.y_test)
    model.meta["data"] = dataset.describe()
    return model


def dataset_for(recorded: dict | None, given: data.Dataset | None, what: str) -> data.Dataset:
    """The data set to calibrate and test a model with: ``given``, else the digits when the
    model was trained on them (``recorded`` is the description it carries, if any)."""
    if given is not None:
        return given
    digits = data.digits_dataset()
    if recorded and recorded.get("sha256") not in (None, digits.sha256):
        raise data.DataError(f"{what} was made with data set {recorded.get('name')!r}, not the "
                             f"bundled digits; give that data set with --data")
    return digits


def test_vectors(model: ir.Model, dataset: data.Dataset | None = None) -> dict[str, np.ndarray]:
    """``dataset``'s test images (default: as :func:`dataset_for` picks) quantized for
    ``model``, with labels and golden outputs."""
    # The labels are checked when the data is the model's own (given, or recorded in it); a model
    # that records none (one made by hand) is still tested on the digits images for bit-exactness.
    own = dataset is not None or bool(model.meta.get("data"))
    dataset = dataset_for(model.meta.get("data"), dataset, f"model {model.name!r}")
    return _vectors(model, dataset, own)


def _vectors(model: ir.Model, dataset: data.Dataset, own: bool) -> dict[str, np.ndarray]:
    """:func:`test_vectors` of the resolved ``dataset``; ``own``: its labels are the model's."""
    from .quant import quantize_input

    dataset.check_model(model.input_shape, model.num_classes, f"model {model.name!r}", labels=own)
    x = quantize_input(model, dataset.x_test)
    result = golden.run(model, x)
    d = directed_images(model)
    directed = golden.run(model, d)
    return {"x": x.astype(np.int64), "labels": dataset.y_test.astype(np.int64),
            "scores": result.scores, "argmax": result.argmax, "x_directed": d,
            "scores_directed": directed.scores, "argmax_directed": directed.argmax}


def directed_images(model: ir.Model) -> np.ndarray:
    """Unlabelled images at the ends of the input range, streamed before the user's: all zero,
    all full scale, and the two checkerboards of the two (every edge between the ends)."""
    c, h, w = model.input_shape
    top = (1 << model.input_bits) - 1
    checker = np.indices((c, h, w)).sum(axis=0) % 2 * top
    return np.stack([np.zeros((c, h, w)), np.full((c, h, w), top), checker,
                     top - checker]).astype(np.int64)


def build(model: ir.Model, out_dir: str | os.PathLike, device: str | None = None,
          folding: dict | None = None, target_cycles: int | None = None,
          dataset: data.Dataset | None = None, argmax: bool = True) -> dict:
    """Write the build folder for ``model``; returns the manifest.

    ``argmax=False``: the model's output is not a classification; the accelerator streams the
    last layer's values out (no argmax), the simulation compares them with the golden model's,
    and no accuracy is reported (``golden_accuracy`` is None).

    ``folding`` overrides layers' foldings; ``target_cycles`` paces the automatic folding
    (cycles per image, see :func:`hwgen.hw.plan.balanced_foldings`); the test vectors are
    ``dataset``'s test images (see :func:`test_vectors`), recorded as the manifest's ``data``."""
    own = dataset is not None or bool(model.meta.get("data"))
    dataset = dataset_for(model.meta.get("data"), dataset, f"model {model.name!r}")
    from .hw.top import generate

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BuildError(f"{out_dir} exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent,
                                prefix=f".{out_dir.name}.building-{os.getpid()}-"))
    try:
        t0 = time.perf_counter()
        folder = BuildFolder(tmp)
        log.info("building %s from model %r (%d layers)", out_dir, model.name, len(model.layers))
        model.save(tmp)
        vectors = _vectors(model, dataset, own)
        np.savez(folder.vectors, **vectors)
        log.info("test vectors: %d images of %s", len(vectors["x"]), dataset.name)
        verilog, manifest = generate(model, folding=folding, target_cycles=target_cycles,
                                     argmax=argmax)
        for engine in manifest["engines"]:
            log.debug("engine %s (%s): %s cycles per image", engine["name"], engine["kind"],
                      engine["cycles_per_image"])
        manifest["device"] = device
        manifest["generation_seconds"] = round(time.perf_counter() - t0, 3)
        manifest["golden_accuracy"] = (float((vectors["argmax"] == vectors["labels"]).mean())
                                       if argmax else None)
        manifest["model_meta"] = model.meta
        manifest["data"] = dataset.describe()
        folder.write_design(verilog, manifest)
        _swap_into_place(tmp, out_dir)
        log.info("wrote %s: %s, %d cycles per image", out_dir, manifest["verilog"],
                 manifest["cycles_per_image"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _clean_stale(out_dir: Path) -> None:
    """Remove ``out_dir``'s temporary folders left by builds whose process is gone (killed)."""
    for p in out_dir.parent.glob(f".{out_dir.name}.building-*"):
        pid = p.name[len(f".{out_dir.name}.building-"):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _swap_into_place(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(build_dir: str | os.PathLike) -> dict:
    """The manifest of ``build_dir`` (:meth:`hwgen.buildfolder.BuildFolder.manifest`)."""
    return BuildFolder(build_dir).manifest()
