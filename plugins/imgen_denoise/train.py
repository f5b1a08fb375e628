"""Training recipe for the denoise model: synthetic Gaussian noise on the project's photos.

    PYTHONPATH=plugins:. python -m imgen_denoise.train --out runs/denoise
    PYTHONPATH=plugins:. python -m imgen_denoise.train --out runs/denoise --resume runs/denoise/last.pt

Random patches of the training photos get additive Gaussian noise with sigma uniform in 0..75 (on
the 0-255 scale), clipped to 0..1 and rounded to 8 bits as a noisy PNG would be; the network sees
sigma / 255 as its noise map. Validation PSNR per sigma (15, 25, 50) on fixed crops of the
held-out photos is logged, and `--export` writes the weights the plugin ships.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_denoise._net import FFDNet

VAL_SIGMAS = (15, 25, 50)
MAX_SIGMA = 75.0


def add_noise(clean: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of std `sigma` (0..1 scale, shape (N,)), clipped and rounded to 8 bits."""
    noise = torch.randn(clean.shape, generator=generator) * sigma.reshape(-1, 1, 1, 1)
    return torch.round((clean + noise).clamp(0, 1) * 255) / 255


def make_grey(clean: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor, count: int) -> None:
    """Turn the first `count` pairs into grey images with one noise field shared by R, G and B.

    The host runs grey images through the RGB model with the channel copied three times, so the
    network must also learn noise that is identical in every channel.
    """
    grey = clean[:count].mean(1, keepdim=True)
    clean[:count] = grey
    noisy[:count] = add_noise(grey, sigma[:count])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.clamp(0, 1), b).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


class Patches:
    """Random augmented patches of photos held in RAM as uint8."""

    def __init__(self, images: list[np.ndarray], size: int, rng: np.random.Generator):
        self.images, self.size, self.rng = images, size, rng
        # Larger photos hold more patches, so draw photos in proportion to their area.
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.p = areas / areas.sum()

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        for i in range(n):
            im = self.images[self.rng.choice(len(self.images), p=self.p)]
            y = self.rng.integers(0, im.shape[0] - self.size + 1)
            x = self.rng.integers(0, im.shape[1] - self.size + 1)
            patch = im[y : y + self.size, x : x + self.size]
            patch = np.rot90(patch, self.rng.integers(4))
            if self.rng.integers(2):
                patch = patch[:, ::-1]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def validation_set(images: list[np.ndarray], crop: int, seed: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(sigma, clean, noisy) for a centre crop of every held-out photo at every VAL_SIGMAS, fixed noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for im in images:
        h, w = im.shape[:2]
        y, x = (h - crop) // 2, (w - crop) // 2
        clean = torch.from_numpy(np.ascontiguousarray(im[y : y + crop, x : x + crop])).permute(2, 0, 1)[None].float() / 255
        for s in VAL_SIGMAS:
            out.append((s, clean, add_noise(clean, torch.tensor([s / 255]), g)))
    return out


@torch.no_grad()
def validate(model: FFDNet, val) -> dict[int, float]:
    model.eval()
    scores: dict[int, list[float]] = {s: [] for s in VAL_SIGMAS}
    for s, clean, noisy in val:
        scores[s].append(psnr(model(noisy, s / 255), clean))
    model.train()
    return {s: float(np.mean(v)) for s, v in scores.items()}


def export(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(path))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder of photos (default: data_root()/photos)")
    ap.add_argument("--out", default="runs/denoise", help="checkpoints and logs go here")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--val-crop", type=int, default=256)
    ap.add_argument("--save-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", default=None, help="checkpoint to continue from (its step, optimizer and RNG states)")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="save last.pt and stop after this step, the schedule still spanning --steps")
    ap.add_argument("--export", default=None, help="write the final weights here as .safetensors")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    folder = Path(args.data) if args.data else data_root() / "photos"
    if (folder / "photos").is_dir():
        folder = folder / "photos"
    train_files, val_files = split(image_files(folder))
    print(f"train on {len(train_files)} photos, validate on {[p.stem for p in val_files]}", flush=True)
    train_images = [load_rgb(p) for p in train_files]
    val = validation_set([load_rgb(p) for p in val_files], args.val_crop, args.seed)

    model = FFDNet(features=args.features, blocks=args.blocks)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    step, best = 0, -1.0
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, best = int(ck["step"]), float(ck["best"])
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = _rng_state_from_tensor(ck["np_rng"])
        print(f"resumed {args.resume} at step {step}", flush=True)
    patches = Patches(train_images, args.patch, rng)
    # A short warm-up keeps Adam's first, poorly estimated steps small.
    warm = max(1, args.steps // 50)

    def lr_at(i: int) -> float:
        if i < warm:
            return args.lr * (i + 1) / warm
        return 1e-6 + 0.5 * (args.lr - 1e-6) * (1 + math.cos(math.pi * (i - warm) / max(1, args.steps - warm)))

    def save(path: Path) -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                    "torch_rng": torch.get_rng_state(), "np_rng": _rng_state_to_tensor(rng)}, path)

    model.train()
    t0 = last_save = time.time()
    run_loss = 0.0
    end = min(args.steps, args.stop_at or args.steps)
    while step < end:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        clean = patches.batch(args.batch)
        sigma = torch.rand(args.batch) * (MAX_SIGMA / 255)
        noisy = add_noise(clean, sigma)
        make_grey(clean, noisy, sigma, args.batch // 8)
        loss = F.l1_loss(model(noisy, sigma), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss += loss.item()
        if step % 50 == 0:
            print(f"step {step} loss {run_loss / 50 * 255:.3f}/255 lr {lr_at(step):.2e} {time.time() - t0:.0f}s", flush=True)
            run_loss = 0.0
        if step % args.val_every == 0 or step == args.steps:
            scores = validate(model, val)
            mean = float(np.mean(list(scores.values())))
            line = " ".join(f"s{s}={v:.2f}" for s, v in scores.items())
            print(f"val step {step} {line} mean={mean:.3f}", flush=True)
            if mean > best:
                best = mean
                export(model.state_dict(), out / "best.safetensors")
            save(out / "last.pt")
            last_save = time.time()
        elif time.time() - last_save > args.save_minutes * 60:
            save(out / "last.pt")
            last_save = time.time()
    save(out / "last.pt")
    if args.export:
        export(model.state_dict(), Path(args.export))
        print(f"exported {args.export}", flush=True)


def _rng_state_to_tensor(rng: np.random.Generator) -> torch.Tensor:
    # weights_only checkpoints hold tensors, not dicts of Python ints, so pack the PCG64 state.
    s = rng.bit_generator.state
    words = [s["state"]["state"], s["state"]["inc"], s["has_uint32"], s["uinteger"]]
    return torch.tensor([[(w >> (32 * k)) & 0xFFFFFFFF for k in range(4)] for w in words], dtype=torch.int64)


def _rng_state_from_tensor(t: torch.Tensor) -> dict:
    words = [sum(int(v) << (32 * k) for k, v in enumerate(row)) for row in t.tolist()]
    return {"bit_generator": "PCG64", "state": {"state": words[0], "inc": words[1]},
            "has_uint32": words[2], "uinteger": words[3]}


if __name__ == "__main__":
    main()
