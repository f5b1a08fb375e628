"""Quality and speed of `imgen restyle` against histogram matching and Reinhard colour transfer.

    pip install scikit-image            # benchmark-only peer, not an imgen dependency
    IMGEN_PLUGINS=imgen_restyle PYTHONPATH=plugins:. python benchmarks/bench_restyle.py
    (add --gallery docs/img to write the docs' gallery; --side 0 for full-size photos)

Every pair is a held-out photo (imgen_cli.datasets.VALIDATION) and a held-out style
(imgen_restyle.train.VAL_STYLES): the network never saw either. Photos are resized to --side on
their long side, styles to 512 (as the plugin does). Scores, averaged over all pairs:
  colour SWD   sliced Wasserstein distance between the Lab pixels of output and style (256 fixed
               random directions, 20000 pixels each); lower is closer to the style's colours.
  grad SSIM    SSIM between the gradient-magnitude maps (Sobel on luma) of photo and output; the
               bar is 0.6 (photo structure kept).
  texture      mean over levels of ||G(output) - G(style)|| / ||G(style)|| for Gram matrices G
               of a fixed random network (seed 1), independent of the one the training losses use
               (seed 0); lower is closer to the style's texture statistics.
  encoder tex  the same with the model's own encoder features.
Speed: seconds per megapixel of `imgen restyle` (engine, default tiling, 2 threads, model loaded,
prepare included) on a photo at its full 1536-pixel size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from skimage.exposure import match_histograms
from skimage.filters import sobel
from skimage.metrics import structural_similarity

from imgen_cli.api import Pipeline
from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_restyle._color import rgb_to_lab
from imgen_restyle._features import RandomFeatures, gram
from imgen_restyle.train import VAL_STYLES


def resize_long(image: np.ndarray, side: int) -> np.ndarray:
    if not side:
        return image
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.LANCZOS))


def tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def lab_pixels(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    lab = rgb_to_lab(tensor(image))[0].reshape(3, -1).T.numpy()
    return lab[rng.choice(len(lab), size=min(count, len(lab)), replace=False)]


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance; a and b hold equally many points."""
    pa = np.sort(a @ directions.T, axis=0)
    pb = np.sort(b @ directions.T, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def grad_ssim(photo: np.ndarray, out: np.ndarray) -> float:
    def luma(im):
        return (im.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])

    ga, gb = sobel(luma(photo)), sobel(luma(out))
    return float(structural_similarity(ga, gb, data_range=max(ga.max(), gb.max())))


def gram_distance(feats_a, feats_b) -> float:
    return float(np.mean([(torch.linalg.norm(gram(a) - gram(b)) / torch.linalg.norm(gram(b))).item()
                          for a, b in zip(feats_a, feats_b)]))


def reinhard(photo: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Reinhard et al. 2001 colour transfer: per-channel mean and std in Lab (skimage's Lab)."""
    from skimage.color import lab2rgb, rgb2lab

    a, b = rgb2lab(photo), rgb2lab(style)
    out = (a - a.mean((0, 1))) / (a.std((0, 1)) + 1e-6) * b.std((0, 1)) + b.mean((0, 1))
    return np.clip(np.round(lab2rgb(out) * 255), 0, 255).astype(np.uint8)


def write_gallery(folder: str, photos: dict, styles: dict, outputs: dict, cell: int = 256) -> None:
    """One image per style: the style on top, then per photo: photo, imgen restyle, match_histograms."""
    for sname, style in styles.items():
        names = list(photos)[:3]
        thumbs = [[photos[p], outputs[p, sname, "imgen restyle"], outputs[p, sname, "match_histograms"]] for p in names]
        height = max(resize_long(t, cell).shape[0] for row in thumbs for t in row)
        top = resize_long(style, cell)
        sheet = Image.new("RGB", (3 * cell, top.shape[0] + height * len(names)), "white")
        sheet.paste(Image.fromarray(top), (cell, 0))
        for i, row in enumerate(thumbs):
            for j, image in enumerate(row):
                sheet.paste(Image.fromarray(resize_long(image, cell)), (j * cell, top.shape[0] + i * height))
        sheet.save(f"{folder}/restyle_{sname}.jpg", quality=85)


def quality(args, photos, styles, restyle, net, options) -> None:
    """Score every held-out photo x style pair for each method and print the table."""
    texture_net = RandomFeatures(seed=1)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(256, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)

    methods = {
        "imgen restyle": lambda photo, style: restyle(photo, style=style),
        "match_histograms": lambda photo, style: np.clip(np.round(match_histograms(photo, style, channel_axis=-1)),
                                                         0, 255).astype(np.uint8),
        "Reinhard (Lab)": reinhard,
        "photo unchanged": lambda photo, style: photo,
    }
    scores = {name: [] for name in methods}
    outputs = {}
    for pname, photo in photos.items():
        for sname, style in styles.items():
            style_lab = lab_pixels(style, 20000, np.random.default_rng(1))
            with torch.no_grad():
                style_tex, style_enc = texture_net(tensor(style)), net.encode(tensor(style)[..., : style.shape[0] // 4 * 4, : style.shape[1] // 4 * 4])
            for name, method in methods.items():
                out = method(photo, style)
                out4 = out[: out.shape[0] // 4 * 4, : out.shape[1] // 4 * 4]
                with torch.no_grad():
                    row = (sliced_wasserstein(lab_pixels(out, 20000, np.random.default_rng(2)), style_lab, directions),
                           grad_ssim(photo, out),
                           gram_distance(texture_net(tensor(out)), style_tex),
                           gram_distance(net.encode(tensor(out4)), style_enc))
                scores[name].append(row)
                if name in ("imgen restyle", "match_histograms"):
                    outputs[pname, sname, name] = out
            print(f"{pname} x {sname}: " + "  ".join(f"{n} swd {scores[n][-1][0]:.2f} ssim {scores[n][-1][1]:.3f}"
                                                    for n in ("imgen restyle", "match_histograms")), flush=True)
    print(f"\n{len(photos)} held-out photos x {len(styles)} held-out styles, photos at long side {args.side}, "
          f"{' '.join(options)}")
    print(f"{'method':20s} {'colour SWD':>11s} {'grad SSIM':>10s} {'texture':>8s} {'encoder tex':>12s}")
    for name, rows in scores.items():
        m = np.mean(rows, axis=0)
        print(f"{name:20s} {m[0]:11.2f} {m[1]:10.3f} {m[2]:8.3f} {m[3]:12.3f}")
    wins = [np.mean([a[i] < b[i] for a, b in zip(scores["imgen restyle"], scores["match_histograms"])]) for i in (0, 2)]
    print(f"imgen closer than match_histograms on colour SWD in {wins[0]:.0%} of pairs, on texture in {wins[1]:.0%}")

    if args.gallery:
        write_gallery(args.gallery, photos, styles, outputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder with photos/ and styles/ (default: data_root())")
    ap.add_argument("--side", type=int, default=768, help="long side of the photos for the quality scores")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--detail", type=float, default=None, help="--detail of the plugin (default: its own)")
    ap.add_argument("--gallery", default=None, help="write gallery images into this folder")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(2)
    root = data_root(args.data)
    _, photo_files = split(image_files(root / "photos"))
    _, style_files = split(image_files(root / "styles"), VAL_STYLES)
    photos = {p.stem: resize_long(load_rgb(p), args.side) for p in photo_files}
    styles = {p.stem: resize_long(load_rgb(p), 512) for p in style_files}
    options = ["--strength", str(args.strength)] + (["--detail", str(args.detail)] if args.detail is not None else [])
    restyle = Pipeline(["restyle", *options], device="cpu", threads=2)
    net = restyle.engine.loaded(restyle.steps[0].model, torch.float32).network
    if not args.speed_only:
        quality(args, photos, styles, restyle, net, options)

    if not args.no_speed:
        photo = load_rgb(photo_files[0])
        style = next(iter(styles.values()))
        restyle(photo[:256, :256], style=style)
        start = time.perf_counter()
        restyle(photo, style=style)
        seconds = time.perf_counter() - start
        mp = photo.shape[0] * photo.shape[1] / 1e6
        print(f"speed: {seconds:.2f} s for {photo.shape[1]}x{photo.shape[0]} ({mp:.2f} MP): {seconds / mp:.2f} s/MP")


if __name__ == "__main__":
    main()
