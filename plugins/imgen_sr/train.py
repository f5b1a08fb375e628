"""Training recipe for the sr models: `python -m imgen_sr.train --scale 2 --export weights/...`.

fidelity models learn to invert PIL's bicubic downscale (the degradation the PSNR bar is measured
on). The real models are distilled (`--kind distill`) from Real-ESRGAN x4plus: the teacher's
outputs on second-order degraded patches, written once by `python -m imgen_sr.teacher`, are the
targets (see docs/sr.md). `--kind real` is the older recipe that learns the photos themselves from
a one-stage blind blur / downscale / noise / JPEG pipeline, optionally against a patch
discriminator (`--gan`). Every run logs Y-PSNR and edge contrast on centre crops of the held-out
photos (imgen_cli.datasets.VALIDATION) against PIL bicubic upscaling of the same input. Arguments,
schedule, resumable checkpoints (RUN/last.pt) and the export come from `imgen_cli.recipes`.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from imgen_cli import datasets, recipes
from imgen_cli.metrics import psnr, rgb_to_y
from imgen_cli.filters import gaussian_blur
from imgen_sr._net import CompactSR
from imgen_sr.degrade import degrade_fixed, gaussian_kernel

VAL_CROP = 720  # divisible by 2, 3 and 4, so every scale sees the same HR pixels


# --- metrics (shared with the benchmark) ------------------------------------------------------

def psnr_y(a: np.ndarray, b: np.ndarray, border: int) -> float:
    """Y-channel PSNR (BT.601, as SR papers report) of two uint8 RGB images, `border` cropped."""
    return psnr(b, a, channel="y", crop_border=border)


def pil_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of a uint8 RGB array to (width, height)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def crop_to_multiple(img: np.ndarray, m: int) -> np.ndarray:
    return img[: img.shape[0] // m * m, : img.shape[1] // m * m]


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    size = min(size, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return t.clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).numpy()


@torch.no_grad()
def upscale(model: nn.Module, lr: np.ndarray) -> np.ndarray:
    return to_uint8(model(to_tensor(lr)[None])[0])


# --- degradations ------------------------------------------------------------------------------

def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic downscale, the fidelity models' (and the bar's) degradation."""
    return pil_resize(hr, (hr.shape[1] // scale, hr.shape[0] // scale))


#: Strengths of the blind degradation: "full" is Real-ESRGAN's first-order range; "mild" is closer
#: to what phone and web JPEGs show, and a model trained on it hedges less (sharper, and above
#: bicubic on lightly degraded photos too).
DEGRADATIONS = {
    "full": {"max_blur": 3.0, "max_noise": 25.0, "min_quality": 30},
    "mild": {"max_blur": 2.0, "max_noise": 12.0, "min_quality": 40},
}


def degrade_real(hr: np.ndarray, scale: int, rng: np.random.Generator, degradation: str = "full") -> np.ndarray:
    """Blind degradation: blur, resize and noise in random order, then JPEG; returns uint8 LR.

    Real-ESRGAN's observation is that real photos are hurt by several of these at once and in no
    fixed order; training on the shuffled mix is what makes the model sharpen JPEGs instead of
    amplifying their blocks.
    """
    x = to_tensor(hr)[None]
    out_hw = (hr.shape[0] // scale, hr.shape[1] // scale)
    limits = DEGRADATIONS[degradation]

    def blur(x):
        if rng.random() < 0.9:
            k = torch.from_numpy(gaussian_kernel(rng, 0.2, limits["max_blur"])).float()
            p = k.shape[0] // 2
            x = F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), k.expand(3, 1, *k.shape), groups=3)
        return x

    def resize(x):
        mode = rng.choice(["area", "bilinear", "bicubic"])
        if mode == "area":
            return F.interpolate(x, size=out_hw, mode="area")
        return F.interpolate(x, size=out_hw, mode=mode, align_corners=False, antialias=True)

    def noise(x):
        if rng.random() < 0.8:
            sigma = rng.uniform(1, limits["max_noise"]) / 255.0
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            shape = (1, 1, *x.shape[2:]) if rng.random() < 0.4 else x.shape
            x = x + sigma * torch.randn(shape, generator=gen)
        return x

    for i in rng.permutation(3):
        x = (blur, resize, noise)[i](x)
    lr = to_uint8(x[0])
    if rng.random() < 0.9:
        buf = io.BytesIO()
        Image.fromarray(lr).save(buf, format="JPEG", quality=int(rng.integers(limits["min_quality"], 96)))
        lr = np.asarray(Image.open(buf).convert("RGB"))
    return lr


def unsharp(x: torch.Tensor, amount: float, sigma: float) -> torch.Tensor:
    """Unsharp mask of a batch in 0..1: x + amount * (x - Gaussian blur of x), clipped.

    Real-ESRGAN trains on sharpened targets: a network fed blurred and noisy inputs otherwise
    learns the cautious average of every blur it saw, and its edges come out softer than the
    original's.
    """
    blurred = gaussian_blur(x, sigma)
    return (x + amount * (x - blurred)).clamp(0, 1)


# --- data --------------------------------------------------------------------------------------

class Patches:
    """Random aligned (LR, HR) patch pairs from training photos held in RAM as uint8."""

    def __init__(self, photos, scale, patch, kind, rng, degradation="full"):
        self.scale, self.patch, self.kind, self.rng = scale, patch, kind, rng
        self.degradation = degradation
        self.hr = [crop_to_multiple(p, scale) for p in photos]
        # Bicubic LR is computed once per photo with PIL so patches match the test degradation
        # exactly, borders included.
        self.lr = [bicubic_down(p, scale) for p in self.hr] if kind == "fidelity" else None

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.scale, self.patch
        lrs, hrs = [], []
        for _ in range(n):
            i = int(self.rng.integers(len(self.hr)))
            hr_img = self.hr[i]
            top = int(self.rng.integers(hr_img.shape[0] // s - p + 1))
            left = int(self.rng.integers(hr_img.shape[1] // s - p + 1))
            hr = hr_img[top * s : (top + p) * s, left * s : (left + p) * s]
            if self.kind == "fidelity":
                lr = self.lr[i][top : top + p, left : left + p]
            else:
                lr = degrade_real(hr, s, self.rng, self.degradation)
            k, flip = int(self.rng.integers(4)), self.rng.random() < 0.5
            lr, hr = np.rot90(lr, k), np.rot90(hr, k)
            if flip:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            lrs.append(to_tensor(lr))
            hrs.append(to_tensor(hr))
        return torch.stack(lrs), torch.stack(hrs)


class TeacherPatches:
    """(LR, target, HR) patch triples from the teacher's shards (`imgen_sr.teacher`).

    The shards hold 72x72 degraded inputs, the teacher's x4 outputs and the original crops. A
    random `patch`-sized window of each is drawn (with flips and 90-degree turns); at `scale` 2 the
    x4 targets and originals are downscaled by two (antialiased bicubic), so one set of teacher
    runs trains both factors. New shards written while training runs are picked up by `refresh`.
    """

    def __init__(self, folder, scale, patch, rng, max_strength=1.0):
        self.folder, self.scale, self.patch, self.rng = Path(folder), scale, patch, rng
        self.max_strength = max_strength
        self.loaded: set[str] = set()
        self.lr, self.target, self.hr = [], [], []
        self.refresh()
        if not self.lr:
            raise SystemExit(f"no teacher shards in {self.folder}: run `python -m imgen_sr.teacher` first")

    def refresh(self) -> int:
        for path in sorted(self.folder.glob("shard_*[0-9].npz")):
            if path.name in self.loaded:
                continue
            with np.load(path) as z:
                keep = z["strength"] <= self.max_strength
                if keep.any():
                    self.lr.append(z["lr"][keep])
                    self.target.append(z["teacher"][keep])
                    self.hr.append(z["hr"][keep])
            self.loaded.add(path.name)
        return sum(len(a) for a in self.lr)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.patch
        lrs, tgts, hrs = [], [], []
        for _ in range(n):
            i = int(self.rng.integers(len(self.lr)))
            j = int(self.rng.integers(len(self.lr[i])))
            lr_full = self.lr[i][j]
            top = int(self.rng.integers(lr_full.shape[0] - p + 1))
            left = int(self.rng.integers(lr_full.shape[1] - p + 1))
            lr = lr_full[top : top + p, left : left + p]
            tgt = self.target[i][j][top * 4 : (top + p) * 4, left * 4 : (left + p) * 4]
            hr = self.hr[i][j][top * 4 : (top + p) * 4, left * 4 : (left + p) * 4]
            k, flip = int(self.rng.integers(4)), self.rng.random() < 0.5
            lr, tgt, hr = np.rot90(lr, k), np.rot90(tgt, k), np.rot90(hr, k)
            if flip:
                lr, tgt, hr = lr[:, ::-1], tgt[:, ::-1], hr[:, ::-1]
            lrs.append(to_tensor(lr))
            tgts.append(to_tensor(tgt))
            hrs.append(to_tensor(hr))
        lr, tgt, hr = torch.stack(lrs), torch.stack(tgts), torch.stack(hrs)
        if self.scale != 4:
            size = (p * self.scale, p * self.scale)
            tgt = F.interpolate(tgt, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            hr = F.interpolate(hr, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return lr, tgt, hr


def validation_pairs(photos, scale, kind, seed):
    """(LR, HR) uint8 centre crops of the held-out photos, degraded like the model's test set."""
    rng = np.random.default_rng(seed + 1000)
    pairs = []
    for i, p in enumerate(photos):
        hr = centre_crop(p, VAL_CROP)
        if kind == "fidelity":
            lr = bicubic_down(hr, scale)
        elif kind == "distill":
            # The benchmark's fixed degradation, so the log predicts the benchmark's numbers.
            lr = degrade_fixed(hr, i, scale=scale)
        else:
            lr = degrade_real(hr, scale, rng)
        pairs.append((lr, hr))
    return pairs


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


def validate(model, pairs, scale) -> tuple[float, float, float]:
    """Mean Y-PSNR (model, PIL bicubic) and the model's edge contrast over the validation pairs,
    `scale` border cropped."""
    model.eval()
    ours, bic, edges = [], [], []
    for lr, hr in pairs:
        out = upscale(model, lr)
        ours.append(psnr_y(out, hr, scale))
        edges.append(edge_contrast(out, hr, scale))
        bic.append(psnr_y(pil_resize(lr, (hr.shape[1], hr.shape[0])), hr, scale))
    model.train()
    return float(np.mean(ours)), float(np.mean(bic)), float(np.mean(edges))


# --- GAN ---------------------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """Spectral-norm patch discriminator: one real/fake logit per ~40-pixel receptive field.

    Args:
        channels: width of the first layer, doubled at each stride-2 stage (default 16).
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        sn = nn.utils.spectral_norm
        c = channels
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, c, 3, padding=1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(c, c * 2, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(c * 2, c * 4, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(c * 4, c * 4, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(c * 4, c * 4, 3, padding=1)), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c * 4, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- training loop -----------------------------------------------------------------------------

def sobel(x: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel gradients of each channel, (N, 2C, H-2, W-2)."""
    k = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=x.dtype)
    k = torch.stack([k, k.t()])[:, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, k, groups=x.shape[1])


def main(argv=None) -> None:
    ap = recipes.arguments(__doc__, run="runs/sr", steps=3000, batch=16, lr=1e-3, val_every=250, save_minutes=3.0)
    ap.add_argument("--scale", type=int, choices=(2, 3, 4), required=True)
    ap.add_argument("--kind", choices=("fidelity", "real", "distill"), default="fidelity",
                    help="distill: learn the teacher's outputs (--teacher shards), for the real models")
    ap.add_argument("--patch", type=int, default=48, help="LR patch size")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--gan", type=float, default=0.0, help="adversarial loss weight (0: pixel loss only)")
    ap.add_argument("--degradation", choices=sorted(DEGRADATIONS), default="full",
                    help="strength range of the real kind's training degradation")
    ap.add_argument("--usm", type=float, default=0.0,
                    help="train towards unsharp-masked targets of this amount (0: the photos as they are)")
    ap.add_argument("--usm-sigma", type=float, default=1.5, help="blur sigma of the unsharp mask, HR pixels")
    ap.add_argument("--disc-channels", type=int, default=16, help="width of the discriminator's first layer")
    ap.add_argument("--teacher", default="runs/sr/teacher", help="distill: folder of imgen_sr.teacher shards")
    ap.add_argument("--teacher-weight", type=float, default=1.0, help="distill: L1 weight towards the teacher")
    ap.add_argument("--gt-weight", type=float, default=0.0,
                    help="distill: L1 weight towards the original photo (anchors colour and PSNR)")
    ap.add_argument("--grad-weight", type=float, default=0.0,
                    help="distill: L1 weight on the Sobel gradients' difference from the teacher's")
    ap.add_argument("--split-sigma", type=float, default=0.0,
                    help="distill: target = Gaussian(sigma) low-pass of the original + the rest of the "
                         "teacher's output (HR pixels; 0: the teacher's output as it is)")
    ap.add_argument("--max-strength", type=float, default=1.0,
                    help="distill: train only on shard patches degraded at most this strongly (0..1)")
    ap.add_argument("--edge-weight", type=float, default=0.0,
                    help="distill: weight each pixel's L1 by 1 + this * the target's gradient / its mean, "
                         "so that strong edges, which decide sharpness, dominate the loss")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (2.2x faster on AVX-512 BF16 CPUs)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the training forward (about 25%% faster here after a minute of compiling)")
    ap.add_argument("--refresh-every", type=int, default=200, help="distill: steps between looks for new shards")
    args = ap.parse_args(argv)

    run = recipes.start(args)
    log = recipes.Log(run)
    rng = np.random.default_rng(args.seed)
    train_files, val_files = datasets.split(datasets.image_files(recipes.dataset(args)))
    log(f"{len(train_files)} training photos, {len(val_files)} held out: {[p.stem for p in val_files]}")
    if args.kind == "distill":
        data = TeacherPatches(args.teacher, args.scale, args.patch, rng, args.max_strength)
        log(f"{data.refresh()} teacher patches in {args.teacher}")
    else:
        data = Patches([datasets.load_rgb(p) for p in train_files], args.scale, args.patch, args.kind, rng,
                       args.degradation)
    val = validation_pairs([datasets.load_rgb(p) for p in val_files], args.scale, args.kind, args.seed)

    model = CompactSR(args.scale, args.channels, args.blocks)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    objects = {"model": model, "opt": opt}
    disc = d_opt = None
    if args.gan > 0:
        disc = PatchDiscriminator(args.disc_channels)
        d_opt = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
        objects.update(disc=disc, d_opt=d_opt)
    state = recipes.restore(args, objects, {"data": rng}, log)
    step, best = state["step"], state.get("best", -1.0)
    # The weights the run ships: the best validation PSNR for fidelity and L1 real runs; the
    # latest for GAN and distillation runs, where PSNR would always prefer the softest.
    keep_latest = disc is not None or args.kind == "distill"
    shipped = {k: v.clone() for k, v in model.state_dict().items()}

    if step == 0:
        ours, bic, edge = validate(model, val, args.scale)
        log(f"step 0 val Y-PSNR {ours:.3f} bicubic(PIL) {bic:.3f} gain {ours - bic:+.3f} edge {edge:.3f}")

    def checkpoint():
        recipes.save_checkpoint(run / recipes.CHECKPOINT, step, objects, {"data": rng}, best=best)

    # Validation runs the eager module on whole crops; only the fixed-shape training step is
    # compiled, and the state dict stays the plain module's.
    forward = torch.compile(model) if args.compile else model
    bce = nn.BCEWithLogitsLoss()
    warmup = 0 if args.init or args.gan else 100
    end = recipes.stop_step(args)
    last_ck, t0, run_loss = time.time(), time.time(), 0.0
    while step < end:
        lr = recipes.cosine(step, args.steps, args.lr, warmup=warmup, floor=1e-6)
        recipes.set_lr(opt, lr)
        if args.kind == "distill":
            if step % args.refresh_every == 0:
                data.refresh()
            x, y, hr = data.batch(args.batch)
            if args.split_sigma:
                # The band the input still carries comes from the original photo (colour, tone and
                # the denoised, deJPEGed structure: the teacher shifts these), the band the
                # downscale destroyed from the teacher (the crisp edges and texture it invents).
                y = (gaussian_blur(hr, args.split_sigma) + y - gaussian_blur(y, args.split_sigma))
        else:
            x, y = data.batch(args.batch)
        if args.usm:
            y = unsharp(y, args.usm, args.usm_sigma)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = forward(x)
        out = out.float()
        if args.kind == "distill":
            if args.edge_weight:
                # Where the target has a strong edge the input usually shows it too, so the edge
                # is predictable; weighting it up makes the student commit to a steep edge there
                # instead of the soft compromise plain L1 settles on.
                mag = sobel(y).abs().sum(1, keepdim=True)
                mag = F.pad(mag, (1, 1, 1, 1), mode="replicate")
                w = 1 + args.edge_weight * mag / mag.mean().clamp_min(1e-6)
                loss = args.teacher_weight * ((out - y).abs() * w).mean() / w.mean()
            else:
                loss = args.teacher_weight * F.l1_loss(out, y)
            if args.gt_weight:
                loss = loss + args.gt_weight * F.l1_loss(out, hr)
            if args.grad_weight:
                loss = loss + args.grad_weight * F.l1_loss(sobel(out), sobel(y))
        else:
            loss = F.l1_loss(out, y)
        if disc is not None:
            # Non-saturating GAN on top of L1: L1 keeps colours and structure, the
            # discriminator pushes textures off the blurry mean L1 alone converges to.
            fake_logits = disc(out)
            loss = loss + args.gan * bce(fake_logits, torch.ones_like(fake_logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if disc is not None:
            recipes.set_lr(d_opt, lr)
            real_logits, fake_logits = disc(y), disc(out.detach())
            d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
        step += 1
        run_loss += loss.item()
        if step % 50 == 0:
            log(f"step {step} loss {run_loss / 50:.5f} lr {lr:.2e} {(time.time() - t0) / 50:.2f} s/step")
            run_loss, t0 = 0.0, time.time()
        if step % args.val_every == 0 or step == end:
            ours, bic, edge = validate(model, val, args.scale)
            log(f"step {step} val Y-PSNR {ours:.3f} bicubic(PIL) {bic:.3f} gain {ours - bic:+.3f} edge {edge:.3f}")
            if args.kind == "distill":
                # Every validation's weights are kept: the choice weighs PSNR, edges and NIQE.
                recipes.export(model.state_dict(), run / f"step_{step}.safetensors")
            if ours > best or keep_latest:
                best = max(best, ours)
                shipped = {k: v.clone() for k, v in model.state_dict().items()}
        if time.time() - last_ck > args.save_minutes * 60 or step == end:
            checkpoint()
            last_ck = time.time()
    log(f"exported step {step} to {recipes.export(shipped, recipes.export_path(args))}")


if __name__ == "__main__":
    main()
