"""The host: ``hwgen infer`` sends a build's images to a board over its serial port.

Images go in request frames of up to ``batch`` images (:mod:`hwgen.frame`); each reply carries
the scores, the argmax and the accelerator's cycle count of every image. Two rates come out,
measured separately: the link's (images over the wall time of the exchanges, serial transfer
included) and the accelerator's (its clock over the cycles the reply reports).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwgen import frame
from hwgen.flow import read_manifest

from . import BoardError
from .top import BAUD

__all__ = ["InferError", "InferResult", "infer", "load_images", "format_infer"]


class InferError(BoardError):
    """The board does not answer, or answers with an error, or the images do not fit it."""


@dataclass
class InferResult:
    predictions: list[int]
    labels: list[int] | None
    golden: list[int] | None  # the build's golden argmax of the same images, when known
    cycles: list[int]
    seconds: float  # wall time of the exchanges
    retries: int
    clock_mhz: float | None

    @property
    def accuracy(self) -> float | None:
        if self.labels is None:
            return None
        return float(np.mean(np.array(self.predictions) == np.array(self.labels)))

    @property
    def link_images_per_s(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def accelerator_images_per_s(self) -> float | None:
        if self.clock_mhz is None or not self.cycles:
            return None
        return self.clock_mhz * 1e6 / float(np.mean(self.cycles))


def load_images(build_dir, data: str | None = None, images: int | None = None):
    """``(x, labels, golden argmax or None)``: the first ``images`` test vectors of the build,
    or the test images of data set ``data`` quantized as the build's model wants them."""
    from hwgen import ir

    read_manifest(build_dir)
    if data is not None:
        from hwgen import data as datasets
        from hwgen.quant import quantize_input

        model = ir.Model.load(build_dir)
        ds = datasets.load(data)
        ds.check_model(model.input_shape, model.num_classes, "the build's model")
        x, labels, golden = quantize_input(model, ds.x_test), ds.y_test, None
    else:
        with np.load(Path(build_dir) / "vectors.npz", allow_pickle=False) as v:
            x, labels, golden = v["x"], v["labels"], v["argmax"]
    n = len(x) if images is None else min(int(images), len(x))
    if n < 1:
        raise InferError("no images to send (--images must be at least 1)")
    return x[:n], labels[:n], None if golden is None else golden[:n]


def _board_report(build_dir, board_name: str | None) -> dict:
    if board_name is None:
        return {}
    path = Path(build_dir) / "board" / board_name / "board_report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def infer(port: str, build_dir, *, data: str | None = None, images: int | None = None,
          board: str | None = None, batch: int | None = None, baud: int | None = None,
          clock_mhz: float | None = None, timeout_s: float = 5.0,
          retries: int = 2) -> InferResult:
    """Send the images (see :func:`load_images`) to the board on ``port``; the answers.

    ``batch``, ``baud`` and ``clock_mhz`` default to the board build's (``--board`` of
    ``hwgen build``; its ``board_report.json``), else 4 images, 115200 baud and no clock (the
    accelerator's rate is then given in cycles only). A frame answered with an error status
    (a corrupted line) is sent again, up to ``retries`` times."""
    import serial

    known = _board_report(build_dir, board)
    batch = int(batch or known.get("max_count", 4))
    baud = int(baud or known.get("baud", BAUD))
    clock_mhz = clock_mhz or known.get("clock_mhz")
    x, labels, golden = load_images(build_dir, data, images)
    if not 1 <= batch <= frame.MAX_COUNT:
        raise InferError(f"--batch must be 1..{frame.MAX_COUNT}, not {batch}")
    try:
        blobs = [frame.image_bytes(im) for im in x]
    except frame.FrameError as e:
        raise InferError(str(e)) from None
    try:
        link = serial.serial_for_url(port, baudrate=baud, timeout=timeout_s)
    except (serial.SerialException, OSError) as e:
        raise InferError(f"cannot open {port}: {e}") from None
    try:
        return _exchange(link, port, blobs, batch, retries, labels, golden, clock_mhz)
    except (serial.SerialException, OSError) as e:
        raise InferError(f"{port}: {e}") from None


def _exchange(link, port, blobs, batch, retries, labels, golden, clock_mhz) -> InferResult:
    predictions, cycles, tries = [], [], 0
    with link:
        link.reset_input_buffer()
        t0 = time.perf_counter()
        for start in range(0, len(blobs), batch):
            request = frame.encode_request(blobs[start:start + batch])
            for attempt in range(retries + 1):
                link.write(request)
                link.flush()
                try:
                    reply = frame.read_reply(link.read)
                except frame.FrameError as e:
                    reply, why = None, str(e)
                else:
                    why = reply.status.name
                if reply is not None and reply.status == frame.Status.OK:
                    break
                tries += 1
                time.sleep(0.1)  # let the board's timeout end whatever it was in
                link.reset_input_buffer()
            else:
                raise InferError(f"{port}: images {start}.. not answered after {retries + 1} "
                                 f"tries (last: {why})")
            predictions += [r.argmax for r in reply.results]
            cycles += [r.cycles for r in reply.results]
        seconds = time.perf_counter() - t0
    return InferResult(predictions, None if labels is None else [int(v) for v in labels],
                       None if golden is None else [int(v) for v in golden], cycles, seconds,
                       tries, clock_mhz)


def format_infer(r: InferResult, classes: list[str] | None = None) -> str:
    """What ``hwgen infer`` prints: one line per image, then accuracy and the two rates."""
    lines = []
    for i, p in enumerate(r.predictions):
        name = f" ({classes[p]})" if classes and p < len(classes) else ""
        label = f", label {r.labels[i]}" if r.labels is not None else ""
        lines.append(f"image {i}: predicted {p}{name}{label}")
    n = len(r.predictions)
    if r.accuracy is not None:
        right = sum(p == t for p, t in zip(r.predictions, r.labels))
        lines.append(f"accuracy {r.accuracy:.4f} ({right}/{n})")
    if r.golden is not None:
        agree = sum(p == g for p, g in zip(r.predictions, r.golden))
        lines.append(f"golden model agrees on {agree}/{n}")
    lines.append(f"link: {n} images in {r.seconds:.2f} s, {r.link_images_per_s:.1f} images/s"
                 + (f" ({r.retries} frames sent again)" if r.retries else ""))
    mean = float(np.mean(r.cycles))
    rate = r.accelerator_images_per_s
    lines.append(f"accelerator: {mean:.0f} cycles/image"
                 + (f", {rate:.0f} images/s at {r.clock_mhz:g} MHz" if rate else ""))
    return "\n".join(lines)
