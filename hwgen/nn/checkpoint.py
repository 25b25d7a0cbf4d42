"""Checkpoints: a trained model as a plain dict of tensors and JSON values.

A checkpoint is ``{"format": "hwgen-checkpoint", "version": 1, "arch": str, "config": dict,
"state_dict": {name: tensor}, "metrics": dict}`` saved with :func:`torch.save`.  It is read
with ``torch.load(weights_only=True)``, so loading never runs code from the file: a pickle
that names any callable is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import HwgenError
from ..util import atomic_write
from .models import build_model

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "embedded_checkpoint",
           "FORMAT", "VERSION"]

FORMAT = "hwgen-checkpoint"
VERSION = 1
_MODELS = Path(__file__).resolve().parent.parent / "models"
_EMBEDDED = _MODELS / "digits_adder.pt"


class CheckpointError(HwgenError, ValueError):
    """A checkpoint that is missing, unreadable or does not match its architecture."""


def _plain(value, where):
    """Check that ``value`` is made of JSON-like primitives only (so weights_only can load it)."""
    if value is None:
        return None
    for kind in (bool, int, float, str):  # exact types: subclasses (TorchVersion, np.float64) would pickle as code
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    raise TypeError(f"{where}: value {value!r} of type {type(value).__name__} is not a plain value")


def save_checkpoint(path, model: nn.Module, arch: str, config: dict, metrics: dict) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "arch": str(arch),
        "config": _plain(dict(config), "config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": _plain(dict(metrics), "metrics"),
    }
    atomic_write(path, lambda f: torch.save(doc, f), binary=True)
    return path


_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue",
                "(1)", "(2)", "In PyTorch 2.6")


def _loader_message(e: BaseException) -> str:
    """The informative line of an exception (the safe loader's message is a paragraph)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    lines = [line.split("WeightsUnpickler error:", 1)[-1].strip() for line in lines
             if not line.startswith(_BOILERPLATE)]
    lines = [line for line in lines if line]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


MAX_ABS_WEIGHT = 1e9  # beyond it a float is absurd as a weight, bias or batch-norm statistic


def load_checkpoint(path) -> tuple[nn.Module, dict]:
    """Load a checkpoint: ``(model in eval mode, info)``; ``info`` has arch, config, metrics, path.

    Raises :class:`CheckpointError` with one line for a missing or unreadable file, a file that
    is not an hwgen checkpoint, an unknown architecture, or weights that do not fit it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. pickle protocol notices; the error below is what counts
            doc = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 -- anything the safe loader refuses is the same error to a user
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or it holds code that the "
                              f"safe loader refuses ({_loader_message(e)})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an hwgen checkpoint (no format {FORMAT!r}); "
                              f"make one with `hwgen train` or hwgen.nn.save_checkpoint")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc.get('version')!r}, this hwgen reads {VERSION}")
    arch, config, state = doc.get("arch"), doc.get("config", {}), doc.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: malformed checkpoint (config and state_dict must be dicts)")
    try:
        model = build_model(arch, **config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {_loader_message(e).split(': ', 1)[-1]}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}")
        raise CheckpointError(f"{path}: weights do not fit architecture {arch!r} with config {config} "
                              f"({what}; {len(missing)} missing, {len(unexpected)} unexpected)")
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[key].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(f"{path}: weights do not fit architecture {arch!r}: {key} is {shape}, "
                                  f"expected {tuple(expected[key].shape)}")
        if tensor.is_floating_point() and tensor.numel():
            worst = tensor.detach().abs().max().item()  # NaN propagates through max
            if not worst <= MAX_ABS_WEIGHT:
                raise CheckpointError(f"{path}: {key} holds {worst:g}; weights must be finite "
                                      f"and at most {MAX_ABS_WEIGHT:g} in magnitude")
    model.load_state_dict(state)
    model.eval()
    info = {"arch": arch, "config": config, "metrics": dict(doc.get("metrics", {})), "path": str(path)}
    return model, info


def embedded_checkpoint(arch: str = "adder") -> Path:
    """Path of the digits model of ``arch`` shipped with hwgen, ``hwgen/models/digits_<arch>.pt``.

    Shipped: ``adder`` (the default), ``shift`` (DeepShift-PS), ``shiftadd``, ``winograd-adder`` and ``conv``, each trained
    by :func:`hwgen.nn.train.train` with the default recipe and seed 0.
    """
    if not isinstance(arch, str) or not arch.replace("_", "").replace("-", "").isalnum():
        raise CheckpointError(f"no embedded checkpoint for architecture {arch!r}")
    path = _MODELS / f"digits_{arch}.pt"
    if not path.is_file():
        shipped = sorted(p.stem[len("digits_"):] for p in _MODELS.glob("digits_*.pt"))
        if path == _EMBEDDED or arch in shipped:  # the default is always shipped
            raise CheckpointError(f"{path}: the embedded checkpoint is missing from this installation")
        raise CheckpointError(f"no embedded checkpoint for architecture {arch!r}; shipped: {', '.join(shipped)}")
    return path
