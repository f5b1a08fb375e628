"""`imgen ray` against the plain folder batch, on the same files and chain, in one run.

    python benchmarks/bench_ray.py                          # 40 photos, denoise + sr --scale 2
    python benchmarks/bench_ray.py --count 40 --chain "denoise" --long-side 320

The photos are made from ../shared/datasets/photos (each at two reduced sizes, as JPEG) in a
temporary folder. Timed, each end to end as a user runs it (process start, model loading):

1. `imgen CHAIN in/ -o plain/` (the local batch; torch uses every core),
2. `imgen ray` starting its own local Ray instance, 1 actor x all CPUs,
3. `imgen ray --address` joining an instance that is already up (as on a cluster), 1 actor x all
   CPUs, then N actors x 1 CPU,
4. the kill test: the N-actor job is killed (SIGKILL) when half of its outputs exist, then rerun;
   every output must exist exactly once, decode, and equal the plain batch's bytes.

Prints a table, the machine's load average before and after, and the kill test's counts.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "datasets" / "photos"


def make_photos(folder: Path, count: int, long_side: int, photos: Path) -> None:
    from PIL import Image

    sources = sorted(photos.glob("*.png"))
    if not sources:
        raise SystemExit(f"no photos in {photos} (use --photos DIR)")
    folder.mkdir(parents=True)
    made = 0
    for factor in (1.0, 0.75, 0.5):
        for path in sources:
            if made == count:
                return
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = long_side * factor / max(im.size)
                small = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            small.save(folder / f"{path.stem}-{made:02d}.jpg", quality=90)
            made += 1


def imgen() -> list[str]:
    script = Path(sys.executable).with_name("imgen")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imgen_cli"]


def timed(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(imgen() + args, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"imgen {shlex.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, done


def outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def kill_test(chain: list[str], src: Path, out: Path, plain: Path, address: str, actors: int, count: int) -> dict:
    from imgen_cli import io as imageio_

    args = imgen() + ["ray", *chain, str(src), "-o", str(out), "--address", address, "--actors", str(actors),
                      "--batch-size", "1", "-q"]
    job = subprocess.Popen(args, stderr=subprocess.PIPE)
    while len(list(out.glob("*.jpg"))) < count // 2 and job.poll() is None:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    at_kill = len(list(out.glob("*.jpg")))
    time.sleep(2)  # actors of the dead driver may finish a file before Ray stops them
    before_rerun = len(list(out.glob("*.jpg")))
    rerun = subprocess.run(args[:-1], capture_output=True, text=True)
    names = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    temps = [p.name for p in out.iterdir() if p.name.startswith(".")]
    expected = sorted(p.name for p in src.iterdir())
    decoded = sum(1 for name in names if imageio_.decode((out / name).read_bytes()).array.size)
    same = sum(1 for name in names if (out / name).read_bytes() == (plain / name).read_bytes())
    return {"outputs at kill": at_kill, "outputs before rerun": before_rerun,
            "rerun exit": rerun.returncode, "rerun summary": rerun.stderr.strip().splitlines()[-1],
            "outputs after rerun": len(names), "exactly the inputs' names": sorted(names) == expected,
            "decode": decoded, "equal to plain batch": same, "leftover temporary files": len(temps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--photos", type=Path, default=PHOTOS, help=f"source photos (default {PHOTOS})")
    parser.add_argument("--long-side", type=int, default=384, help="long side of the largest photos")
    parser.add_argument("--chain", default="denoise + sr --scale 2")
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 2, help="actors of the scaling run")
    parser.add_argument("--address", help="a running Ray instance to use (RAY_AUTH_MODE=token for a `ray start` one) "
                                          "instead of starting one; skips the run that starts its own")
    args = parser.parse_args()
    chain = shlex.split(args.chain)
    cpus = os.cpu_count() or 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        make_photos(src, args.count, args.long_side, args.photos)
        n = len(list(src.iterdir()))
        rows = []

        seconds, _ = timed([*chain, str(src), "-o", str(tmp / "plain"), "-q"])
        plain = seconds
        rows.append(("imgen folder batch", seconds))
        if not args.address:
            seconds, _ = timed(["ray", *chain, str(src), "-o", str(tmp / "ray-new"), "--actors", "1",
                                "--cpus-per-actor", str(cpus), "-q"])
            rows.append((f"imgen ray, own new local instance, 1 actor x {cpus} CPUs", seconds))

        import ray

        started = time.perf_counter()
        if args.address:
            ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False)
        startup = time.perf_counter() - started
        address = ray.get_runtime_context().gcs_address
        try:
            seconds, _ = timed(["ray", *chain, str(src), "-o", str(tmp / "ray-1"), "--address", address,
                                "--actors", "1", "--cpus-per-actor", str(cpus), "-q"])
            rows.append((f"imgen ray --address (instance up), 1 actor x {cpus} CPUs", seconds))
            seconds, _ = timed(["ray", *chain, str(src), "-o", str(tmp / "ray-n"), "--address", address,
                                "--actors", str(args.actors), "--cpus-per-actor", f"{cpus / args.actors:g}", "-q"])
            rows.append((f"imgen ray --address (instance up), {args.actors} actors x {cpus / args.actors:g} CPUs",
                         seconds))
            identical = {name: sum(1 for p in outputs(tmp / name)
                                   if p.read_bytes() == (tmp / "plain" / p.relative_to(tmp / name)).read_bytes())
                         for name in ("ray-new", "ray-1", "ray-n") if (tmp / name).exists()}
            kill = kill_test(chain, src, tmp / "ray-kill", tmp / "plain", address, args.actors, n)
        finally:
            ray.shutdown()
    load_after = os.getloadavg()

    print(f"{n} photos, chain {args.chain!r}, {cpus} CPUs; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")
    print(f"ray.init in the benchmark process: {startup:.1f} s")
    print()
    print(f"| run | seconds | images/s | throughput vs plain |")
    print(f"|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {n / seconds:.2f} | {plain / seconds:.2f}x |")
    print()
    print("outputs byte-identical to the plain batch: " + ", ".join(f"{k} {v}/{n}" for k, v in identical.items()))
    print("kill test: " + "; ".join(f"{k}: {v}" for k, v in kill.items()))


if __name__ == "__main__":
    main()
