"""Training recipe for the lowlight curve network (zero-reference, no paired ground truth).

    PYTHONPATH=plugins:. python -m imgen_lowlight.train --out runs/lowlight
    PYTHONPATH=plugins:. python -m imgen_lowlight.train --out runs/lowlight --resume runs/lowlight/last.pt
    PYTHONPATH=plugins:. python -m imgen_lowlight.train --out runs/lowlight --export-only \
        --resume runs/lowlight/last.pt

The shipped weights (a 1600-step schedule cut short to fit the session, see docs/lowlight.md):

    PYTHONPATH=plugins:. python -m imgen_lowlight.train --out runs/lowlight --steps 1600 --stop-after 899 \
        && PYTHONPATH=plugins:. python -m imgen_lowlight.train --out runs/lowlight --steps 1150 \
        --resume runs/lowlight/last.pt

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

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_lowlight._net import CurveNet, apply_curves

WEIGHTS = Path(__file__).resolve().parent / "weights" / "lowlight.safetensors"
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


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def export(model: CurveNet, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"arch": "CurveNet", "iterations": str(model.iterations)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="dataset folder holding photos/ (default: data_root())")
    ap.add_argument("--out", default="runs/lowlight", help="checkpoints and log")
    ap.add_argument("--resume", default=None, help="checkpoint to continue from")
    ap.add_argument("--steps", type=int, default=1600, help="length of the learning-rate schedule")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="save and stop at this step (resume later, possibly with another --steps)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=float, default=180, help="seconds")
    ap.add_argument("--export", default=str(WEIGHTS), help="where the final weights go")
    ap.add_argument("--export-only", action="store_true", help="export --resume and stop")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = CurveNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step = 0
    if args.resume:
        ck = torch.load(args.resume, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = int(ck["step"])
        gen.set_state(ck["gen"])
    if args.export_only:
        export(model, Path(args.export))
        print(f"exported step {step} to {args.export}", flush=True)
        return

    train_files, val_files = split(image_files(data_root(args.data) / "photos"))
    data = Photos(train_files, args.crop, gen)
    val = validation_set(val_files)
    print(f"{len(train_files)} training photos, {len(val_files)} held out; from step {step}", flush=True)

    def save(name: str) -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "gen": gen.get_state()}, out / name)

    last_save = time.time()
    t0 = time.time()
    stop = min(args.steps, args.stop_after or args.steps)
    while step < stop:
        lr = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
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
            print(f"step {step} loss {loss.item():.5f} {terms} lr {lr:.2e} {(time.time() - t0) / 50:.2f}s/step", flush=True)
            t0 = time.time()
        if step % 250 == 0 or step == args.steps:
            model.eval()
            dark = sum(psnr(model(d), c) for c, d in val) / len(val)
            same = sum(psnr(model(c), c) for c, _ in val) / len(val)
            print(f"step {step} val: dark(k=.25,g=2.2) {dark:.2f} dB, well-exposed kept {same:.2f} dB", flush=True)
        if time.time() - last_save > args.checkpoint_every:
            save("last.pt")
            last_save = time.time()
    save("last.pt")
    if step < args.steps:
        print(f"stopped at step {step}; continue with --resume {out / 'last.pt'}", flush=True)
        return
    export(model, Path(args.export))
    print(f"done at step {step}; weights in {args.export}", flush=True)


if __name__ == "__main__":
    main()
