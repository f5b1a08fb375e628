"""Peak memory and wall time of every built-in command on a 24 MP photo with default options.

    python benchmarks/bench_memory.py                      # all commands, 6000x4000, CPU
    python benchmarks/bench_memory.py --commands denoise,lowlight --size 3000x2000
    python benchmarks/bench_memory.py --commands sr --alpha     # an RGBA input
    python benchmarks/bench_memory.py --imgen /path/to/old/imgen --imgen .venv/bin/imgen  # before/after
    python benchmarks/bench_memory.py --tile-cost 512     # bytes per input pixel of one call, per command

Each command runs once, as a fresh process (`imgen CMD big.png -o out.png --device cpu`, the
command's defaults otherwise), and its peak resident memory is read with wait4 from that one
child. The input is a deterministic 6000x4000 PNG (imgen_cli.testing.natural_image: gradients,
edges and texture). The target (issue #16): every command under 2 GB peak RSS on CPU with its
default options, and not more than 10% slower than before. Not part of the test suite: on 2 CPU
cores a full run takes tens of minutes.

Results on the 2-core development machine, shared with other work (load = 1-minute load average
before/after each run; CPU = user + system seconds). "before" is main at 80dc536, "after" the
memory change; each pair ran back to back on one input
(`--imgen OLD/imgen --imgen .venv/bin/imgen`):

| command | peak RSS before -> after (GiB) | wall s before -> after | CPU s before -> after | load |
|---|---|---|---|---|
| denoise | 0.95 -> 1.15 | 87.5 -> 77.4 | 126.9 -> 138.7 | 1.7-2.2 / 1.7 |
| lowlight | 1.40 -> 1.41 | 14.2 -> 13.2 | 15.7 -> 15.4 | 0.6-0.7 / 0.7 |
| sr (x4) | 12.44 -> 3.26 | 2881 -> 566 | - -> 761 | 8.3-4.7 / 1.3-1.0 |
| sr --scale 2 | 3.70 -> 1.62 | 352 -> 438 | 490.9 -> 494.1 | 0.7-3.4 / 3.4-1.9 |
| inpaint | 1.61 -> 1.60 | 12.0 -> 10.2 | 13.5 -> 11.8 | 0.7-0.8 / 0.8 |
| restyle | 0.94 -> 1.08 | 38.6 -> 35.3 | 55.5 -> 57.7 | 2.2 / 2.3 |

Every command but sr x4 stays under 2 GiB. sr x4's own output is 24000x16000x3 bytes (1.07
GiB) and Pillow's PNG encoder copies it into its 4-bytes-per-pixel RGB layout (1.43 GiB): 2.5
GiB before the interpreter, torch and the compressed bytes, so under 2 GiB needs an encoder
that writes rows as they come (imgen has one since: see below). The wall times move with the
load (sr --scale 2 ran at load 3.4 after 0.7): CPU seconds show the same work; denoise and
restyle run the same 1024-pixel tiles as before. The sr x4 "before" ran at load 8 with an older
copy of this script (no CPU column). An earlier version of this script counted its own 1.32 GB
in every row (see MAKE_INPUTS).

Then PNG is written band by band (io.write_png), alpha goes into the output band by band, and
--tile auto may go down to 384 pixels. sr x4, defaults; "before" main at 7243c15, "after" main
at c3be2d8; `--commands sr [--alpha] --imgen OLD/imgen` and `--imgen .venv/bin/imgen`, run one
after the other (RGB before alone; the two "after" rows side by side, sharing the 2 cores):

| input | peak RSS before -> after (GiB) | wall s before -> after | CPU s before -> after | load |
|---|---|---|---|---|
| RGB | 3.28 -> 2.15 | 1039 -> 1245 | 767 -> 606 | 1.8-4.8 / 4.4-3.1 |
| RGBA (--alpha) | 2.65 -> 2.66 | 1276 -> 1330 | 790 -> 732 | 5.6-4.2 / 5.1-1.4 |

The wall times are the load's (the "after" rows ran two at once on 2 cores); the CPU seconds
fell 21% and 7%. Writing is no longer the peak: an RSS trace of sr x4 on 3000x2000 stays flat
at 552 MB through its 52 s of writing 96 MP, against 1.8 GB while tiling. What is left is the
tiling phase: the 1.07 GiB (RGBA 1.43 GiB) output array, the input's float copy (0.29 GiB),
the interpreter with torch, and one tile; so sr x4 of 24 MP is still above 2 GiB, the only
command that is.

Then 8-bit input stays bytes until each tile needs it (9e74eff), and a PNG file is written while
the tiles run (io.PngFile): the last step hands each finished band of rows to the file, so the
output is never held whole, and the default budget (IMGEN_MEMORY) is 1.75 GiB, 1.88 GB. Each
command measured alone (imgen_cli.testing.measured), idle machine. "before" is f4521a9 (run
as `git archive` plus a PYTHONPATH wrapper), measured for sr x4 only; "after" is 294fcab for
sr and sr --scale 2 (`--commands sr,sr-x2`), 3f9aea7 for RGBA (`--commands sr --alpha`), and
for the others 294fcab's code with PNG deflation in a thread of its own, which 294fcab gave up
(no faster; it competed with torch for the cores):

| command | peak RSS before -> after (GiB) | wall s before -> after | CPU s before -> after |
|---|---|---|---|
| sr (x4) | 1.60 -> 1.57 | 372.1 -> 375.0 | 558.4 -> 562.0 |
| sr (x4), RGBA input | 1.90 -> 1.76 | 480.1 -> 466.3 | 695.3 -> 678.0 |
| sr --scale 2 | 1.26 | 207.8 | 379.8 |
| denoise | 0.92 | 55.6 | 104.8 |
| restyle | 0.90 | 27.8 | 47.9 |
| lowlight | 1.42 | 8.5 | 10.9 |
| inpaint | 1.62 | 7.9 | 10.3 |

Every command is now under 2 GB (1.86 GiB); the highest, RGBA sr x4, is at 1.89 GB, which was
2.04 GB before. The RGB sr x4 "before" here, 1.60 GiB, is well under the 1.93 GiB measured
for 1f55fff at the end of the previous session (with direct wait4); that figure was not
reproduced. On the old 2 GiB budget the streamed sr x4 took 815-pixel tiles and
peaked at 1.89 GiB (2.03 GB): the tile estimate is not exact, hence the lower default. An RGBA
input still becomes floats whole (it is split into colour and alpha, and the colour under
transparent pixels is filled).

denoise against 80dc536 (before the memory work), 294fcab, three pairs in alternating order
(`--commands denoise --imgen OLD --imgen NEW`, then NEW OLD, then OLD NEW), idle machine: wall
54.9, 55.4, 59.1 s before and 61.4, 61.3, 59.6 s after (means 56.5 and 60.8, +8%); CPU 100.3,
101.4, 109.1 s before and 112.6, 113.0, 110.5 s after (+8%); peak 0.92 GiB both. One build's
runs vary by up to 8%. Streaming costs nothing there: the same build with the output held and
encoded after (a switch made for the measurement) took 60.7 and 56.9 s against 60.5 and 57.0 s
streamed, alternating.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The inputs are made in a child process of their own, so this one stays small. A child's peak
# RSS as wait4 reports it is at least its parent's peak (Linux counts the parent's memory, which
# a vfork()ed child shares, until exec): once every command seemed to take at least the 1.32 GB
# of making the image. Each command is now measured alone too (imgen_cli.testing.measured).
MAKE_INPUTS = """
import sys
import numpy as np
from imgen_cli import io as imgio
from imgen_cli.testing import natural_image
folder, width, height, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
image = natural_image(height, width, channels)
open(folder + "/big.png", "wb").write(imgio.encode(imgio.Picture(image, "png"), "png")[0])
mask = np.zeros((height, width, 1), np.uint8)
mask[height // 3: height // 3 + 40, width // 4: width // 4 + 300] = 255  # a cable across the sky
open(folder + "/mask.png", "wb").write(imgio.encode(imgio.Picture(mask, "png"), "png")[0])
"""

# Default options only, plus what a command cannot run without.
COMMANDS = {
    "denoise": [],
    "lowlight": [],
    "sr": [],
    "sr-x2": ["--scale", "2"],
    "inpaint": ["--mask", "{mask}"],
    "restyle": ["--style", "autumn"],
}


def run(imgen: str, command: str, extra: list[str], source: Path, out: Path) -> tuple[int, float, float, float, str]:
    """(exit status, peak RSS in GiB, wall seconds, CPU seconds, last stderr line) of one run in a
    fresh process, measured alone (imgen_cli.testing.measured)."""
    from imgen_cli.testing import measured, measurement

    name = command.split("-")[0]
    args = [imgen, name, str(source), *extra, "-o", str(out), "--overwrite", "--device", "cpu", "-q"]
    report = out.with_name("peak.json")
    start = time.perf_counter()
    proc = subprocess.run(measured(args, report), stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    usage = measurement(report)
    lines = proc.stderr.decode().strip().splitlines()
    return proc.returncode, usage["peak_rss"] / 2**30, seconds, usage["cpu_s"], lines[-1] if lines else ""


TILE_COST = """
import sys
from imgen_cli.api import Pipeline
from imgen_cli.testing import natural_image
side, chain = int(sys.argv[1]), sys.argv[2:]
pipeline = Pipeline(chain, device="cpu", tile=0)
pipeline.run_array(natural_image(64, 64, 3))
image = natural_image(side, side, 3)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the present resident size
fields = lambda: {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("Vm")}
start = fields()["VmRSS"]
pipeline.run_array(image)
print((fields()["VmHWM"] - start) / side ** 2)
"""


def tile_cost(python: str, side: int) -> None:
    """Peak memory per input pixel of one whole-image call of each command (Linux): the numbers
    behind the plugins' `Tiling.bytes_per_pixel`. It includes the image's own float copies."""
    print(f"| command | bytes per input pixel ({side}x{side}, one call) |")
    print("|---|---|")
    for command, extra in COMMANDS.items():
        if "{mask}" in extra:
            continue  # inpaint is never tiled
        chain = [command.split("-")[0], *extra]
        out = subprocess.run([python, "-c", TILE_COST, str(side), *chain], capture_output=True, text=True)
        print(f"| {' '.join(chain)} | {float(out.stdout) if out.returncode == 0 else out.stderr.strip()[-200:]:.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imgen", action="append",
                        help="an imgen executable to measure (default: this environment's); given more than "
                             "once, each command runs with each in turn, on the same input, for a comparison "
                             "under the same load")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, from: " + ", ".join(COMMANDS))
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the input")
    parser.add_argument("--alpha", action="store_true", help="an RGBA input (the alpha plane is resized on its own)")
    parser.add_argument("--tile-cost", type=int, metavar="SIDE",
                        help="instead: memory per input pixel of one call on a SIDE x SIDE image, per command")
    args = parser.parse_args()
    imgens = args.imgen or [str(Path(sys.executable).with_name("imgen"))]
    if args.tile_cost:
        return tile_cost(str(Path(imgens[0]).with_name("python")), args.tile_cost)
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "big.png"
        channels = "4" if args.alpha else "3"
        subprocess.run([sys.executable, "-c", MAKE_INPUTS, str(tmp), str(width), str(height), channels], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        print("| command | options | imgen | peak RSS (GiB) | wall (s) | CPU (s) | load before / after | status |")
        print("|---|---|---|---|---|---|---|---|")
        for command in args.commands.split(","):
            extra = [a.format(mask=tmp / "mask.png") for a in COMMANDS[command]]
            shown = " ".join(a if not a.startswith(str(tmp)) else Path(a).name for a in extra) or "defaults"
            shown += ", RGBA input" if args.alpha else ""
            for imgen in imgens:
                # Other work on the machine slows a run down: the 1-minute load average is printed
                # with every row, so rows are compared under similar load.
                before = os.getloadavg()[0]
                code, gb, seconds, cpu, last = run(imgen, command, extra, source, tmp / "out.png")
                after = os.getloadavg()[0]
                status = "ok" if code == 0 else f"exit {code}: {last}"
                print(f"| {command} | {shown} | {imgen} | {gb:.2f} | {seconds:.1f} | {cpu:.1f} | {before:.1f} / {after:.1f} "
                      f"| {status} |", flush=True)


if __name__ == "__main__":
    main()
