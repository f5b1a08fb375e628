"""--jobs benchmark: one batch of small photos with --jobs 1, 2, ... in the same run.

    python benchmarks/bench_jobs.py                          # denoise, 40 crops of 400x300, jobs 1 and 2
    python benchmarks/bench_jobs.py --jobs 1 2 4 --chain "denoise + sr --scale 2" --device cpu

The photos are 40 crops (400x300, JPEG) cut from ../shared/datasets/photos into a temporary
folder; every setting runs the same command line on them (`imgen CHAIN DIR -o OUT --jobs N`) in a
fresh process, twice, alternating, and the faster of the two counts, so a setting that ran while
the machine was busy elsewhere is not the one measured. Wall time includes start-up and model
loading (once per run, as a user pays it). Prints images per second and the speed-up against
--jobs 1, and checks that every setting wrote the same bytes. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgen_cli.datasets import data_root  # noqa: E402

IMGEN = str(Path(sys.executable).with_name("imgen"))


def make_crops(photos: Path, out: Path, count: int, size: tuple[int, int]) -> None:
    """`count` crops of `size` (width, height), spread over the photos, as JPEG."""
    from PIL import Image

    sources = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    out.mkdir(parents=True)
    for k in range(count):
        with Image.open(sources[k % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = size
            # A different place in each photo for each pass over the set.
            turn = k // len(sources)
            x = (turn * 997) % max(1, im.width - w)
            y = (turn * 613) % max(1, im.height - h)
            im.crop((x, y, x + w, y + h)).save(out / f"crop{k:02d}.jpg", quality=92)


def run(chain: list[str], folder: Path, out: Path, jobs: int, device: str) -> float:
    if out.exists():
        for p in out.iterdir():
            p.unlink()
    start = time.perf_counter()
    subprocess.run([IMGEN, *chain, str(folder), "-o", str(out), "--jobs", str(jobs), "--device", device, "-q"],
                   check=True)
    return time.perf_counter() - start


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", default="denoise", help="the command or chain to run [denoise]")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="settings to compare [1 2]")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--size", default="400x300")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=data_root() / "photos", help="photos to crop [$IMGEN_DATA/photos]")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.split("x"))
    chain = args.chain.split()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        make_crops(args.data, folder, args.count, size)
        best: dict[int, float] = {}
        digests: dict[int, str] = {}
        for _ in range(args.rounds):
            for jobs in args.jobs:
                out = Path(tmp) / f"out{jobs}"
                seconds = run(chain, folder, out, jobs, args.device)
                best[jobs] = min(best.get(jobs, seconds), seconds)
                digests[jobs] = digest(out)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"imgen {args.chain} on {args.count} JPEG crops of {args.size}, {args.device}, {cores} cores, "
          f"best of {args.rounds}")
    print(f"{'jobs':>4}  {'seconds':>8}  {'img/s':>6}  {'speed-up':>8}  output")
    base = best[args.jobs[0]]
    for jobs in args.jobs:
        same = "same bytes" if digests[jobs] == digests[args.jobs[0]] else "DIFFERENT bytes"
        print(f"{jobs:>4}  {best[jobs]:>8.2f}  {args.count / best[jobs]:>6.2f}  {base / best[jobs]:>7.2f}x  {same}")


if __name__ == "__main__":
    main()
