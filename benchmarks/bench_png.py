"""imgen's PNG writer against Pillow's encoder: file size, encode time and peak memory.

    python benchmarks/bench_png.py                 # a 4000x3000 RGB image from a photo
    python benchmarks/bench_png.py --size 2000x1500 --photo /path/to/photo.png

The image is a crop of a held-out photo (imgen_cli.datasets.VALIDATION), upscaled x4
with Pillow's bicubic filter to the size asked: what an `sr` output looks like to a PNG encoder.
Also written: its RGBA (a gradient alpha), grey and 16-bit versions. Each encoder runs once per
row in this process; the time is the best of `--repeat` runs (the machine is shared), wall and
CPU seconds (imgen's writer deflates in a second thread while it filters the next rows).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import numpy as np
    from PIL import Image

    from imgen_cli import io as imgio
    from imgen_cli.datasets import data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the image encoded")
    parser.add_argument("--photo", help="source photo (default: the held-out bridge.png of the photos set; "
                                        "$IMGEN_DATA names the dataset folder)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per encoder; the best time is shown")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    photo = Path(args.photo) if args.photo else data_root() / "photos" / "bridge.png"
    with Image.open(photo) as im:
        crop = im.convert("RGB").crop((0, 0, -(-width // 4), -(-height // 4)))
        rgb = np.asarray(crop.resize((width, height), Image.Resampling.BICUBIC))
    alpha = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)[:, :, None].astype(np.uint8)
    cases = {
        "RGB 8-bit": rgb,
        "RGBA 8-bit": np.concatenate([rgb, alpha], 2),
        "grey 8-bit": rgb[:, :, 1:2].copy(),
        "RGB 16-bit": rgb.astype(np.uint16) * 257,
    }
    print(f"{photo.name}, {width}x{height}")
    print("| image | Pillow bytes | imgen bytes | size ratio | Pillow wall / CPU s | imgen wall / CPU s | wall ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, array in cases.items():
        pillow_size = pillow_time = None
        if array.dtype == np.uint8:  # Pillow keeps 8 bits of 16-bit colour: no comparison
            image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
            pillow_time = best(lambda: image.save(io.BytesIO(), "PNG", compress_level=6), args.repeat)
            buffer = io.BytesIO()
            image.save(buffer, "PNG", compress_level=6)
            pillow_size = len(buffer.getvalue())
        sizes = []
        ours = best(lambda: sizes.append(count(lambda write: imgio.write_png(write, array))), args.repeat)
        ratio = lambda a, b: f"{a / b:.3f}" if b else "-"
        shown = lambda t: f"{t[0]:.2f} / {t[1]:.2f}" if t else "-"
        print(f"| {name} | {pillow_size or '-'} | {sizes[0]} | {ratio(sizes[0], pillow_size)} | {shown(pillow_time)} | "
              f"{shown(ours)} | {ratio(ours[0], pillow_time and pillow_time[0])} |", flush=True)


def best(call, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        call()
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(times)


def count(writer) -> int:
    total = 0

    def write(piece):
        nonlocal total
        total += len(piece)

    writer(write)
    return total


if __name__ == "__main__":
    main()
