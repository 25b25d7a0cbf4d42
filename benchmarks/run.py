"""Measure the flow end to end and write benchmarks/results.json + benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py [--train] [--images 50] [--out build/bench]

Records: train time (with --train; trains a fresh model), generation time of the build,
simulated images/s on Icarus and on Verilator, LUTs / FFs / BRAMs and Fmax for the iCE40
UP5K and the ECP5-85F.  Figures are measurements on the machine that ran it; they are
written down here, never asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _hwgen(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hwgen.cli", *args], check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="also time training from scratch")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--out", default="build/bench")
    args = parser.parse_args()
    out = Path(args.out)
    results: dict = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                                 "cores": __import__("os").cpu_count()},
                     "date": time.strftime("%Y-%m-%d")}
    model_arg: list[str] = []
    if args.train:
        ckpt = out.parent / "bench-model.pt"
        results["train_seconds"] = round(_hwgen("train", "--out", str(ckpt), "--quiet"), 1)
        model_arg = [str(ckpt)]
    results["build_seconds"] = round(_hwgen("build", *model_arg, "--out", str(out)), 2)
    manifest = json.loads((out / "manifest.json").read_text())
    results["generation_seconds"] = manifest.get("generation_seconds")
    results["cycles_per_image"] = manifest.get("cycles_per_image")
    results["golden_accuracy"] = manifest.get("golden_accuracy")
    for sim in ("icarus", "verilator"):
        wall = _hwgen("sim", str(out), "--simulator", sim, "--images", str(args.images))
        rep = json.loads((out / f"sim_{sim}.json").read_text())
        results[f"sim_{sim}"] = {"images": rep.get("images"), "images_per_second": rep.get("images_per_s"),
                                 "streaming_images_per_second": rep.get("stream_images_per_s"),
                                 "mismatches": len(rep.get("mismatches", [])), "wall_seconds_incl_build": round(wall, 1)}
    for device in ("ice40-up5k", "ecp5-85f"):
        wall = _hwgen("synth", str(out), "--device", device)
        rep = json.loads((out / "report.json").read_text())["synth"][device]
        results[f"synth_{device}"] = {k: rep.get(k) for k in ("logic_cells", "logic_cells_available", "luts", "ffs",
                                                                  "carry", "brams", "dsps", "fmax_mhz")}
        results[f"synth_{device}"]["seconds"] = round(wall, 1)
        fmax = rep.get("fmax_mhz")
        if fmax and manifest.get("cycles_per_image"):
            results[f"synth_{device}"]["images_per_second_at_fmax"] = round(fmax * 1e6 / manifest["cycles_per_image"])
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Benchmark results", "", f"Measured {results['date']} with `benchmarks/run.py"
             f"{' --train' if args.train else ''} --images {args.images}` on {results['machine']}.", "",
             "| figure | value |", "|---|---|"]
    for key, value in results.items():
        if key in ("machine", "date"):
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                lines.append(f"| {key}.{k} | {v} |")
        else:
            lines.append(f"| {key} | {value} |")
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
