"""Peak memory and wall time of every built-in command on a 24 MP photo with default options.

    python benchmarks/bench_memory.py                      # all commands, 6000x4000, CPU
    python benchmarks/bench_memory.py --commands denoise,lowlight --size 3000x2000
    python benchmarks/bench_memory.py --imgen /path/to/other/venv/bin/imgen   # e.g. main's

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
sys.path.insert(0, str(ROOT))

from imgen_cli import io as imgio  # noqa: E402
from imgen_cli.testing import natural_image  # noqa: E402

# Default options only, plus what a command cannot run without.
COMMANDS = {
    "denoise": [],
    "lowlight": [],
    "sr": [],
    "sr-x2": ["--scale", "2"],
    "inpaint": ["--mask", "{mask}"],
    "restyle": ["--style", "autumn"],
}


def run(imgen: str, command: str, extra: list[str], source: Path, out: Path) -> tuple[int, float, float, str]:
    """(exit status, peak RSS in GB, wall seconds, last stderr line) of one run in a fresh process."""
    name = command.split("-")[0]
    args = [imgen, name, str(source), *extra, "-o", str(out), "--overwrite", "--device", "cpu", "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    lines = err.strip().splitlines()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024 ** 2, seconds, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imgen", default=str(Path(sys.executable).with_name("imgen")),
                        help="the imgen executable to measure (default: this environment's)")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, from: " + ", ".join(COMMANDS))
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the input")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "big.png"
        source.write_bytes(imgio.encode(imgio.Picture(natural_image(height, width, 3), "png"), "png")[0])
        import numpy as np

        mask = np.zeros((height, width, 1), np.uint8)
        mask[height // 3: height // 3 + 40, width // 4: width // 4 + 300] = 255  # a cable across the sky
        (tmp / "mask.png").write_bytes(imgio.encode(imgio.Picture(mask, "png"), "png")[0])
        print(f"| command | options | peak RSS (GB) | wall (s) | status |")
        print("|---|---|---|---|---|")
        for command in args.commands.split(","):
            extra = [a.format(mask=tmp / "mask.png") for a in COMMANDS[command]]
            code, gb, seconds, last = run(args.imgen, command, extra, source, tmp / "out.png")
            status = "ok" if code == 0 else f"exit {code}: {last}"
            print(f"| {command} | {' '.join(a if not a.startswith(str(tmp)) else Path(a).name for a in extra) or 'defaults'} "
                  f"| {gb:.2f} | {seconds:.1f} | {status} |", flush=True)


if __name__ == "__main__":
    main()
