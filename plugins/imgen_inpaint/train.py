"""Training recipe for the inpaint model: random free-form holes in the project's photos.

    PYTHONPATH=plugins:. nice -n 15 python -m imgen_inpaint.train --run runs/inpaint \
        --export plugins/imgen_inpaint/weights/inpaint.safetensors
    (add --resume to continue from runs/inpaint/last.pt; the common arguments come from
    imgen_cli.recipes)

Random 128x128 patches of the training photos, taken at full, half or quarter size so holes cover
small and large structures, get LaMa-style masks (thick strokes and boxes covering 5-40%). The
generator learns with an L1 loss inside the holes plus a hinge adversarial loss from a patch
discriminator with spectral normalization, so large holes get texture rather than blur. Every
`--val-every` steps the hole PSNR on fixed masked crops of the held-out photos is logged (next to the
harmonic guess the network starts from), a resumable checkpoint is written, and the best weights
so far are kept in `best.safetensors`; when the run stops they are written to `--export`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from imgen_cli import recipes
from imgen_cli.datasets import image_files, load_rgb, split
from imgen_inpaint._net import InpaintNet, harmonic_fill
from imgen_inpaint.masks import random_mask

SCALES = (1.0, 0.5, 0.25)


class PatchDiscriminator(nn.Module):
    """A PatchGAN critic with spectral normalization: one realness score per ~30-pixel patch.

    Args:
        width: channels of the first layer (32), doubled once.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.layers = nn.Sequential(
            sn(nn.Conv2d(4, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 2 * width, 3, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 1, 3, padding=1)),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([image, mask], 1))


def pyramid(photo: np.ndarray) -> list[np.ndarray]:
    """The photo at every size in SCALES (area-averaged), as uint8 arrays."""
    image = Image.fromarray(photo)
    out = []
    for s in SCALES:
        size = (max(1, round(image.width * s)), max(1, round(image.height * s)))
        out.append(np.asarray(image.resize(size, Image.BOX)) if s != 1.0 else photo)
    return out


class Patches:
    """Random flipped patches from photo pyramids held in RAM, with a random mask each."""

    def __init__(self, photos: list[list[np.ndarray]], size: int, rng: np.random.Generator):
        self.photos, self.size, self.rng = photos, size, rng

    def batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = [], []
        for _ in range(count):
            levels = self.photos[self.rng.integers(len(self.photos))]
            # Sizes too small for a patch are skipped (a quarter-size photo may hold no 256-pixel
            # patch); with every size fitting, the draws are those of the fixed 0.4/0.4/0.2 choice.
            fits = [k for k, im in enumerate(levels) if min(im.shape[:2]) >= self.size]
            weights = np.array([0.4, 0.4, 0.2])[fits]
            im = levels[fits[self.rng.choice(len(fits), p=weights / weights.sum())]]
            top = self.rng.integers(0, im.shape[0] - self.size + 1)
            left = self.rng.integers(0, im.shape[1] - self.size + 1)
            patch = im[top : top + self.size, left : left + self.size]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            images.append(np.ascontiguousarray(patch).transpose(2, 0, 1))
            masks.append(random_mask(self.size, self.size, self.rng)[None])
        x = torch.from_numpy(np.stack(images)).float() / 255
        return x, torch.from_numpy(np.stack(masks))


def validation_set(photos: list[np.ndarray], size: int = 256, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed crops of the held-out photos at half size with masks covering 10-25%."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for photo in photos:
        half = pyramid(photo)[1]
        for _ in range(2):
            top = rng.integers(0, half.shape[0] - size + 1)
            left = rng.integers(0, half.shape[1] - size + 1)
            images.append(half[top : top + size, left : left + size].transpose(2, 0, 1))
            masks.append(random_mask(size, size, rng, coverage=(0.10, 0.25))[None])
    return torch.from_numpy(np.stack(images)).float() / 255, torch.from_numpy(np.stack(masks))


def hole_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over images of the PSNR of the pixels inside the holes, on 8-bit values."""
    pred = torch.round(pred.clamp(0, 1) * 255) / 255
    err = ((pred - target) ** 2 * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * 3)
    return float(torch.mean(10 * torch.log10(1 / err.clamp_min(1e-12))))


@torch.no_grad()
def evaluate(net: InpaintNet, images: torch.Tensor, masks: torch.Tensor) -> float:
    net.eval()
    out = torch.cat([net(images[i : i + 2], masks[i : i + 2]) for i in range(0, len(images), 2)])
    net.train()
    return hole_psnr(out, images, masks)


def main(argv: list[str] | None = None) -> None:
    parser = recipes.arguments(__doc__, run="runs/inpaint", steps=1500, batch=8, lr=1e-3, val_every=50)
    parser.add_argument("--size", type=int, default=128, help="patch side (default: 128)")
    parser.add_argument("--adv", type=float, default=0.01, help="weight of the adversarial loss (default: 0.01)")
    parser.add_argument("--adv-start", type=int, default=300,
                        help="step at which the adversarial loss starts (default: 300)")
    args = parser.parse_args(argv)

    run = recipes.start(args)
    log = recipes.Log(run)
    train_files, val_files = split(image_files(recipes.dataset(args)))
    log(f"{len(train_files)} training photos, {len(val_files)} held out")
    patches = Patches([pyramid(load_rgb(p)) for p in train_files], args.size, np.random.default_rng(args.seed))
    val_images, val_masks = validation_set([load_rgb(p) for p in val_files])
    with torch.no_grad():
        baseline = hole_psnr(harmonic_fill(val_images, val_masks), val_images, val_masks)
    log(f"validation: harmonic guess {baseline:.2f} dB in the holes")

    net, disc = InpaintNet(), PatchDiscriminator()
    opt_g = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr / 2, betas=(0.5, 0.999))
    objects = {"model": net, "disc": disc, "opt_g": opt_g, "opt_d": opt_d}
    rngs = {"patches": patches.rng}
    state = recipes.restore(args, objects, rngs, log)
    step, best = state["step"], state.get("best", -math.inf)
    best_path = run / "best.safetensors"

    def checkpoint() -> None:
        recipes.save_checkpoint(run / recipes.CHECKPOINT, step, objects, rngs, best=best)

    started, saved, l1_sum, adv_sum, done = time.time(), time.time(), 0.0, 0.0, 0
    last = recipes.stop_step(args)
    while step < last:
        recipes.set_lr(opt_g, recipes.cosine(step, args.steps, args.lr, floor=0.1 * args.lr))
        image, mask = patches.batch(args.batch)
        out = net(image, mask)
        adversarial = step >= args.adv_start
        l1 = ((out - image).abs() * mask).sum() / (mask.sum() * 3)
        loss = l1
        if adversarial:
            g_adv = -disc(out, mask).mean()
            loss = loss + args.adv * g_adv
            adv_sum += g_adv.item()
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if adversarial:
            fake = out.detach()
            d_loss = F.relu(1 - disc(image, mask)).mean() + F.relu(1 + disc(fake, mask)).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        l1_sum += l1.item()
        step += 1
        done += 1
        if step % args.val_every == 0 or step == last:
            score = evaluate(net, val_images, val_masks)
            log(f"step {step}: l1 {l1_sum / done:.4f} g_adv {adv_sum / done:+.3f} val hole PSNR {score:.2f} dB "
                f"(guess {baseline:.2f}) lr {opt_g.param_groups[0]['lr']:.2e} {(time.time() - started) / done:.2f} s/step")
            started, l1_sum, adv_sum, done = time.time(), 0.0, 0.0, 0
            if score > best:
                best = score
                recipes.export(net.state_dict(), best_path)
            checkpoint()
            saved = time.time()
        elif time.time() - saved > 60 * args.save_minutes:
            checkpoint()
            saved = time.time()
    # The recipe ships the best validated weights of the run, not the last ones.
    if best_path.exists():
        target = recipes.export_path(args)
        if target.resolve() != best_path.resolve():
            recipes.export(load_file(str(best_path)), target)
        log(f"exported the best weights ({best:.2f} dB) to {target}")


if __name__ == "__main__":
    main()
