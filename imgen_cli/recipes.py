"""What the built-in training recipes (plugins/*/train.py) share: arguments, schedule, checkpoints.

Each recipe keeps its own data, degradation, loss and loop; this module holds only what they
would otherwise each write again, so that `--resume` or `--export` behave the same in all of
them:

- `arguments()`: the common command-line arguments, with the recipe's own defaults;
- `start()`: threads, seeds and the run folder; `Log`: a time-stamped log echoed to RUN/train.log;
- `cosine()`: the learning-rate schedule (optional linear warm-up, optional floor);
- `save_checkpoint()` / `restore()`: atomic, resumable checkpoints holding the model, the
  optimiser, the step and every RNG state (torch, numpy, Python's `random` and the recipe's own
  generators), loaded with `torch.load(weights_only=True)`;
- `export()`: the weights the recipe ships, as safetensors, written atomically.

`--export` means the same in every recipe: when the run stops (at --steps or --stop-at) the
weights the recipe ships are written to that file; its default is RUN/final.safetensors, so a
run never overwrites a shipped weight file unless that file is named. PSNR and SSIM come from
`imgen_cli.metrics`, the implementation the benchmarks and tests use.

Torch is imported inside the functions, so `--help` of a recipe stays quick.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

from .datasets import data_root

CHECKPOINT = "last.pt"


def arguments(doc: str | None, *, run: str, steps: int, batch: int, lr: float, val_every: int = 250,
              save_minutes: float = 3.0) -> argparse.ArgumentParser:
    """An argument parser holding the arguments every recipe takes; the recipe adds its own.

    The keyword arguments are that recipe's defaults. `--resume` alone continues RUN/last.pt;
    `--resume FILE` continues FILE (its step, optimiser and RNG states, so the run goes on
    exactly as if it had not stopped).
    """
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None,
                    help="dataset root holding photos/ (and styles/) (default: imgen_cli.datasets.data_root())")
    ap.add_argument("--run", default=run, help=f"run folder: checkpoints, log, default export (default: {run})")
    ap.add_argument("--steps", type=int, default=steps, help=f"length of the learning-rate schedule (default: {steps})")
    ap.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                    help="save, export and stop after this step, the schedule still spanning --steps")
    ap.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr:g})")
    ap.add_argument("--batch", type=int, default=batch, help=f"patches per step (default: {batch})")
    ap.add_argument("--seed", type=int, default=0, help="seed of every RNG the run uses (default: 0)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default: 1; results can differ bitwise with another count)")
    ap.add_argument("--init", default=None, metavar="FILE",
                    help="start from the matching tensors of a .safetensors file or checkpoint (fine-tuning)")
    ap.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                    help=f"continue a run from CHECKPOINT (default: RUN/{CHECKPOINT})")
    ap.add_argument("--export", default=None, metavar="FILE",
                    help="write the weights the recipe ships here when the run stops (default: RUN/final.safetensors; "
                         "a shipped weight file is only written when named)")
    ap.add_argument("--val-every", type=int, default=val_every, help=f"validate every N steps (default: {val_every})")
    ap.add_argument("--save-minutes", type=float, default=save_minutes,
                    help=f"also save RUN/{CHECKPOINT} this often (default: {save_minutes:g})")
    return ap


def start(args: argparse.Namespace) -> Path:
    """Set the thread count and seed torch, numpy's global RNG and `random`; return the run folder."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def dataset(args: argparse.Namespace, name: str = "photos") -> Path:
    """A folder of the dataset (`photos`, `styles`) under --data or the default data root."""
    return data_root(args.data) / name


def export_path(args: argparse.Namespace) -> Path:
    return Path(args.export) if args.export else Path(args.run) / "final.safetensors"


def stop_step(args: argparse.Namespace) -> int:
    """The step the loop runs to: --steps, or --stop-at when that comes first."""
    return min(args.steps, args.stop_at) if args.stop_at is not None else args.steps


class Log:
    """Time-stamped lines on stdout, appended to RUN/train.log as well so a detached run keeps them."""

    def __init__(self, run: str | os.PathLike):
        self.path = Path(run) / "train.log"

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def cosine(step: int, steps: int, lr: float, *, warmup: int = 0, floor: float = 0.0) -> float:
    """Learning rate at `step` (0-based) of a `steps`-long schedule.

    A linear warm-up over the first `warmup` steps (reaching `lr` at step warmup - 1), then a
    half cosine from `lr` down to `floor`, which it reaches at `steps`.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def as_image(t):
    """A (1, C, H, W) or (C, H, W) tensor -> (H, W, C) float32 array clamped to 0..1, as
    `imgen_cli.metrics` takes images (an unclamped network output is scored as it would be saved)."""
    t = t.detach().float().clamp(0, 1).cpu()
    return (t[0] if t.dim() == 4 else t).permute(1, 2, 0).numpy()


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- RNG states, in forms torch.load(weights_only=True) accepts --------------------------------

def _rng_state(rng):
    import numpy as np
    import torch

    if isinstance(rng, torch.Generator):
        return rng.get_state()
    if isinstance(rng, np.random.Generator):
        # A dict of str and (128-bit) ints: plain data, unlike the legacy state's ndarray.
        return rng.bit_generator.state
    raise TypeError(f"not an RNG: {type(rng).__name__}")


def _set_rng_state(rng, state) -> None:
    import torch

    if isinstance(rng, torch.Generator):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state


def rng_states(rngs: dict | None = None) -> dict:
    """Every RNG state a run depends on: torch's, numpy's global one, `random`'s and `rngs`."""
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        # weights_only refuses ndarrays, so the Mersenne Twister keys travel as a tensor.
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "random": random.getstate(),
        "own": {k: _rng_state(v) for k, v in (rngs or {}).items()},
    }


def set_rng_states(states: dict, rngs: dict | None = None) -> None:
    """Restore what `rng_states` saved (the named `rngs` are restored in place)."""
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["random"])
    for k, v in (rngs or {}).items():
        _set_rng_state(v, states["own"][k])


# --- checkpoints and exports --------------------------------------------------------------------

def _replace(write, path: Path) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`.

    A run killed while saving leaves the previous file whole, never a truncated one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike, step: int, objects: dict, rngs: dict | None = None, **extra) -> None:
    """Save a resumable checkpoint atomically.

    Args:
        path: the checkpoint file (RUN/last.pt by convention).
        step: steps done.
        objects: name -> anything with `state_dict()` (the model, optimisers, a discriminator).
        rngs: name -> the recipe's own torch or numpy generators; the global ones are always saved.
        extra: plain values the recipe needs back (its best validation score, ...).
    """
    import torch

    ck = {"step": step, "state": {k: v.state_dict() for k, v in objects.items()},
          "rng": rng_states(rngs), "extra": extra}
    _replace(lambda tmp: torch.save(ck, tmp), Path(path))


def load_checkpoint(path: str | os.PathLike, objects: dict, rngs: dict | None = None) -> dict:
    """Load what `save_checkpoint` wrote into `objects` and `rngs`; return extra with its "step"."""
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in objects.items():
        v.load_state_dict(ck["state"][k])
    set_rng_states(ck["rng"], rngs)
    return {**ck["extra"], "step": int(ck["step"])}


def init_weights(model, path: str | os.PathLike) -> str:
    """Copy every tensor of `path` whose name and shape match `model`'s; return a line to log.

    `path` is a .safetensors file or a checkpoint of these recipes (its "model").
    """
    import torch
    from safetensors.torch import load_file

    path = str(path)
    state = load_file(path) if path.endswith(".safetensors") else \
        torch.load(path, map_location="cpu", weights_only=True)["state"]["model"]
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return f"initialised {len(matched)}/{len(own)} tensors from {path}"


def restore(args: argparse.Namespace, objects: dict, rngs: dict | None = None, log=print) -> dict:
    """Apply --resume or --init: return the checkpoint's extra values and "step" (0 on a fresh start).

    --init loads into objects["model"]; it is ignored when resuming, whose checkpoint already
    holds what the run started from.
    """
    if args.resume is not None:
        path = Path(args.resume or Path(args.run) / CHECKPOINT)
        state = load_checkpoint(path, objects, rngs)
        log(f"resumed {path} at step {state['step']}")
        return state
    if args.init:
        log(init_weights(objects["model"], args.init))
    return {"step": 0}


def export(state: dict, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write a state dict (or any dict of tensors) as safetensors, atomically; return the path."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = Path(path)
    _replace(lambda tmp: save_file(tensors, str(tmp), metadata=metadata), path)
    return path
