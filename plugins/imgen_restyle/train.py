"""Training recipe for the restyle network: autoencoder plus AdaIN stylisation, trained together.

    PYTHONPATH=plugins:. python -m imgen_restyle.train --run runs/restyle
    PYTHONPATH=plugins:. python -m imgen_restyle.train --run runs/restyle --resume

Content patches come from the training photos (at half size), style patches from the training
styles (long side 512, the size the plugin gives style images). Four held-out styles (VAL_STYLES)
and the project's held-out photos are never trained on. The loss of a step is
  reconstruction  L1 of the autoencoder on the content and style patches, which keeps the
                  latent space an image code;
  content         squared distance between channel-normalised random features (RandomFeatures,
                  levels 2-3) of output and content: structure without its statistics;
  style           squared distance between per-channel means and standard deviations of every
                  random-feature level (and of the pixels) of output and style.
Validation (fixed crops of held-out photos x held-out styles) is logged every --val-every steps
and the best weights by validation loss are kept in RUN/best.safetensors; `--export` gets those
best weights when the run stops (the common arguments are imgen_cli.recipes').
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from imgen_cli import recipes
from imgen_cli.datasets import image_files, load_rgb, split
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
    parser = recipes.arguments(__doc__, run="runs/restyle", steps=6000, batch=4, lr=1e-3, val_every=100)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args(argv)

    run = recipes.start(args)
    log = recipes.Log(run)
    rng = np.random.default_rng(args.seed)

    photos_train, photos_val = split(image_files(recipes.dataset(args, "photos")))
    styles_train, styles_val = split(image_files(recipes.dataset(args, "styles")), VAL_STYLES)
    photos = [resize_long(load_rgb(p), 768) for p in photos_train]
    styles = [resize_long(load_rgb(p), STYLE_SIDE) for p in styles_train]
    val_content = [resize_long(load_rgb(p), 768) for p in photos_val]
    val_content = to_tensor([im[im.shape[0] // 2 - 96:im.shape[0] // 2 + 96, im.shape[1] // 2 - 96:im.shape[1] // 2 + 96]
                             for im in val_content])
    val_styles = [to_tensor([crop4(resize_long(load_rgb(p), 256))]) for p in styles_val]
    log(f"{len(photos)} training photos, {len(styles)} training styles; "
        f"validation {len(photos_val)} photos x {len(styles_val)} styles")

    net = Restyler(args.width)
    features = RandomFeatures()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    objects, rngs = {"model": net, "optimizer": optimizer}, {"patches": rng}
    state = recipes.restore(args, objects, rngs, log)
    step, best = state["step"], state.get("best", math.inf)

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

    def save() -> None:
        recipes.save_checkpoint(run / recipes.CHECKPOINT, step, objects, rngs, best=best)

    last_save, start, running = time.time(), time.time(), {}
    stop = recipes.stop_step(args)
    while step < stop:
        lr = recipes.cosine(step, args.steps, args.lr)
        recipes.set_lr(optimizer, lr)
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
            log(f"step {step} lr {lr:.2e} {time.time() - start:.0f}s | train {train} | val "
                + " ".join(f"{k} {v:.4f}" for k, v in val.items()))
            running = {}
            if val["total"] < best:
                best = val["total"]
                recipes.export(net.state_dict(), run / "best.safetensors")
                log(f"  new best {best:.4f}")
        if time.time() - last_save > args.save_minutes * 60:
            save()
            last_save = time.time()
    save()
    best_file = run / "best.safetensors"
    if best_file.exists():
        log(f"exported the best weights ({best:.4f}) to {recipes.export(load_file(str(best_file)), recipes.export_path(args))}")
    else:
        log(f"stopped at step {step} before any validation: nothing to export")


if __name__ == "__main__":
    main()
