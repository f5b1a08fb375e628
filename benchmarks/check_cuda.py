"""Every built-in command on a CUDA GPU, checked against the CPU: run by hand on a machine with one.

    PYTHONPATH=.:plugins IMGEN_PLUGINS=imgen_sr,imgen_denoise,imgen_lowlight,imgen_inpaint,imgen_restyle \
        python benchmarks/check_cuda.py [--big "denoise@6000x4000,sr@3000x2000"] [--json out.json]

For each chain, on examples/images/friends.jpg (512x384), through the Python API:
- CUDA in fp32, untiled, against the CPU in fp32: the largest difference in 8-bit levels;
- CUDA in fp32 with 128-pixel tiles against CUDA untiled (tiling must not show);
- CUDA with --precision auto (what a user gets): the precision chosen, PSNR against the CPU;
- seconds per call on CUDA (after a warm-up call).
Then an RGBA input through sr --outscale (the band-wise resize of colour and alpha on the GPU) and
inpaint --mask-from-alpha, and, with --big, the CLI end to end on a generated WxH PNG on CUDA: wall
seconds, peak RSS of the process and peak GPU memory (the end of the CLI's -v report too).
Prints one line per check and exits 1 if any check fails its bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "friends.jpg"

# Chains and the extra inputs they take (built per image below).
CHAINS = [
    "denoise",
    "sr --scale 2",
    "sr --scale 4",
    "sr --scale 4 --outscale 3",
    "sr --scale 2 --kind fidelity",
    "lowlight",
    "inpaint",
    "inpaint --smooth",
    "restyle --style autumn",
    "denoise + sr --fit 800x600",
]

# Bounds: CUDA fp32 is the same arithmetic in another order (cuDNN picks its own algorithms, TF32
# is off in fp32), so a level or two; reduced precision gets a PSNR floor.
MAX_LEVELS_FP32 = 2
MAX_LEVELS_TILED = 2
MIN_PSNR_AUTO = 38.0


def levels(a, b) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def mask_for(array):
    mask = np.zeros(array.shape[:2], np.uint8)
    h, w = mask.shape
    mask[h // 3:h // 3 + 60, w // 2:w // 2 + 70] = 255      # a large hole: texture
    mask[h - 60, 20:w - 20] = 255                             # a thin stroke: smooth fill
    return mask


def run(chain, array, device, precision="fp32", tile=0, timed=False, **inputs):
    """Output, what ran and, when timed, the seconds of a second call (the first warms up)."""
    import torch

    from imgen_cli.api import Pipeline

    pipeline = Pipeline(chain, device=device, precision=precision, tile=tile)
    out = pipeline(array, **inputs)
    seconds = None
    if timed:
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        sync()
        start = time.perf_counter()
        again = pipeline(array, **inputs)
        sync()
        seconds = time.perf_counter() - start
        if levels(out, again) > 1:
            raise RuntimeError("a second call gave another result")
    return out, pipeline.describe(), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", default=None, metavar="CMD@WxH,...",
                        help="CLI runs end to end on a generated PNG, e.g. 'denoise@6000x4000,sr --scale 2@3000x2000'")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (cpu: a dry run of this script)")
    args = parser.parse_args(argv)

    import torch

    from imgen_cli import io as imgio
    from imgen_cli.metrics import psnr

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if device.startswith('cuda') else device}",
          flush=True)
    photo = imgio.decode(PHOTO.read_bytes(), str(PHOTO)).array
    results, failed = [], []

    def record(name, **values):
        results.append({"check": name, **values})
        print(name, json.dumps(values), flush=True)

    for chain in CHAINS:
        inputs = {"mask": mask_for(photo)} if chain.startswith("inpaint") else {}
        try:
            cpu, _, _ = run(chain, photo, "cpu", **inputs)
            gpu, _, _ = run(chain, photo, device, **inputs)
            tiled, _, _ = run(chain, photo, device, tile=128, **inputs)
            auto, described, seconds = run(chain, photo, device, precision="auto", timed=True, **inputs)
        except Exception as exc:  # report and go on: one broken chain must not hide the others
            failed.append(chain)
            record(chain, error=f"{type(exc).__name__}: {exc}")
            continue
        values = {"shape": list(gpu.shape), "fp32_levels_vs_cpu": levels(gpu, cpu),
                  "tiled_levels_vs_untiled": levels(tiled, gpu), "auto_precision": described["precision"],
                  "auto_psnr_vs_cpu": round(psnr(auto, cpu), 2), "auto_seconds": round(seconds, 4)}
        if (gpu.shape != cpu.shape or values["fp32_levels_vs_cpu"] > MAX_LEVELS_FP32
                or values["tiled_levels_vs_untiled"] > MAX_LEVELS_TILED or values["auto_psnr_vs_cpu"] < MIN_PSNR_AUTO):
            failed.append(chain)
            values["failed"] = True
        record(chain, **values)

    # RGBA on the GPU: colour and alpha resized band by band (filters.BandResize), alpha as a mask.
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    rgba[100:160, 200:300, 3] = 0
    for chain in ("sr --scale 2 --outscale 1.5", "inpaint --mask-from-alpha"):
        try:
            cpu, _, _ = run(chain, rgba, "cpu")
            gpu, _, _ = run(chain, rgba, device)
        except Exception as exc:
            failed.append(chain + " (RGBA)")
            record(chain + " (RGBA)", error=f"{type(exc).__name__}: {exc}")
            continue
        values = {"shape": list(gpu.shape), "fp32_levels_vs_cpu": levels(gpu, cpu)}
        if gpu.shape != cpu.shape or values["fp32_levels_vs_cpu"] > MAX_LEVELS_FP32:
            failed.append(chain + " (RGBA)")
            values["failed"] = True
        record(chain + " (RGBA)", **values)

    for item in filter(None, (args.big or "").split(",")):
        failed += big_run(item.strip(), device, record)

    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "failed": failed}, indent=1))
    print(f"{len(results)} checks, {len(failed)} failed: {failed}", flush=True)
    return 1 if failed else 0


def big_run(item: str, device: str, record) -> list[str]:
    """`imgen CMD big.png -o out.png --device DEVICE -v` as a child: wall, peak RSS, peak GPU memory."""
    from imgen_cli import io as imgio
    from imgen_cli.testing import measured, measurement, natural_image

    command, _, size = item.rpartition("@")
    width, height = (int(v) for v in size.lower().split("x"))
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    big = folder / f"big-{width}x{height}.png"
    if not big.exists():
        with open(big, "wb") as f:
            imgio.write_png(f.write, natural_image(height, width, seed=1))
    out = folder / "out-big.png"
    out.unlink(missing_ok=True)
    probe = ("import atexit,runpy,sys,torch;sys.argv=['imgen',*sys.argv[1:]];"
             "atexit.register(lambda: torch.cuda.is_available() and print('gpu peak GiB',"
             "round(torch.cuda.max_memory_allocated()/2**30,2),file=sys.stderr));"
             "runpy.run_module('imgen_cli',run_name='__main__')")
    report = folder / "big-peak.json"
    start = time.perf_counter()
    proc = subprocess.run(measured([sys.executable, "-c", probe, *shlex.split(command), str(big), "-o", str(out),
                                    "--device", device, "-v"], report),
                          stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seconds = time.perf_counter() - start
    code, log, usage = proc.returncode, proc.stderr, measurement(report)
    gpu_peak = [line for line in log.splitlines() if line.startswith("gpu peak")]
    values = {"exit": code, "wall_s": round(seconds, 1), "cpu_s": round(usage["cpu_s"], 1),
              "peak_rss_gib": round(usage["peak_rss"] / 2**30, 2), "gpu_peak": gpu_peak[-1] if gpu_peak else None,
              "output_bytes": out.stat().st_size if out.exists() else None,
              "log_tail": log.strip().splitlines()[-6:]}
    if code != 0:
        values["failed"] = True
    record(f"cli {command} {width}x{height} {device}", **values)
    out.unlink(missing_ok=True)
    return [item] if code != 0 else []


if __name__ == "__main__":
    sys.exit(main())
