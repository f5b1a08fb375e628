"""What `Model(channels_last=True)` buys: each built-in command with its model channels-last and not.

    PYTHONPATH=plugins:. python benchmarks/bench_channels_last.py [--side 1024] [--threads 2]

Every command runs through the Python API (tiling, conversion and all) on the same held-out photo,
resized to `--side` x `--side`, once to warm up and then three times; the median wall time is
reported with the model's weights stored channels-last (what the host does for models that declare
it) and with the same model's declaration switched off, and the largest difference between the
two 8-bit outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from PIL import Image

from imgen_cli.api import Pipeline
from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_cli.plugins import get_registry

# lowlight's model does not declare channels_last: it was slower so (0.71 s against 0.45 at 2048x2048).
COMMANDS = ("denoise --sigma 25", "sr --scale 2", "sr --scale 4", "sr --scale 4 --kind real", "inpaint")


def timed(chain: str, photo: np.ndarray, mask: np.ndarray, threads: int) -> tuple[float, np.ndarray]:
    pipeline = Pipeline(chain, device="cpu", threads=threads)
    inputs = {"mask": mask} if chain.startswith("inpaint") else {}
    pipeline(photo, **inputs)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = pipeline(photo, **inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=1024, help="input side (sr inputs are a quarter of it)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    _, val_files = split(image_files(data_root() / "photos"))
    big = Image.fromarray(load_rgb(val_files[0])).resize((args.side, args.side), Image.BICUBIC)
    small = np.asarray(big.resize((args.side // 4, args.side // 4), Image.BICUBIC))
    big = np.asarray(big)
    mask = np.zeros(big.shape[:2], np.uint8)
    mask[args.side // 3 : args.side // 2, args.side // 4 : args.side * 3 // 4] = 255

    registry = get_registry()
    print("| command | input | channels-last (s) | not (s) | saved | max output difference |")
    print("|---|---|---|---|---|---|")
    for chain in COMMANDS:
        photo = small if chain.startswith("sr") else big
        declared = {name: spec for name, spec in registry.models.items() if spec.channels_last}
        fast, a = timed(chain, photo, mask, args.threads)
        for name, spec in declared.items():
            registry.models[name] = dataclasses.replace(spec, channels_last=False)
        try:
            slow, b = timed(chain, photo, mask, args.threads)
        finally:
            registry.models.update(declared)
        diff = int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())
        print(f"| `{chain}` | {photo.shape[1]}x{photo.shape[0]} | {fast:.2f} | {slow:.2f} | "
              f"{1 - fast / slow:.0%} | {diff}/255 |", flush=True)
    print(f"\ntorch {torch.__version__}, {args.threads} threads")


if __name__ == "__main__":
    main()
