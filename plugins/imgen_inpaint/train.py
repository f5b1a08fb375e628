"""Training recipe for the inpaint model: random free-form holes in the project's photos.

    PYTHONPATH=plugins:. nice -n 15 python -m imgen_inpaint.train --run runs/inpaint \
        --export plugins/imgen_inpaint/weights/inpaint.safetensors
    (add --resume to continue from runs/inpaint/last.pt)

Random 128x128 patches of the training photos, taken at full, half or quarter size so holes cover
small and large structures, get LaMa-style masks (thick strokes and boxes covering 5-40%). The
generator learns with an L1 loss inside the holes plus a hinge adversarial loss from a patch
discriminator with spectral normalization, so large holes get texture rather than blur. Every
`--every` steps the hole PSNR on fixed masked crops of the held-out photos is logged (next to the
harmonic guess the network starts from), a resumable checkpoint is written, and the best weights
so far are kept in `best.safetensors` and copied to `--export`.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from imgen_cli.datasets import data_root, image_files, load_rgb, split
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset root holding photos/ (default: imgen's data_root())")
    parser.add_argument("--run", default="runs/inpaint", help="folder for checkpoints and the log")
    parser.add_argument("--export", default=None, help="copy the best weights here after every validation")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--adv", type=float, default=0.01, help="weight of the adversarial loss")
    parser.add_argument("--adv-start", type=int, default=300, help="step at which the adversarial loss starts")
    parser.add_argument("--every", type=int, default=50, help="validate and checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    train_files, val_files = split(image_files(data_root(args.data) / "photos"))
    print(f"{len(train_files)} training photos, {len(val_files)} held out", flush=True)
    patches = Patches([pyramid(load_rgb(p)) for p in train_files], args.size, np.random.default_rng(args.seed))
    val_images, val_masks = validation_set([load_rgb(p) for p in val_files])
    with torch.no_grad():
        baseline = hole_psnr(harmonic_fill(val_images, val_masks), val_images, val_masks)
    print(f"validation: harmonic guess {baseline:.2f} dB in the holes", flush=True)

    net, disc = InpaintNet(), PatchDiscriminator()
    opt_g = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr / 2, betas=(0.5, 0.999))
    step, best = 0, -math.inf
    if args.resume and (run / "last.pt").exists():
        state = torch.load(run / "last.pt", weights_only=True)
        net.load_state_dict(state["net"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, best = int(state["step"]), float(state["best"])
        torch.set_rng_state(state["torch_rng"])
        patches.rng.bit_generator.state = state["numpy_rng"]
        print(f"resumed at step {step}, best {best:.2f} dB", flush=True)

    started, l1_sum, adv_sum = time.time(), 0.0, 0.0
    while step < args.steps:
        lr = args.lr * (0.5 * (1 + math.cos(math.pi * step / args.steps)) * 0.9 + 0.1)
        for group in opt_g.param_groups:
            group["lr"] = lr
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
        if step % args.every == 0 or step == args.steps:
            score = evaluate(net, val_images, val_masks)
            rate = (time.time() - started) / args.every
            print(f"step {step}: l1 {l1_sum / args.every:.4f} g_adv {adv_sum / args.every:+.3f} "
                  f"val hole PSNR {score:.2f} dB (guess {baseline:.2f}) lr {lr:.2e} {rate:.2f} s/step",
                  flush=True)
            started, l1_sum, adv_sum = time.time(), 0.0, 0.0
            if score > best:
                best = score
                save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(run / "best.safetensors"))
                if args.export:
                    Path(args.export).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(run / "best.safetensors", args.export)
            torch.save({"net": net.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(), "step": step, "best": best,
                        "torch_rng": torch.get_rng_state(), "numpy_rng": patches.rng.bit_generator.state},
                       run / "tmp.pt")
            (run / "tmp.pt").replace(run / "last.pt")


if __name__ == "__main__":
    main()
