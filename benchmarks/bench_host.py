"""Host benchmark: start-up time, peak memory of a tiled 6000x4000 run, tiled vs untiled difference.

    python benchmarks/bench_host.py            # prints a table; takes about two minutes on 2 cores

Uses the test-suite plugins (tests/plugins/imgen_test_tiny.py): `smooth` (same size, receptive
field 2) and `tinyup` (a small x2 network). Not part of the test suite.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgen_cli import io as imgio  # noqa: E402
from imgen_cli.testing import natural_image  # noqa: E402

IMGEN = str(Path(sys.executable).with_name("imgen"))
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "plugins"), IMGEN_PLUGINS="imgen_test_tiny")


def help_time(runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([IMGEN, "--help"], env=ENV, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(args: list[str]) -> tuple[float, float]:
    """(peak RSS in GB, wall seconds) of one imgen run, measured in a fresh child process."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", probe, IMGEN, *args], env=ENV, capture_output=True, check=True)
    kb, seconds = out.stdout.split()
    return int(kb) / 1024 ** 2, float(seconds)


def max_difference(workdir: Path, command: str, source: Path, tile: int) -> int:
    whole, tiled = workdir / f"{command}-whole.png", workdir / f"{command}-tiled.png"
    subprocess.run([IMGEN, command, "-q", "--overwrite", source, "--tile", "0", "-o", whole], env=ENV, check=True)
    subprocess.run([IMGEN, command, "-q", "--overwrite", source, "--tile", str(tile), "-o", tiled], env=ENV, check=True)
    a = imgio.decode(whole.read_bytes()).array.astype(int)
    b = imgio.decode(tiled.read_bytes()).array.astype(int)
    return int(np.abs(a - b).max())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big = workdir / "big.png"
        big.write_bytes(imgio.encode(imgio.Picture(natural_image(4000, 6000, 3), "png"), "png")[0])
        medium = workdir / "medium.png"
        medium.write_bytes(imgio.encode(imgio.Picture(natural_image(1000, 1500, 3, seed=1), "png"), "png")[0])

        print(f"imgen --help, median of 10 runs: {help_time():.3f} s")
        for command, tile in (("smooth", 1024), ("tinyup", 512)):
            gb, seconds = peak_memory([command, "-q", str(big), "--tile", str(tile), "-o", str(workdir / f"{command}.png")])
            print(f"{command} 6000x4000 --tile {tile}: peak RSS {gb:.2f} GB, {seconds:.1f} s wall")
        for command in ("smooth", "tinyup"):
            for tile in (96, 256):
                diff = max_difference(workdir, command, medium, tile)
                print(f"{command} 1500x1000 tiled ({tile}) vs untiled: max difference {diff}/255")


if __name__ == "__main__":
    main()
