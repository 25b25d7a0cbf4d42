"""Training on a data set (:mod:`hwgen.data`; the bundled digits by default), deterministic, on the CPU.

The recipe follows the AdderNet paper: SGD with momentum 0.9 and a cosine learning-rate
schedule, the adaptive per-layer learning rate of the adder layers (``eta`` in the model
config), cross-entropy.  Parameters with ``requires_grad=False`` (the frozen part of a
``shiftadd`` model) are not given to the optimizer.  Augmentation: each training image is
shifted by a random ``(dy, dx)`` in ``{-1, 0, 1}²`` (zero fill), drawn from a seeded generator.
Per-epoch hook: before every epoch, every module with a method ``epoch_hook(epoch, epochs)`` is
called (and once more with ``epoch = epochs`` after the last), so a layer can follow a schedule
(the l2-to-l1 exponent of the Winograd-AdderNet layers).
The same seed gives the same weights (``torch.use_deterministic_algorithms`` is on and one
thread is used while training).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import data
from .checkpoint import save_checkpoint
from .models import build_model, default_config, input_hw

__all__ = ["train", "evaluate", "DEFAULTS"]

#: Training hyper-parameters of every architecture, unless the architecture or the caller
#: overrides them.
DEFAULTS = {"epochs": 100, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "shift": 0}


def _shift_batch(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-max_shift, max_shift]², zero fill."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    d = torch.randint(0, 2 * p + 1, (n, 2), generator=gen)
    rows = (d[:, 0, None] + torch.arange(h)[None])          # (N, H)
    cols = (d[:, 1, None] + torch.arange(w)[None])          # (N, W)
    idx_n = torch.arange(n)[:, None, None]
    out = padded[idx_n, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Float top-1 accuracy of ``model`` (put in eval mode) on ``x (N, 1, 8, 8)``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        out = model(torch.as_tensor(np.array(x[i:i + batch_size], dtype=np.float32)))
        correct += int((out.argmax(1).numpy() == np.asarray(y[i:i + batch_size])).sum())
    return correct / max(1, len(x))


def train(arch: str = "adder", epochs: int | None = None, seed: int = 0, out=None, progress: bool = True,
          config: dict | None = None, dataset: data.Dataset | None = None, history: bool = False,
          *, model: torch.nn.Module | None = None, **hparams) -> dict:
    """Train ``arch`` on ``dataset`` (default: the digits); save a checkpoint to ``out`` if given.

    ``model``: train this module (a user's own architecture, in place) instead of building
    ``arch``; then neither ``config`` nor ``out`` applies (a checkpoint names an architecture:
    save the module with :func:`torch.save` of its state dict, or export it with torch.export).

    The architecture's ``in_channels``, ``input_size`` and ``num_classes`` come from the data set
    unless ``config`` sets them (then they must agree with it).  ``hparams`` override
    :data:`DEFAULTS` (batch_size, lr, momentum, weight_decay, shift).  Returns the metrics,
    ``{"test_accuracy", "train_accuracy", "train_time_s", "epochs", "seed", "arch", "data", ...}``;
    ``data`` describes the data set (:meth:`hwgen.data.Dataset.describe`).  With ``history``,
    ``metrics["history"]`` holds the training curves: per epoch ``{"epoch", "loss",
    "test_accuracy"}`` (the mean training loss, and the test accuracy after the epoch; measuring
    it changes no weight).
    """
    unknown = sorted(set(hparams) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"train: unknown option {unknown[0]!r}; options: {', '.join(sorted(DEFAULTS))}")
    hp = {**DEFAULTS, **hparams}
    if epochs is not None:
        hp["epochs"] = int(epochs)
    if hp["epochs"] < 1:
        raise ValueError(f"train: epochs must be >= 1, got {hp['epochs']}")
    dataset = data.digits_dataset() if dataset is None else dataset
    if model is not None:
        if config or out is not None:
            raise ValueError("train: config and out apply to an architecture, not to a given model")
        arch = type(model).__name__
    else:
        config = {**default_config(arch), **_data_config(arch, dataset, config or {}),
                  **(config or {})}
    x_tr, y_tr, x_te, y_te = dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    # The tensors are tiny: one thread is faster, and much faster on a loaded machine (measured on
    # 2 cores under load: 1.0 s vs 55 s for 10 epochs), and makes the result independent of the core count.
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if model is None:
            model = build_model(arch, **config)
        xt = torch.as_tensor(np.array(x_tr))
        yt = torch.as_tensor(np.array(y_tr))
        steps_per_epoch = (len(xt) + hp["batch_size"] - 1) // hp["batch_size"]
        # Frozen parameters (shiftadd's ``freeze``) stay out of the optimizer: no weight decay, no momentum.
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(trainable, lr=hp["lr"], momentum=hp["momentum"],
                              weight_decay=hp["weight_decay"], nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], epochs=hp["epochs"],
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.15)
        start = time.perf_counter()
        curves = []
        bar = _progress(progress)
        with bar:
            task = bar.add_task(f"training {arch}", total=hp["epochs"]) if bar else None
            for epoch in range(hp["epochs"]):
                _epoch_hooks(model, epoch, hp["epochs"])
                model.train()
                order = torch.randperm(len(xt), generator=gen)
                total_loss = 0.0
                for i in range(0, len(xt), hp["batch_size"]):
                    idx = order[i:i + hp["batch_size"]]
                    if len(idx) < 2:  # BatchNorm needs two samples
                        continue
                    xb = _shift_batch(xt[idx], hp["shift"], gen)
                    loss = F.cross_entropy(model(xb), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total_loss += float(loss.detach()) * len(idx)
                if history:
                    curves.append({"epoch": epoch + 1, "loss": total_loss / len(xt),
                                   "test_accuracy": float(evaluate(model, x_te, y_te))})
                if bar:
                    bar.update(task, advance=1, description=f"training {arch}: epoch {epoch + 1} "
                                                            f"loss {total_loss / len(xt):.3f}")
            _epoch_hooks(model, hp["epochs"], hp["epochs"])  # the end: schedules reach their final value
        train_time = time.perf_counter() - start
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)

    metrics = {
        "test_accuracy": float(evaluate(model, x_te, y_te)),
        "train_accuracy": float(evaluate(model, x_tr, y_tr)),
        "train_time_s": float(train_time),
        "epochs": int(hp["epochs"]),
        "seed": int(seed),
        "arch": arch,
        "hparams": {k: (float(v) if isinstance(v, float) else int(v)) for k, v in hp.items()},
        "torch": torch.__version__,
        "data": dataset.describe(),
    }
    if history:
        metrics["history"] = curves
    if out is not None:
        save_checkpoint(Path(out), model, arch, config, metrics)
        metrics["path"] = str(out)
    return metrics


def _data_config(arch: str, dataset: data.Dataset, config: dict) -> dict:
    """The options of ``arch`` that the data set decides: channels in, image size, classes."""
    c, h, w = dataset.input_shape
    # A square input stays one number (the form the shipped checkpoints record).
    derived = {"in_channels": c, "input_size": h if h == w else [h, w],
               "num_classes": dataset.num_classes}
    options = default_config(arch)
    out = {}
    for key, value in derived.items():
        if key not in options:
            continue
        given = config.get(key, value)
        if (input_hw(given) != input_hw(value)) if key == "input_size" else given != value:
            shown = "x".join(map(str, input_hw(value))) if key == "input_size" else value
            raise data.DataError(f"--set {key}={given} but data set {dataset.name!r} has {key} "
                                 f"{shown}")
        out[key] = value
    return out


def _epoch_hooks(model: torch.nn.Module, epoch: int, epochs: int) -> None:
    """Call ``epoch_hook(epoch, epochs)`` of every module that has one (e.g. the l2-to-l1 schedule of
    :class:`hwgen.nn.winograd.WinogradAdderConv2d`): before each epoch ``0 … epochs-1``, and once
    with ``epoch = epochs`` after the last."""
    for m in model.modules():
        hook = getattr(m, "epoch_hook", None)
        if callable(hook):
            hook(epoch, epochs)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __bool__(self):
        return False


def _progress(enabled):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
