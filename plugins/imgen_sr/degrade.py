"""Second-order blind degradation for the real models' training inputs (Real-ESRGAN's idea).

Real photos reach us after several rounds of damage: a camera's blur and noise, a resize and a
JPEG save, then often a second resize, more noise and another JPEG on the way to the web. One
round of blur / resize / noise / JPEG (`train.degrade_real`) does not produce the blocky,
re-compressed noise such photos carry; two rounds, each with random strength, do. Ranges follow
Real-ESRGAN's (Wang et al. 2021, table of the second-order model), narrowed a little at the heavy
end because our benchmark and our users' photos are ordinary phone and web JPEGs, and scaled by a
per-patch `strength` so that mild inputs (which a model must not over-smooth) are common too.

Imported by the training recipe and the target generator only, never by the plugin's front module.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def gaussian_kernel(rng: np.random.Generator, min_sigma: float, max_sigma: float) -> np.ndarray:
    """A random isotropic or anisotropic, rotated Gaussian blur kernel, 7 to 21 taps."""
    size = int(rng.choice([7, 9, 11, 13, 15, 17, 19, 21]))
    s1 = rng.uniform(min_sigma, max_sigma)
    s2 = s1 if rng.random() < 0.5 else rng.uniform(min_sigma, max_sigma)
    theta = rng.uniform(0, math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([s1**2, s2**2]) @ rot.T
    r = np.arange(size) - size // 2
    xy = np.stack(np.meshgrid(r, r, indexing="xy"), -1)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, np.linalg.inv(cov), xy))
    return k / k.sum()


def _blur(x: torch.Tensor, rng, min_sigma: float, max_sigma: float) -> torch.Tensor:
    k = torch.from_numpy(gaussian_kernel(rng, min_sigma, max_sigma)).float()
    p = k.shape[0] // 2
    if min(x.shape[-2:]) <= p:  # reflect padding needs the image larger than the pad
        return x
    return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), k.expand(x.shape[1], 1, *k.shape), groups=x.shape[1])


def _resize(x: torch.Tensor, rng, size: tuple[int, int]) -> torch.Tensor:
    mode = str(rng.choice(["area", "bilinear", "bicubic"]))
    if mode == "area" and (size[0] > x.shape[-2] or size[1] > x.shape[-1]):
        mode = "bilinear"
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def _noise(x: torch.Tensor, rng, gauss_max: float, poisson_max: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    grey = rng.random() < 0.4
    if rng.random() < 0.5:
        sigma = rng.uniform(1, gauss_max) / 255.0
        shape = (1, 1, *x.shape[2:]) if grey else x.shape
        return x + sigma * torch.randn(shape, generator=gen)
    # Poisson (shot) noise: its variance grows with brightness, as a sensor's does.
    scale = rng.uniform(0.05, poisson_max)
    src = x.clamp(0, 1)
    if grey:
        src = (0.299 * src[:, :1] + 0.587 * src[:, 1:2] + 0.114 * src[:, 2:])
    vals = 10 ** 2.5  # photons per unit intensity before `scale` amplifies the deviation
    noisy = torch.poisson(src * vals, generator=gen) / vals
    return x + scale * (noisy - src)


def _jpeg(x: torch.Tensor, rng, min_quality: int) -> torch.Tensor:
    img = x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(min_quality, 96)))
    out = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)[None].float().div(255)


def degrade_second_order(hr: np.ndarray, scale: int, rng: np.random.Generator,
                         strength: float | None = None) -> np.ndarray:
    """Two rounds of blur / resize / noise / JPEG, ending at exactly 1/scale of `hr`; uint8 LR.

    `strength` in 0..1 scales every range's upper end (drawn uniformly when None): 1 is close to
    Real-ESRGAN's second-order setting, 0.3 an ordinary phone JPEG.
    """
    s = rng.uniform(0.3, 1.0) if strength is None else strength
    h, w = hr.shape[:2]
    out_hw = (h // scale, w // scale)
    x = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)[None].float().div(255)

    # First round: the camera and the first save.
    x = _blur(x, rng, 0.2, 0.5 + 2.5 * s)
    r = rng.random()
    f = rng.uniform(1, 1.5) if r < 0.2 else rng.uniform(max(0.15, 1 - 0.85 * s), 1) if r < 0.9 else 1.0
    x = _resize(x, rng, (max(8, round(h * f)), max(8, round(w * f))))
    x = _noise(x, rng, 1 + 29 * s, 0.05 + 2.95 * s)
    x = _jpeg(x, rng, int(95 - 65 * s))

    # Second round: the trip to the web.
    if rng.random() < 0.8:
        x = _blur(x, rng, 0.2, 0.3 + 1.2 * s)
    r = rng.random()
    f = rng.uniform(1, 1.2) if r < 0.3 else rng.uniform(max(0.3, 1 - 0.7 * s), 1) if r < 0.7 else 1.0
    x = _resize(x, rng, (max(8, round(h / scale * f)), max(8, round(w / scale * f))))
    if rng.random() < 0.8:
        x = _noise(x, rng, 1 + 24 * s, 0.05 + 2.45 * s)
    if rng.random() < 0.5:
        x = _jpeg(_resize(x, rng, out_hw), rng, int(95 - 65 * s))
    else:
        x = _resize(_jpeg(x, rng, int(95 - 65 * s)), rng, out_hw)
    return x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def degrade_fixed(hr: np.ndarray, seed: int, blur: float = 1.2, noise: float = 5, quality: int = 60,
                  scale: int = 4) -> np.ndarray:
    """The benchmark's (and the validation's) real-photo degradation: Gaussian blur of `blur` HR
    pixels, PIL bicubic downscale by `scale`, Gaussian noise of `noise`/255 (seeded), JPEG at
    `quality`. Fixed, unlike the random training pipelines, so runs compare on the same inputs."""
    x = torch.from_numpy(np.array(hr)).permute(2, 0, 1)[None].float().div(255)
    radius = max(4, int(3 * blur + 0.5))
    r = torch.arange(2 * radius + 1, dtype=torch.float32) - radius
    g = torch.exp(-(r**2) / (2 * blur**2))
    k = g[:, None] * g[None, :]
    k = (k / k.sum()).expand(3, 1, *k.shape)
    x = F.conv2d(F.pad(x, (radius,) * 4, mode="reflect"), k, groups=3)
    blurred = x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    size = (hr.shape[1] // scale, hr.shape[0] // scale)
    lr = np.asarray(Image.fromarray(blurred).resize(size, Image.BICUBIC)).astype(np.float64)
    lr += np.random.default_rng(seed).normal(0, noise, lr.shape)
    lr = np.clip(np.round(lr), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))
