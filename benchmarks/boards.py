"""Bitstreams for every board, for the embedded AdderNet and one other family (the shipped
DeepShift checkpoint): logic cells, BRAMs, Fmax against the board clock, and images/s over the
link. Writes benchmarks/BOARDS.md and benchmarks/boards.json.

    .venv/bin/python benchmarks/boards.py [--out build/boards] [--boards icebreaker,ulx3s,...]

Each point is ``hwgen build MODEL --out OUT/<board>-<family> --board <board>``. Images/s over
the link are those of the frame format at the board's baud rate (no board is attached to this
machine): a frame of ``k`` images takes ``10·(request + reply bytes)/baud`` seconds on the wire
plus the accelerator's cycles (the reply's cycle count, from the simulated board) at its clock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"adder": None, "shift": ROOT / "hwgen" / "models" / "digits_shift.pt"}


def link_images_per_s(report: dict, manifest: dict, k: int) -> float:
    from hwgen import frame

    request = frame.HEADER.size + k * report["image_len"] + frame.CRC.size
    reply = frame.REPLY_HEADER.size + k * report["result_bytes"] + frame.CRC.size
    wire = 10 * (request + reply) / report["baud"]
    # the accelerator starts an image once it is all in; the last image's time is not hidden
    accel = (manifest["cycles_per_image"] + (manifest.get("latency_cycles") or 0)) \
        / (report["clock_mhz"] * 1e6)
    return k / (wire + accel)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "build" / "boards"))
    parser.add_argument("--boards", default="icebreaker,ulx3s,orangecrab")
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    done = out / "rows.jsonl"
    seen = {(r["board"], r["family"]) for r in map(json.loads, done.read_text().splitlines())} \
        if done.is_file() else set()
    out.mkdir(parents=True, exist_ok=True)
    for name in args.boards.split(","):
        for family in args.families.split(","):
            if (name, family) in seen:
                continue
            folder = out / f"{name}-{family}"
            model = FAMILIES[family]
            cmd = [str(Path(sys.executable).parent / "hwgen"), "build",
                   *([str(model)] if model else []), "--out", str(folder), "--board", name]
            t0 = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True)
            row = {"board": name, "family": family, "command": " ".join(cmd[1:]),
                   "seconds": round(time.perf_counter() - t0, 1)}
            if run.returncode != 0:
                row["error"] = (run.stderr.strip().splitlines() or ["?"])[-1]
            else:
                rep = json.loads((folder / "board" / name / "board_report.json").read_text())
                man = json.loads((folder / "manifest.json").read_text())
                row.update({k: rep[k] for k in ("device", "clock_mhz", "osc_mhz", "logic_cells",
                                                "logic_cells_available", "brams", "dsps",
                                                "fmax_accel_mhz", "timing_met", "max_count",
                                                "bitstream_sha256")},
                           fmax=rep["fmax"], cycles_per_image=man["cycles_per_image"],
                           accuracy=man["golden_accuracy"],
                           link_images_per_s=round(link_images_per_s(rep, man, 1), 1),
                           link_images_per_s_batch=round(
                               link_images_per_s(rep, man, rep["max_count"]), 1),
                           accel_images_per_s=round(rep["clock_mhz"] * 1e6
                                                    / man["cycles_per_image"], 1))
            print(json.dumps(row), flush=True)
            with open(done, "a") as f:
                f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in done.read_text().splitlines()]
    (ROOT / "benchmarks" / "boards.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Boards", "", "`.venv/bin/python benchmarks/boards.py` (see its docstring for how "
             "each figure is measured).", "",
             "| board | family | device | clock (PLL) | logic cells | BRAM | Fmax accel / clk | "
             "accuracy | cycles/image | images/s link (1 / batch) | images/s accelerator | "
             "build s |", "|" + "---|" * 12]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['board']} | {r['family']} | failed: {r['error']} |" + " |" * 9)
            continue
        fm = r["fmax"]
        clk = next((v["achieved_mhz"] for k, v in fm.items() if "accel" not in k), None)
        pll = "PLL" if r["clock_mhz"] != r["osc_mhz"] else "osc"
        lines.append(
            f"| {r['board']} | {r['family']} | {r['device']} | {r['clock_mhz']:g} MHz ({pll}) | "
            f"{r['logic_cells']}/{r['logic_cells_available']} | {r['brams']} | "
            f"{r['fmax_accel_mhz']:.1f}" + (f" / {clk:.1f}" if pll == "PLL" and clk else "")
            + f" MHz | {r['accuracy']:.4f} | {r['cycles_per_image']} | "
            f"{r['link_images_per_s']} / {r['link_images_per_s_batch']} | "
            f"{r['accel_images_per_s']:.0f} | {r['seconds']:.0f} |")
    (ROOT / "benchmarks" / "BOARDS.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
