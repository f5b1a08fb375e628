"""Peak memory and wall time of every built-in command on a 24 MP photo with default options.

    python benchmarks/bench_memory.py                      # all commands, 6000x4000, CPU
    python benchmarks/bench_memory.py --commands denoise,lowlight --size 3000x2000
    python benchmarks/bench_memory.py --imgen /path/to/old/imgen --imgen .venv/bin/imgen  # before/after
    python benchmarks/bench_memory.py --tile-cost 512     # bytes per input pixel of one call, per command

Each command runs once, as a fresh process (`imgen CMD big.png -o out.png --device cpu`, the
command's defaults otherwise), and its peak resident memory is read with wait4 from that one
child. The input is a deterministic 6000x4000 PNG (imgen_cli.testing.natural_image: gradients,
edges and texture). The target (issue #16): every command under 2 GB peak RSS on CPU with its
default options, and not more than 10% slower than before. Not part of the test suite: on 2 CPU
cores a full run takes tens of minutes.
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

# The inputs are made in a child process of their own. A child's peak RSS as wait4 reports it is
# at least its parent's peak when it was started (Linux counts the parent's memory, which a
# vfork()ed child shares, until exec), so this process must never hold the big image itself:
# it did once, and every command then seemed to take at least the 1.32 GB of making the image.
MAKE_INPUTS = """
import sys
import numpy as np
from imgen_cli import io as imgio
from imgen_cli.testing import natural_image
folder, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
image = natural_image(height, width, 3)
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
    fresh process."""
    name = command.split("-")[0]
    args = [imgen, name, str(source), *extra, "-o", str(out), "--overwrite", "--device", "cpu", "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    lines = err.strip().splitlines()
    return (os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024 ** 2, seconds, usage.ru_utime + usage.ru_stime,
            lines[-1] if lines else "")


def _own_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
        subprocess.run([sys.executable, "-c", MAKE_INPUTS, str(tmp), str(width), str(height)], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        print(f"bench process: {_own_peak_mib():.0f} MiB peak RSS (the floor of every row)")
        print("| command | options | imgen | peak RSS (GiB) | wall (s) | CPU (s) | load before / after | status |")
        print("|---|---|---|---|---|---|---|---|")
        for command in args.commands.split(","):
            extra = [a.format(mask=tmp / "mask.png") for a in COMMANDS[command]]
            shown = " ".join(a if not a.startswith(str(tmp)) else Path(a).name for a in extra) or "defaults"
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
