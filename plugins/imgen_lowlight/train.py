"""Training recipe for the lowlight curve network (zero-reference, no paired ground truth).

    PYTHONPATH=plugins:. python -m imgen_lowlight.train --run runs/lowlight
    PYTHONPATH=plugins:. python -m imgen_lowlight.train --run runs/lowlight --resume
    PYTHONPATH=plugins:. python -m imgen_lowlight.train --run runs/lowlight --export-only --resume CKPT

The shipped weights (a 1600-step schedule cut short to fit the session, see docs/lowlight.md):

    PYTHONPATH=plugins:. python -m imgen_lowlight.train --run runs/lowlight --steps 1600 --stop-at 899 \
        && PYTHONPATH=plugins:. python -m imgen_lowlight.train --run runs/lowlight --steps 1150 --resume \
        --export plugins/imgen_lowlight/weights/lowlight.safetensors

Common arguments (--run, --resume, --export, ...) are imgen_cli.recipes'; --export gets the
weights of the last step.

Inputs are crops of the training photos re-exposed as k*x^g (k 0.1..0.7, g 1..3, one in five left
as shot) with mild Poisson-Gaussian noise. The clean photo is never used by a loss: every target
below is computed from the network's own (degraded) input, as in Zero-DCE.

The four Zero-DCE losses are kept, but their reference is not a constant grey level. Zero-DCE
pulls every 16x16 patch to E=0.6, which flattens contrast and changes well-exposed photos. Here
each loss compares the output with a tone rule R(x) = t * (x / m)^b derived from the input alone:

- m is the input's mean level and d in 0..1 says how under-exposed it looks, from the 99th
  percentile of its luminance: d=1 below 0.35, d=0 above 0.5. Every training photo as shot has
  its 99th percentile above 0.53 (the darkest are low-key scenes, not mistakes), while a photo
  under-exposed by k <= 0.35 cannot exceed 0.35;
- t = m + d * (E - m) moves the mean towards the requested exposure E only as far as the input
  is dark, and b = 1 - d * (1 - 1/2.2) expands shadows like a display gamma for dark inputs.

For a well-exposed input d=0, so R is the identity and every loss is zero at the unchanged
image: such photos come out nearly as they went in. The losses: exposure control (16x16 patch
means per channel vs R of the input's patch means), spatial consistency (differences between
neighbouring 4x4 regions vs those of R(input)), colour constancy (differences of the channel
means vs those of R(input), which keeps a sunset's colour where grey-world would not) and
illumination smoothness (total variation of the curve maps).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imgen_cli import recipes
from imgen_cli.datasets import image_files, load_rgb, split
from imgen_cli.metrics import psnr
from imgen_lowlight._net import CurveNet, apply_curves

DISPLAY_GAMMA = 2.2


def tone_rule(x: torch.Tensor, exposure: torch.Tensor):
    """Per-image (t, b, m) of the reference rule R(z) = t * (z / m)^b, shapes (N, 1, 1, 1)."""
    lum = x.mean(dim=1).flatten(1)
    m = lum.mean(dim=1).clamp(min=1e-3)
    p99 = torch.quantile(lum, 0.99, dim=1)
    d = ((0.5 - p99) / 0.15).clamp(0, 1)
    t = m + d * (exposure - m)
    b = 1 - d * (1 - 1 / DISPLAY_GAMMA)
    return t.view(-1, 1, 1, 1), b.view(-1, 1, 1, 1), m.view(-1, 1, 1, 1)


def reference(z: torch.Tensor, rule) -> torch.Tensor:
    t, b, m = rule
    return (t * (z.clamp(min=0) / m) ** b).clamp(0, 1)


def neighbour_diffs(p: torch.Tensor):
    return p[..., :, 1:] - p[..., :, :-1], p[..., 1:, :] - p[..., :-1, :]


def losses(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, exposure: torch.Tensor) -> dict:
    with torch.no_grad():
        rule = tone_rule(x, exposure)
        exp_target = reference(F.avg_pool2d(x, 16), rule)
        spa_target = neighbour_diffs(reference(F.avg_pool2d(x.mean(1, keepdim=True), 4), rule))
        col_target = reference(x, rule).mean(dim=(2, 3))
    exp = ((F.avg_pool2d(y, 16) - exp_target) ** 2).mean()
    spa_out = neighbour_diffs(F.avg_pool2d(y.mean(1, keepdim=True), 4))
    spa = sum(((o.abs() - t.abs()) ** 2).mean() for o, t in zip(spa_out, spa_target))
    ch = y.mean(dim=(2, 3))
    col = sum(
        ((ch[:, i] - ch[:, j]) - (col_target[:, i] - col_target[:, j])).pow(2).mean()
        for i, j in ((0, 1), (1, 2), (2, 0))
    )
    tv = sum(dd.pow(2).mean() for dd in neighbour_diffs(a))
    return {"exp": 10 * exp, "spa": spa, "col": 5 * col, "tv": 200 * tv}


class Photos:
    """Training photos in RAM as uint8 at a few scales (long side 512..768); crops come out re-exposed and noisy."""

    def __init__(self, files, crop: int, gen: torch.Generator):
        self.crop = crop
        self.gen = gen
        self.images = []
        for f in files:
            im = Image.fromarray(load_rgb(f))
            for long_side in (512, 640, 768):
                s = long_side / max(im.size)
                small = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
                self.images.append(torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1))

    def _rand(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.gen).item()

    def sample(self, batch: int) -> torch.Tensor:
        out = []
        for _ in range(batch):
            im = self.images[torch.randint(len(self.images), (), generator=self.gen).item()]
            _, h, w = im.shape
            top = torch.randint(h - self.crop + 1, (), generator=self.gen).item()
            left = torch.randint(w - self.crop + 1, (), generator=self.gen).item()
            x = im[:, top : top + self.crop, left : left + self.crop].float() / 255
            if torch.rand((), generator=self.gen) < 0.5:
                x = x.flip(-1)
            if torch.rand((), generator=self.gen) >= 0.2:
                x = self._rand(0.1, 0.7) * x ** self._rand(1.0, 3.0)
            if torch.rand((), generator=self.gen) < 0.7:
                peak = math.exp(self._rand(math.log(100), math.log(2000)))
                x = torch.poisson(x * peak, generator=self.gen) / peak
                x = x + self._rand(0, 0.01) * torch.randn(x.shape, generator=self.gen)
            out.append(x.clamp(0, 1))
        return torch.stack(out)


def validation_set(files) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(clean, darkened) pairs of the held-out photos at long side 512, for the training log only."""
    pairs = []
    for f in files:
        im = Image.fromarray(load_rgb(f))
        s = 512 / max(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255
        pairs.append((x, 0.25 * x**2.2))
    return pairs


def export(model: CurveNet, path) -> None:
    recipes.export(model.state_dict(), path, metadata={"arch": "CurveNet", "iterations": str(model.iterations)})


def main(argv: list[str] | None = None) -> None:
    ap = recipes.arguments(__doc__, run="runs/lowlight", steps=1600, batch=8, lr=1e-3, val_every=250)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--export-only", action="store_true", help="export the --resume checkpoint and stop")
    args = ap.parse_args(argv)

    run = recipes.start(args)
    log = recipes.Log(run)
    gen = torch.Generator().manual_seed(args.seed)
    model = CurveNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    objects, rngs = {"model": model, "optimizer": opt}, {"gen": gen}
    step = recipes.restore(args, objects, rngs, log)["step"]
    if args.export_only:
        export(model, recipes.export_path(args))
        log(f"exported step {step} to {recipes.export_path(args)}")
        return

    train_files, val_files = split(image_files(recipes.dataset(args)))
    data = Photos(train_files, args.crop, gen)
    val = validation_set(val_files)
    log(f"{len(train_files)} training photos, {len(val_files)} held out; from step {step}")

    last_save = time.time()
    t0 = time.time()
    stop = recipes.stop_step(args)
    while step < stop:
        # The floor keeps the last steps learning: the shipped run was cut short and annealed.
        lr = recipes.cosine(step, args.steps, args.lr, floor=0.02 * args.lr)
        recipes.set_lr(opt, lr)
        x = data.sample(args.batch)
        exposure = 0.35 + 0.3 * torch.rand(args.batch, generator=gen)
        model.train()
        a = model.predict(F.avg_pool2d(x, 2), exposure)
        y = apply_curves(x, F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False), model.iterations)
        parts = losses(x, y, a, exposure)
        loss = sum(parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            terms = " ".join(f"{k} {v.item():.5f}" for k, v in parts.items())
            log(f"step {step} loss {loss.item():.5f} {terms} lr {lr:.2e} {(time.time() - t0) / 50:.2f}s/step")
            t0 = time.time()
        if step % args.val_every == 0 or step == args.steps:
            model.eval()
            dark = sum(psnr(recipes.as_image(c), recipes.as_image(model(d))) for c, d in val) / len(val)
            same = sum(psnr(recipes.as_image(c), recipes.as_image(model(c))) for c, _ in val) / len(val)
            log(f"step {step} val: dark(k=.25,g=2.2) {dark:.2f} dB, well-exposed kept {same:.2f} dB")
        if time.time() - last_save > args.save_minutes * 60:
            recipes.save_checkpoint(run / recipes.CHECKPOINT, step, objects, rngs)
            last_save = time.time()
    recipes.save_checkpoint(run / recipes.CHECKPOINT, step, objects, rngs)
    export(model, recipes.export_path(args))
    log(f"stopped at step {step} of {args.steps}; weights in {recipes.export_path(args)}"
        + (f"; continue with --resume {run / recipes.CHECKPOINT}" if step < args.steps else ""))


if __name__ == "__main__":
    main()
