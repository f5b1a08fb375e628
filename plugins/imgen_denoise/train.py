"""Training recipe for the denoise model: synthetic Gaussian noise on the project's photos.

    PYTHONPATH=plugins:. python -m imgen_denoise.train --run runs/denoise
    PYTHONPATH=plugins:. python -m imgen_denoise.train --run runs/denoise --resume

Random patches of the training photos get additive Gaussian noise with sigma uniform in 0..75 (on
the 0-255 scale), clipped to 0..1 and rounded to 8 bits as a noisy PNG would be; the network sees
sigma / 255 as its noise map. Validation PSNR per sigma (15, 25, 50) on fixed crops of the
held-out photos is logged and the best so far kept in RUN/best.safetensors; `--export` gets the
weights of the last step (the common arguments are imgen_cli.recipes').
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from imgen_cli import recipes
from imgen_cli.datasets import image_files, load_rgb, split
from imgen_cli.metrics import psnr
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
        scores[s].append(psnr(recipes.as_image(clean), recipes.as_image(model(noisy, s / 255))))
    model.train()
    return {s: float(np.mean(v)) for s, v in scores.items()}


def main(argv: list[str] | None = None) -> None:
    ap = recipes.arguments(__doc__, run="runs/denoise", steps=2000, batch=16, lr=1e-3, val_every=250, save_minutes=4.0)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--val-crop", type=int, default=256)
    args = ap.parse_args(argv)

    run = recipes.start(args)
    log = recipes.Log(run)
    train_files, val_files = split(image_files(recipes.dataset(args)))
    log(f"train on {len(train_files)} photos, validate on {[p.stem for p in val_files]}")
    train_images = [load_rgb(p) for p in train_files]
    val = validation_set([load_rgb(p) for p in val_files], args.val_crop, args.seed)

    model = FFDNet(features=args.features, blocks=args.blocks)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    objects, rngs = {"model": model, "optimizer": opt}, {"patches": rng}
    state = recipes.restore(args, objects, rngs, log)
    step, best = state["step"], state.get("best", -1.0)
    patches = Patches(train_images, args.patch, rng)
    # A short warm-up keeps Adam's first, poorly estimated steps small.
    warm = max(1, args.steps // 50)

    def lr_at(i: int) -> float:
        return recipes.cosine(i, args.steps, args.lr, warmup=warm, floor=1e-6)

    def save() -> None:
        recipes.save_checkpoint(run / recipes.CHECKPOINT, step, objects, rngs, best=best)

    model.train()
    t0 = last_save = time.time()
    run_loss = 0.0
    end = recipes.stop_step(args)
    while step < end:
        recipes.set_lr(opt, lr_at(step))
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
            log(f"step {step} loss {run_loss / 50 * 255:.3f}/255 lr {lr_at(step):.2e} {time.time() - t0:.0f}s")
            run_loss = 0.0
        if step % args.val_every == 0 or step == args.steps:
            scores = validate(model, val)
            mean = float(np.mean(list(scores.values())))
            line = " ".join(f"s{s}={v:.2f}" for s, v in scores.items())
            log(f"val step {step} {line} mean={mean:.3f}")
            if mean > best:
                best = mean
                recipes.export(model.state_dict(), run / "best.safetensors")
            save()
            last_save = time.time()
        elif time.time() - last_save > args.save_minutes * 60:
            save()
            last_save = time.time()
    save()
    log(f"exported step {step} to {recipes.export(model.state_dict(), recipes.export_path(args))}")


if __name__ == "__main__":
    main()
