"""Quality and speed of the sr models: `PYTHONPATH=plugins:. python benchmarks/bench_sr.py`.

Quality: Y-PSNR and SSIM (`scale` pixels of border cropped) on the held-out photos of
imgen_cli.datasets.VALIDATION, never trained on, against PIL bicubic upscaling of the same input.
fidelity models get PIL bicubic downscales; the real model (and, for comparison, fidelity x4 and
bicubic) gets a fixed blur + x4 downscale + noise + JPEG degradation, and is also scored on edge
contrast (how crisp the original's strongest edges come out, 1 = as sharp as the original).

Speed: output megapixels per second of each shipped model on the same input as a 23-block
RRDBNet (Real-ESRGAN's generator architecture, written here with random weights, for timing only).
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from imgen_cli import datasets
from imgen_sr import SHIPPED, _build, _loader
from imgen_sr.train import bicubic_down, crop_to_multiple, pil_resize, psnr_y, rgb_to_y, to_tensor, upscale


def ssim_y(a: np.ndarray, b: np.ndarray, border: int) -> float:
    """SSIM of the Y channels (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5)."""
    ya, yb = (torch.from_numpy(rgb_to_y(img)).float()[None, None] for img in (a, b))
    if border:
        ya, yb = ya[..., border:-border, border:-border], yb[..., border:-border, border:-border]
    r = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()

    def win(x):  # the Gaussian window is separable: two 11-tap passes instead of 121 taps
        return F.conv2d(F.conv2d(x, g.view(1, 1, 1, 11)), g.view(1, 1, 11, 1))

    mu_a, mu_b = win(ya), win(yb)
    var_a = win(ya * ya) - mu_a**2
    var_b = win(yb * yb) - mu_b**2
    cov = win(ya * yb) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.double().mean())


def degrade_fixed(hr: np.ndarray, seed: int, blur: float = 1.2, noise: float = 5, quality: int = 60) -> np.ndarray:
    """The real-photo test degradation: Gaussian blur (sigma 1.2), PIL bicubic x4 down,
    Gaussian noise (sigma 5/255), JPEG quality 60. Fixed, unlike the random training pipeline."""
    x = to_tensor(hr)[None]
    radius = max(4, int(3 * blur + 0.5))
    r = torch.arange(2 * radius + 1, dtype=torch.float32) - radius
    g = torch.exp(-(r**2) / (2 * blur**2))
    k = g[:, None] * g[None, :]
    k = (k / k.sum()).expand(3, 1, *k.shape)
    x = F.conv2d(F.pad(x, (radius,) * 4, mode="reflect"), k, groups=3)
    blurred = x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    lr = bicubic_down(blurred, 4).astype(np.float64)
    lr += np.random.default_rng(seed).normal(0, noise, lr.shape)
    lr = np.clip(np.round(lr), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


#: (blur sigma, noise sigma, JPEG quality) of the `sweep` part: milder and harsher than the default.
SWEEP = [(1.2, 5, 60), (0.8, 3, 80), (1.6, 8, 50), (1.2, 12, 40), (2.0, 5, 70)]


# --- RRDBNet, the speed reference -----------------------------------------------------------------

class DenseBlock(nn.Module):
    """Residual dense block: five 3x3 convs, each seeing all earlier outputs.

    Args:
        channels: block input/output channels (default 64).
        growth: channels added by each inner conv (default 32).
    """

    def __init__(self, channels: int = 64, growth: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )

    def forward(self, x):
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Three dense blocks inside a scaled residual.

    Args:
        channels: feature channels (default 64).
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(channels) for _ in range(3)))

    def forward(self, x):
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN x4 generator layout: 23 RRDBs, two nearest-neighbour x2 upsamplings.

    Args:
        blocks: RRDB count (default 23).
        channels: feature channels (default 64).
    """

    def __init__(self, blocks: int = 23, channels: int = 64):
        super().__init__()
        c = channels
        self.first = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(c) for _ in range(blocks)))
        self.trunk = nn.Conv2d(c, c, 3, padding=1)
        self.up1, self.up2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.hr = nn.Conv2d(c, c, 3, padding=1)
        self.last = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        feat = self.first(x)
        feat = feat + self.trunk(self.body(feat))
        feat = F.leaky_relu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(feat), 0.2))


@torch.no_grad()
def out_mp_per_s(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    model(x)  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        y = model(x)
    return y.shape[-1] * y.shape[-2] * repeats / 1e6 / (time.perf_counter() - start)


# --- report ---------------------------------------------------------------------------------------

def quality(val, models) -> list[tuple]:
    rows = []
    for (kind, scale), net in models.items():
        if kind != "fidelity":
            continue
        ours, bic = [], []
        for hr in val:
            hr = crop_to_multiple(hr, scale)
            lr = bicubic_down(hr, scale)
            sr, bi = upscale(net, lr), pil_resize(lr, (hr.shape[1], hr.shape[0]))
            ours.append((psnr_y(sr, hr, scale), ssim_y(sr, hr, scale)))
            bic.append((psnr_y(bi, hr, scale), ssim_y(bi, hr, scale)))
        rows.append((f"sr-fidelity-x{scale}", "bicubic", scale, *np.mean(bic, 0), *np.mean(ours, 0)))
    return rows


def edge_contrast(out: np.ndarray, hr: np.ndarray, border: int) -> float:
    """How steep the original's edges come out: the output's Y gradient projected on the
    original's, over the pixels where the original's gradient is in its top 10%, relative to the
    original's own (sum of dot products / sum of squared norms, Sobel). 1 is as sharp as the
    original; a blurry output scores lower. Noise, ringing and JPEG blocks, uncorrelated with the
    original's gradient, add nothing to it on average, unlike a plain gradient magnitude."""
    def grad(img):
        y = torch.from_numpy(rgb_to_y(img)).float()[None, None]
        k = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
        g = torch.cat([F.conv2d(y, k.view(1, 1, 3, 3)), F.conv2d(y, k.t().reshape(1, 1, 3, 3))], 1)[0]
        return g[:, border:-border, border:-border] if border else g

    go, gh = grad(out), grad(hr)
    strength = gh.square().sum(0)
    edges = strength >= torch.quantile(strength.flatten()[::7], 0.9)
    return float((go * gh).sum(0)[edges].sum() / strength[edges].sum())


def real_quality(val, models, degradation=(1.2, 5, 60)) -> list[tuple]:
    results = {"bicubic": [], **{f"sr-{k}-x4": [] for k, s in models if s == 4}}
    for i, hr in enumerate(val):
        hr = crop_to_multiple(hr, 4)
        lr = degrade_fixed(hr, i, *degradation)
        outs = {"bicubic": pil_resize(lr, (hr.shape[1], hr.shape[0]))}
        outs.update({f"sr-{k}-x4": upscale(net, lr) for (k, s), net in models.items() if s == 4})
        for name, out in outs.items():
            results[name].append((psnr_y(out, hr, 4), ssim_y(out, hr, 4), edge_contrast(out, hr, 4)))
    return [(name, *np.mean(v, 0)) for name, v in results.items()]


def figure(hr: np.ndarray, models, path: str, box=(0.24, 0.33), size=96, zoom=3) -> None:
    """Side-by-side crop: degraded input (nearest), bicubic, fidelity x4, real x4."""
    hr = crop_to_multiple(hr, 4)
    lr = degrade_fixed(hr, seed=0)
    top = int(lr.shape[0] * box[0]) // 1
    left = int(lr.shape[1] * box[1]) // 1
    lr_crop = lr[top : top + size, left : left + size]
    panels = [np.asarray(Image.fromarray(lr_crop).resize((size * 4, size * 4), Image.NEAREST)),
              pil_resize(lr_crop, (size * 4, size * 4))]
    # The networks see the whole image, so the crop has no artificial borders.
    for kind in ("fidelity", "real"):
        out = upscale(models[(kind, 4)], lr)
        panels.append(out[top * 4 : (top + size) * 4, left * 4 : (left + size) * 4])
    gap = np.full((size * 4, 8, 3), 255, np.uint8)
    row = np.concatenate([p if i == 0 else np.concatenate([gap, p], 1) for i, p in enumerate(panels)], 1)
    Image.fromarray(row).resize((row.shape[1] * zoom // 4, row.shape[0] * zoom // 4), Image.LANCZOS).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder (default: imgen_cli.datasets.data_root())")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-size", type=int, default=128, help="input side for the speed test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--figure", help="write the side-by-side crop image here")
    ap.add_argument("--parts", default="fidelity,real,speed",
                    help="comma-separated: fidelity, real, sweep (real on other degradation strengths), speed")
    ap.add_argument("--real-x4", help="evaluate this .safetensors as the real x4 model instead of the shipped one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    root = datasets.data_root(args.data)
    folder = root / "photos" if (root / "photos").is_dir() else root
    _, val_files = datasets.split(datasets.image_files(folder))
    val = [datasets.load_rgb(p) for p in val_files]
    models = {key: _loader(stem)().eval() for key, stem in SHIPPED.items()}
    if args.real_x4:
        from safetensors.torch import load_file

        models[("real", 4)] = _build(load_file(args.real_x4)).eval()
    print(f"held-out photos: {', '.join(p.stem for p in val_files)} "
          f"({', '.join(f'{v.shape[1]}x{v.shape[0]}' for v in val)})\n")

    parts = set(args.parts.split(","))
    if "fidelity" in parts:
        print("## fidelity: PIL bicubic downscale, Y channel, border = scale\n")
        print("| model | bicubic PSNR | bicubic SSIM | model PSNR | model SSIM | gain dB |")
        print("|---|---|---|---|---|---|")
        for name, _, _, bp, bs, mp, ms in quality(val, models):
            print(f"| {name} | {bp:.2f} | {bs:.4f} | {mp:.2f} | {ms:.4f} | {mp - bp:+.2f} |")

    if "real" in parts:
        print("\n## real: blur 1.2 + PIL bicubic x4 + noise 5 + JPEG 60, Y channel, border 4\n")
        print("| output | PSNR | SSIM | edge contrast |")
        print("|---|---|---|---|")
        for name, p, s, e in real_quality(val, models):
            print(f"| {name} | {p:.2f} | {s:.4f} | {e:.3f} |")

    if "sweep" in parts:
        print("\n## sweep: real on other degradations, 768x768 top-left crops, Y PSNR / edge contrast\n")
        names = ["bicubic", *(f"sr-{k}-x4" for k, s in models if s == 4)]
        print("| blur, noise, JPEG | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        crops = [hr[:768, :768] for hr in val]
        for degradation in SWEEP:
            rows = {name: (p, e) for name, p, _, e in real_quality(crops, models, degradation)}
            print(f"| {', '.join(map(str, degradation))} | " + " | ".join(f"{rows[n][0]:.2f} / {rows[n][1]:.3f}" for n in names) + " |")

    if args.figure:
        figure(val[[p.stem for p in val_files].index("friends")], models, args.figure)
        print(f"\nwrote {args.figure}")

    if "speed" not in parts:
        return
    x = torch.rand(1, 3, args.speed_size, args.speed_size, generator=torch.Generator().manual_seed(0))
    print(f"\n## speed: {args.speed_size}x{args.speed_size} input, {args.threads} threads, fp32\n")
    print("| model | params | output MP/s | x RRDBNet |")
    print("|---|---|---|---|")
    rrdb = RRDBNet().eval()
    ref = out_mp_per_s(rrdb, x, 1)
    for (kind, scale), net in models.items():
        speed = out_mp_per_s(net, x, args.repeats)
        params = sum(p.numel() for p in net.parameters())
        print(f"| sr-{kind}-x{scale} | {params / 1e3:.0f}k | {speed:.2f} | {speed / ref:.0f}x |")
    params = sum(p.numel() for p in rrdb.parameters())
    print(f"| RRDBNet (23 blocks, x4) | {params / 1e6:.1f}M | {ref:.4f} | 1x |")


if __name__ == "__main__":
    main()
