"""Training recipe for the restyle network: autoencoder plus AdaIN stylisation, trained together.

    PYTHONPATH=plugins:. python -m imgen_restyle.train --out runs/restyle \
        --export plugins/imgen_restyle/weights/restyle.safetensors
    (add --resume to continue from runs/restyle/last.pt)

Content patches come from the training photos (at half size), style patches from the training
styles (long side 512, the size the plugin gives style images). Four held-out styles (VAL_STYLES)
and the project's held-out photos are never trained on. The loss of a step is
  reconstruction  L1 of the autoencoder on the content and style patches, which keeps the
                  latent space an image code;
  content         squared distance between channel-normalised random features (RandomFeatures,
                  levels 2-3) of output and content: structure without its statistics;
  style           squared distance between per-channel means and standard deviations of every
                  random-feature level (and of the pixels) of output and style.
Validation (fixed crops of held-out photos x held-out styles) is logged every --val-every steps;
the best checkpoint by validation loss is exported.
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
from safetensors.torch import save_file

from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_restyle._features import RandomFeatures
from imgen_restyle._net import Restyler, moments

VAL_STYLES = ("goldfish", "rhythm", "umang", "flow")
STYLE_SIDE = 512
WEIGHTS = {"rec": 1.0, "content": 1.0, "style": 3.0}


def resize_long(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def crop4(image: np.ndarray) -> np.ndarray:
    """Crop to sides that are multiples of 4, as the network needs."""
    return image[: image.shape[0] // 4 * 4, : image.shape[1] // 4 * 4]


def to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def random_patches(images: list[np.ndarray], count: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    out = []
    for _ in range(count):
        im = images[rng.integers(len(images))]
        y = rng.integers(im.shape[0] - size + 1)
        x = rng.integers(im.shape[1] - size + 1)
        patch = im[y:y + size, x:x + size]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out.append(np.ascontiguousarray(patch))
    return to_tensor(out)


def stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = torch.var_mean(f, dim=(2, 3), correction=0)
    return mean, (var + 1e-5).sqrt()


def normalised(f: torch.Tensor) -> torch.Tensor:
    """Channels centred and scaled to unit spread; the floor keeps nearly dead ReLU channels
    (std near 0 in a flat patch) from turning tiny differences into huge ones."""
    mean, std = stats(f)
    return (f - mean[..., None, None]) / (std[..., None, None] + 0.05)


def grey(rgb: torch.Tensor) -> torch.Tensor:
    return (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]).expand(-1, 3, -1, -1)


def losses(net: Restyler, features: RandomFeatures, content: torch.Tensor, style: torch.Tensor) -> dict:
    rec = F.l1_loss(net(content), content) + F.l1_loss(net(style), style)
    out = net.restyle(content, moments(net.encode(content)), moments(net.encode(style)))
    fo, fs = features(out), features(style)
    # Structure is compared on luma, so the colour change the style asks for costs no content.
    go, gc = features(grey(out)), features(grey(content))
    content_loss = sum(F.mse_loss(normalised(a), normalised(b)) for a, b in zip(go[1:], gc[1:]))
    style_loss = 0.0
    for a, b in zip([out] + fo, [style] + fs):
        (ma, sa), (mb, sb) = stats(a), stats(b)
        style_loss = style_loss + F.mse_loss(ma, mb) + F.mse_loss(sa, sb)
    parts = {"rec": rec, "content": content_loss, "style": style_loss}
    parts["total"] = sum(WEIGHTS[k] * v for k, v in parts.items())
    return parts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset folder with photos/ and styles/ (default: data_root())")
    parser.add_argument("--out", default="runs/restyle", help="checkpoint folder")
    parser.add_argument("--export", default=None, help="write the best weights here (.safetensors)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--save-minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    root = data_root(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    photos_train, photos_val = split(image_files(root / "photos"))
    styles_train, styles_val = split(image_files(root / "styles"), VAL_STYLES)
    photos = [resize_long(load_rgb(p), 768) for p in photos_train]
    styles = [resize_long(load_rgb(p), STYLE_SIDE) for p in styles_train]
    val_content = [resize_long(load_rgb(p), 768) for p in photos_val]
    val_content = to_tensor([im[im.shape[0] // 2 - 96:im.shape[0] // 2 + 96, im.shape[1] // 2 - 96:im.shape[1] // 2 + 96]
                             for im in val_content])
    val_styles = [to_tensor([crop4(resize_long(load_rgb(p), 256))]) for p in styles_val]
    print(f"{len(photos)} training photos, {len(styles)} training styles; "
          f"validation {len(photos_val)} photos x {len(styles_val)} styles", flush=True)

    net = Restyler(args.width)
    features = RandomFeatures()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, best = 0, math.inf
    if args.resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        rng = np.random.default_rng([args.seed, step])
        torch.manual_seed(args.seed + step)
        print(f"resumed at step {step} (best validation {best:.4f})", flush=True)

    def validate() -> dict:
        net.eval()
        totals: dict = {}
        with torch.no_grad():
            for style in val_styles:
                parts = losses(net, features, val_content, style.expand(len(val_content), -1, -1, -1))
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + float(v) / len(val_styles)
        net.train()
        return totals

    def save(name: str) -> None:
        torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best},
                   out / name)

    last_save, start, running = time.time(), time.time(), {}
    while step < args.steps:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        content = random_patches(photos, args.batch, args.patch, rng)
        style = random_patches(styles, args.batch, args.patch + 32, rng)
        parts = losses(net, features, content, style)
        optimizer.zero_grad()
        parts["total"].backward()
        optimizer.step()
        step += 1
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + v.item()
        if step % args.val_every == 0 or step == args.steps:
            val = validate()
            train = " ".join(f"{k} {v / args.val_every:.4f}" for k, v in running.items())
            print(f"step {step} lr {lr:.2e} {time.time() - start:.0f}s | train {train} | val "
                  + " ".join(f"{k} {v:.4f}" for k, v in val.items()), flush=True)
            running = {}
            if val["total"] < best:
                best = val["total"]
                save("best.pt")
                if args.export:
                    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.export)
                print(f"  new best {best:.4f}", flush=True)
        if time.time() - last_save > args.save_minutes * 60:
            save("last.pt")
            last_save = time.time()
    save("last.pt")


if __name__ == "__main__":
    main()
