"""Running commands on images: device and precision, the model cache, tiling, alpha and grey.

torch is imported inside functions only: this module is imported by the CLI, and `imgen --help`
must not pay for torch.

Tiling. An image larger than the tile size is cut into equal tiles that overlap by at least
`2 * overlap + feather` pixels. Each pair of neighbours is blended with a linear ramp `feather`
pixels wide centred in their overlap, which lies at least `overlap` pixels inside both tiles, so
for a process function whose receptive field fits in `overlap` the blend mixes identical values
and tiled output equals untiled output up to float rounding. The 1-D ramps of neighbours sum to
one, and 2-D weights are products of 1-D ones, so no weight map needs to be accumulated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .contract import PRECISIONS, Command, Context, Loaded, Model, Tiling
from .errors import DeviceError, ImgenError, PluginError, UsageError, reason
from .filters import BandResize, resize

DTYPES = dict(zip(PRECISIONS, ("float32", "float16", "bfloat16")))
MIN_TILE = 32
# --tile auto never goes below this: smaller tiles spend too much time on their overlaps. It is
# reached when the image and its output leave little of the budget (sr x4 of 24 MP: 1.07 GiB of
# output); sr x4 of a 1500x1000 image took 61 s of CPU with 256- and 512-pixel tiles, 42 s with
# 384 (512: 12 s of it page faults). It barely moves sr x4 of 24 MP (2.17 GiB peak with 512,
# 2.15 with 384, when the input was still held as floats): the 1.07 GiB output is most of it.
MIN_AUTO_TILE = 384
# Nor above this on the CPU: larger tiles were no faster (denoise) or slower (restyle on 6 MP:
# 1704-pixel tiles 27.8 s of CPU, 1024-pixel ones 25.8 s, the difference page faults).
MAX_CPU_TILE = 1024
# The CPU memory budget by default (IMGEN_MEMORY): 1.75 GiB, 1.88 GB. The tile estimate is not
# exact (sr x4 of 24 MP peaked at 1.89 GiB on a 2 GiB budget), and with this one a 24 MP photo
# stays under 2 GB in every command (benchmarks/bench_memory.py).
DEFAULT_MEMORY = 7 << 28
# Images with a side below this run padded to it (see pad_small) and are cropped back.
MIN_SIDE = 16
# Float bytes of resized alpha rows at a time on their way into the output (ArraySink.put_alpha).
ALPHA_BAND_BYTES = 16 << 20


@dataclass(frozen=True)
class Step:
    """One step of a pipeline, resolved once when the pipeline is built.

    Args:
        command: the registered command.
        options: its own option values.
        model: the model it runs (a registered one, or one made from a user's weights file that is
            never registered), or None for a command without models.
        blend: `--blend`: how much of the result to keep, mixed with the step's input (sizing.Mix).
        choices: scale -> model, when the step picks its scale per image for a target size.
    """

    command: Command
    options: Mapping[str, Any]
    model: Model | None = None
    blend: float = 1.0
    choices: Mapping[int, Model] = dataclasses.field(default_factory=dict)


class Cancelled(Exception):
    """Raised in a thread still running an image after its batch stopped (Engine.cancelled)."""


class _ReducedPrecisionFailed(Exception):
    """A process call in fp16/bf16 gave non-finite values: the step is redone in fp32."""


def _torch():
    import torch

    return torch


def device_kind(device) -> str:
    """The kind of device the precision policy plans for (tests fake a GPU on the CPU here)."""
    return device.type


def choose_precision(precision: str, kind: str, supported: tuple[str, ...]) -> str:
    """--precision for one model: as asked, else fp32 on CPUs and the first reduced precision the
    model supports on GPUs."""
    if precision != "auto":
        return precision
    if kind == "cpu":
        return "fp32"
    return next((p for p in PRECISIONS[1:] if p in supported), "fp32")


class Engine:
    """Holds the device, precision policy, tiling policy and loaded models of one process.

    A model is loaded once per precision: its first load also describes it (scale, size multiple,
    precisions), and the precision a step runs in is fixed at its first image, so every image of
    a batch runs the same way.
    """

    def __init__(self, registry, device: str = "auto", precision: str = "auto", tile: str | int = "auto",
                 threads: int | None = None, info: Callable[[str], None] | None = None,
                 progress: Callable[..., Any] | None = None):
        torch = _torch()
        self.registry = registry
        self.device = resolve_device(device)
        self.precision = precision
        self.tile = parse_tile(tile)
        memory_budget()  # a malformed $IMGEN_MEMORY is a usage error on any device and --tile
        self.info = info or (lambda message: None)
        self.progress = progress
        self._described: dict[tuple[str, str], Loaded] = {}
        self._fresh: dict[tuple[str, str], Loaded] = {}
        self._ready: dict[tuple[tuple[str, str], Any], Loaded] = {}
        self._dtypes: dict[tuple[str, str] | None, Any] = {}
        self._tile_note = ""  # how --tile auto chose the tile size, for --verbose
        # --jobs runs images in threads: a model is loaded, and a precision decided, once.
        self._lock = threading.RLock()
        # Set when a batch stops (Ctrl-C) while --jobs threads still run images: they stop at
        # their next tile instead of finishing images nobody will write.
        self.cancelled = threading.Event()
        if threads:
            torch.set_num_threads(int(threads))

    # -- models ----------------------------------------------------------------------------

    def describe(self, model: Model) -> Loaded:
        """The model's descriptor, loading it on first use (the network is not moved yet)."""
        key = (model.command, model.name)
        with self._lock:
            if key not in self._described:
                if self.device.type not in model.devices:
                    raise DeviceError(f"model {model.name!r} does not run on {self.device.type}")
                self._described[key] = self._fresh[key] = self._load(model)
            return self._described[key]

    def loaded(self, model: Model, dtype) -> Loaded:
        """The model on this device in `dtype`: loaded once per precision, then cached."""
        key = (model.command, model.name)
        with self._lock:
            return self._ready.get((key, dtype)) or self._loaded(model, key, dtype)

    def _loaded(self, model: Model, key, dtype) -> Loaded:
        if (key, dtype) not in self._ready:
            self.describe(model)
            # The first precision takes the network loaded to describe the model; another one (an
            # fp32 retry) loads it afresh, since converting back would keep the rounding.
            fresh = self._fresh.pop(key, None) or self._load(model)
            network = fresh.network
            if hasattr(network, "to"):
                network = network.to(device=self.device, dtype=dtype)
                if fresh.channels_last:
                    network = network.to(memory_format=_torch().channels_last)
            if hasattr(network, "eval"):
                network.eval()
            if hasattr(network, "requires_grad_"):
                network.requires_grad_(False)
            self._ready[(key, dtype)] = dataclasses.replace(fresh, network=network)
        return self._ready[(key, dtype)]

    def _load(self, model: Model) -> Loaded:
        try:
            result = model.load()
        except ImgenError:
            raise
        except Exception as exc:
            raise PluginError(f"model {model.name!r} failed to load: {type(exc).__name__}: {reason(exc)}") from exc
        if isinstance(result, Loaded):
            return result
        return Loaded(result, scale=model.scale, precisions=tuple(model.precisions),
                      channels_last=model.channels_last)

    def dtype(self, step: Step):
        """The precision `step` runs in, decided once (on a GPU with --precision auto, from what
        its model's first load says it supports)."""
        key = (step.model.command, step.model.name) if step.model else None
        with self._lock:
            if key not in self._dtypes:
                kind = device_kind(self.device)
                supported: tuple[str, ...] = ("fp32",)
                if step.model is not None and self.precision == "auto" and kind != "cpu":
                    supported = self.describe(step.model).precisions
                chosen = choose_precision(self.precision, kind, supported)
                self._dtypes[key] = getattr(_torch(), DTYPES[chosen])
                model = f"model {model_label(step.model)}" if step.model else "no model"
                self.info(f"{step.command.name}: {model} on {self.device}, {chosen}")
            return self._dtypes[key]

    def precision_of(self, step: Step) -> str | None:
        """The precision `step` runs in ("fp32", ...), or None before its first image."""
        dtype = self._dtypes.get((step.model.command, step.model.name) if step.model else None)
        return None if dtype is None else PRECISIONS[list(DTYPES.values()).index(str(dtype).split(".")[-1])]

    def _loader(self, step: Step, dtype):
        """ctx.loaded(name): the step's model, or another registered model by name."""
        def load(name: str | None = None) -> Loaded:
            if name is None:
                if step.model is None:
                    raise PluginError(f"command {step.command.name!r} has no model to load")
                return self.loaded(step.model, dtype)
            model = self.registry.models.get(name)
            if model is None:
                raise PluginError(f"command {step.command.name!r} asked for unknown model {name!r}")
            return self.loaded(model, dtype)

        return load

    # -- images ----------------------------------------------------------------------------

    def run(self, array, steps: list[Step], extras: list[dict] | None = None, source: str = "-",
            target=None, used: list | None = None, stream=None):
        """Run a chain of steps on an (H, W, C) uint8/uint16 array; returns an array of the same dtype.

        `extras` holds, per step, its extra image inputs for this image: name -> (H, W, C) array.
        `target` (a sizing.Target) is the size of the output, for which steps with `choices`
        pick their scale and the output is resized; `used`, when given, receives the steps as
        they ran (with the model each chose). `stream` (an io.PngFile, or anything with its
        start/rows/restart/finish and `size`; `rows(band)` may not keep `band`, whose buffer is
        used again) takes the output's rows as they are finished
        instead (alpha included), when the output needs no final resize: then None is returned.
        Between steps the image stays a float tensor (on the device when it fits). The last step
        streams finished rows of tiles straight into the integer output array (through the
        banded resize to `target`), so a large image never holds a full-size float copy of its
        output.
        """
        import numpy as np

        torch = _torch()
        extras = extras or [{} for _ in steps]
        top = 65535.0 if array.dtype == np.uint16 else 255.0
        with torch.inference_mode():
            home = self._home_device(array)
            x = torch.from_numpy(_writable(array)).to(home).permute(2, 0, 1)[None]
            if array.dtype != np.uint8 or x.shape[1] not in (1, 3):
                x = x.float() / top
            # else: 8-bit colour stays bytes; each tile becomes floats as it is processed
            # (_as_float), so no whole float copy of the input sits beside the output (0.27 GiB
            # for 24 MP). Results are the same to the bit.
            alpha = None
            if x.shape[1] in (2, 4):
                x, alpha = x[:, :-1], x[:, -1:]
                x = bleed_colour(x, alpha)
            goal = target.resolve(*array.shape[:2]) if target is not None else None
            for k, step in enumerate(steps):
                last = k == len(steps) - 1
                if goal is not None and step.choices:
                    step = self._choose(step, tuple(x.shape[-2:]), goal)
                if used is not None:
                    used.append(step)
                sink = ArraySink(array.dtype, alpha is not None, goal, stream) if last else TensorSink(home)
                x, alpha = self._run_step(step, extras[k], x, alpha, source, sink)
            return x

    def _choose(self, step: Step, size: tuple[int, int], goal: tuple[int, int]) -> Step:
        """The step with the model of the smallest scale that reaches `goal` from `size`."""
        from .sizing import choose_scale

        scale = choose_scale(step.choices, size, goal)
        self.info(f"{step.command.name}: {step.choices[scale].name} for {size[1]}x{size[0]} -> "
                  f"{goal[1]}x{goal[0]}")
        return dataclasses.replace(step, model=step.choices[scale])

    def _home_device(self, array):
        """Where whole images live between steps: the device if it has room, else the CPU."""
        torch = _torch()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if array.size * 4 * 8 < free * 0.25:
                return self.device
        return torch.device("cpu")

    def _run_step(self, step: Step, extras: dict, x, alpha, source: str, sink):
        torch = _torch()
        command = step.command
        dtype = self.dtype(step)
        grey = x.shape[1] == 1
        if step.blend != 1:
            from .sizing import Mix

            sink.mix = Mix(_as_float(x), step.blend)
        try:
            try:
                ctx = self._attempt(step, extras, x, alpha, dtype, source, sink.reset(grey))
                if dtype != torch.float32 and sink.black(x):
                    raise _ReducedPrecisionFailed
            except _ReducedPrecisionFailed:
                self.info(f"{command.name}: reduced precision gave NaN or black output, retrying in fp32")
                ctx = self._attempt(step, extras, x, alpha, torch.float32, source, sink.reset(grey))
        except ImgenError:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise ImgenError(f"{command.name}: out of memory (try a smaller --tile)", source) from exc
            raise ImgenError(f"{command.name} failed: {type(exc).__name__}: {exc}", source) from exc
        if alpha is not None:
            alpha = _output_alpha(ctx, alpha, sink.crop)
        out = sink.result()
        if alpha is not None:
            alpha = sink.put_alpha(alpha)
        return out, alpha

    def _attempt(self, step: Step, extras: dict, x, alpha, dtype, source: str, sink):
        torch = _torch()
        command = step.command
        reduced = dtype != torch.float32
        ctx = Context(command, step.options, self.device, dtype, source, loader=self._loader(step, dtype),
                      info=self.info)
        ctx.alpha = alpha.to(self.device) if (alpha is not None and command.alpha == "keep") else None
        # The alpha the output gets, asked for when its first rows are written (a command sets
        # ctx.output_alpha in an untiled process or in finish, so before that).
        sink.alpha_of = (lambda: _output_alpha(ctx, alpha, sink.crop)) if alpha is not None else None
        ctx.image_size = (int(x.shape[-2]), int(x.shape[-1]))
        if command.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        multiple = ctx.loaded().multiple if step.model is not None else 1
        tiling = command.tiling(ctx) if callable(command.tiling) else command.tiling
        if multiple > tiling.multiple:
            tiling = dataclasses.replace(tiling, multiple=math.lcm(multiple, tiling.multiple))
        ctx.scale = tiling.scale
        tensors = {name: _to_tensor(value, x.device) for name, value in extras.items() if value is not None}
        for spec in command.inputs:
            if spec.spatial and spec.name in tensors and tensors[spec.name].shape[-2:] != x.shape[-2:]:
                got = tensors[spec.name].shape[-2:]
                raise ImgenError(f"--{spec.name} is {got[1]}x{got[0]} but the image is "
                                 f"{x.shape[-1]}x{x.shape[-2]}: sizes must match", source)
        spatial = {s.name for s in command.inputs if s.spatial}
        # Networks need a few pixels of context (a 7x7 filter, a reflection pad): smaller images
        # are padded for the step and the output cropped back, so any image from 1x1 runs.
        height, width = x.shape[-2:]
        sink.crop = None
        if min(height, width) < MIN_SIDE:
            x = pad_small(x)
            tensors = {k: pad_small(v) if k in spatial else v for k, v in tensors.items()}
            ctx.alpha = pad_small(ctx.alpha) if ctx.alpha is not None else None
            sink.crop = (x.shape[-2], x.shape[-1], height, width)
        ctx.inputs = {k: v.to(self.device, dtype) for k, v in tensors.items() if k not in spatial}
        if command.prepare is not None:
            command.prepare(_maybe_to(_as_float(x), self.device), ctx)
        per_channel = command.channels == 1 and x.shape[1] > 1

        def call(batch, crops, offsets):
            batch = _as_float(batch)
            ctx.inputs.update({k: v.to(self.device, dtype) for k, v in crops.items()})
            n, c, h, w = batch.shape
            if per_channel:
                batch = batch.reshape(n * c, 1, h, w)
                offsets = [o for o in offsets for _ in range(c)]
            ctx.offsets = tuple(offsets)
            out = command.process(batch.to(self.device, dtype), ctx)
            _check(out, command, (batch.shape[0], batch.shape[1], h * tiling.scale, w * tiling.scale),
                   "process", reduced, source)
            if per_channel:
                out = out.reshape(n, c, *out.shape[-2:])
            return out.float()

        spatial_tensors = {k: v for k, v in tensors.items() if k in spatial}
        label = command.name if source in ("-", "") else f"{source}: {command.name}"
        target = sink if command.finish is None else TensorSink(x.device).reset(False)
        size = command.output_size(ctx) if command.output_size is not None else None
        if size is not None:
            if not (len(size) == 2 and all(isinstance(n, int) and n >= 1 for n in size)):
                raise PluginError(f"{command.name}: output_size returned {size!r}, not (height, width) >= 1", source)
            if tuple(size) != (height * tiling.scale, width * tiling.scale):
                target = ResizeSink(target, tuple(size))
        if command.finish is None:
            self._tiled(call, x, spatial_tensors, tiling, target, label)
            return ctx
        whole = target.inner if isinstance(target, ResizeSink) else target
        self._tiled(call, x, spatial_tensors, tiling, target, label)
        y = whole.result()
        expected = (*y.shape[:2], None, None)  # finish may resize
        y = command.finish(y.to(self.device, dtype), ctx)
        _check(y, command, expected, "finish", reduced, source)
        y = y.float()
        sink.open(tuple(y.shape[-2:]))
        sink.write(0, y)
        return ctx

    def tile_size(self, tiling: Tiling, held: int = 0, channels: int = 3) -> int:
        """Tile side in input pixels; 0 means the whole image in one call.

        On the CPU the memory budget (`IMGEN_MEMORY`) is for the whole process: tiles get what is
        left once what the process holds now (interpreter, torch, models, the decoded image and
        its float copy) and `held` (buffers the step will still allocate: the output array, the
        overlaps) are taken out, from MIN_AUTO_TILE to MAX_CPU_TILE pixels a side. A tile costs its process call (`bytes_per_pixel`) plus the
        engine's float copies of its output (three at `channels` x 4 bytes per output pixel).
        """
        self._tile_note = ""
        if not tiling.tileable or self.tile == 0:
            return 0
        if isinstance(self.tile, int):
            return self.tile
        torch = _torch()
        per_pixel = max(tiling.bytes_per_pixel, 1) + 3 * tiling.scale ** 2 * channels * 4
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            left = free * 0.5
        else:
            budget = memory_budget()
            left = min(budget - _resident_memory() - held, _available_memory() * 0.25)
            side = max(MIN_AUTO_TILE, min(int(math.sqrt(max(left, 0) / per_pixel)), MAX_CPU_TILE))
            if left < per_pixel * MIN_AUTO_TILE ** 2:
                self._tile_note = (f", beyond the {budget / 2**30:.3g} GiB memory budget (IMGEN_MEMORY): the image and "
                                   "its output take most of it")
            else:
                self._tile_note = f", from {left / 2**20:.0f} MiB of the {budget / 2**30:.3g} GiB memory budget (IMGEN_MEMORY)"
            return side
        return max(MIN_AUTO_TILE, min(int(math.sqrt(left / per_pixel)), 4096))

    def _tiled(self, call, x, extras: dict, tiling: Tiling, sink, name: str = ""):
        import torch.nn.functional as F

        torch = _torch()
        height, width = x.shape[-2:]
        sink.open((height * tiling.scale, width * tiling.scale))
        m = max(1, tiling.multiple)
        # Pad once for the whole image, so every tile starts on a multiple too: networks that
        # pixel-unshuffle are not shift-invariant at finer offsets. The sink crops the padding.
        ph, pw = -height % m, -width % m
        if ph or pw:
            mode = "reflect" if ph < height and pw < width else "replicate"
            x = F.pad(_as_float(x), (0, pw, 0, ph), mode=mode)
            extras = {k: F.pad(v, (0, pw, 0, ph), mode=mode) for k, v in extras.items()}
        channels = x.shape[1]
        tile = self.tile_size(tiling, sink.expected_bytes(channels) + _carry_bytes(tiling, width, channels),
                              channels)
        while True:
            try:
                if tile == 0 or (tile >= x.shape[-2] and tile >= x.shape[-1]):
                    self.info(f"{name}: 1 tile (the whole {x.shape[-1]}x{x.shape[-2]} image)")
                    sink.write(0, call(x, extras, [(0, 0)] * x.shape[0]))
                else:
                    self._run_tiles(call, x, extras, tiling, tile, sink, name)
                return
            except Exception as exc:
                if not (_is_oom(exc) and tiling.tileable):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = (tile or max(height, width)) // 2
                if smaller < MIN_TILE + 2 * tiling.overlap:
                    raise
                self.info(f"out of memory with {tile or 'whole-image'} tiles, retrying with {smaller}")
                tile = smaller
                sink.reset(sink.grey).open((height * tiling.scale, width * tiling.scale))

    def _run_tiles(self, call, x, extras: dict, tiling: Tiling, tile: int, sink, name: str = ""):
        """Process tiles row by row, handing each finished rectangle of output to the sink.

        A pixel is final once every tile covering it is added in: the columns a tile shares with
        its right neighbour wait in `left`, the rows a tile row shares with the next row wait in
        `carry` (full width, the overlap's height), and everything else goes to the sink at once.
        So no float copy of a whole band of tiles is held, only the overlaps. Each pixel sums its
        contributions in the order a full-width band would (rows above first, then left to
        right), so the result is the same to the bit.
        """
        torch = _torch()
        s = tiling.scale
        height, width = x.shape[-2:]
        ys, feather = _windows(height, tile, tiling.overlap, tiling.multiple)
        xs, _ = _windows(width, tile, tiling.overlap, tiling.multiple)
        wx = [_weights(xs, j, s, feather, x.device) for j in range(len(xs))]
        batch = self._batch_size(tiling, tile)
        n = x.shape[0]
        self.info(f"{name}: {len(ys) * len(xs)} tiles of {xs[0][1] - xs[0][0]}x{ys[0][1] - ys[0][0]} px{self._tile_note}")
        bar = self.progress(total=len(ys) * len(xs), desc="tiles", unit="tile") if self.progress else None
        carry = None  # float rows [y0 * s, y0 * s + carry rows) of the current tile row, from the row above
        try:
            for i, (y0, y1) in enumerate(ys):
                wy = _weights(ys, i, s, feather, x.device)
                below = ys[i + 1][0] if i + 1 < len(ys) else y1  # rows from here on await the next row
                final = (below - y0) * s
                next_carry, left = None, None
                for start in range(0, len(xs), batch):
                    if self.cancelled.is_set():
                        raise Cancelled
                    cols = range(start, min(start + batch, len(xs)))
                    tiles = torch.cat([x[..., y0:y1, xs[j][0]:xs[j][1]] for j in cols])
                    crops = {k: torch.cat([v[..., y0:y1, xs[j][0]:xs[j][1]] for j in cols]) for k, v in extras.items()}
                    offsets = [(y0, xs[j][0]) for j in cols for _ in range(n)]
                    results = call(tiles, crops, offsets).to(x.device)
                    for k, j in enumerate(cols):
                        x0, x1 = xs[j]
                        acc = torch.zeros((n, results.shape[1], (y1 - y0) * s, (x1 - x0) * s),
                                          dtype=torch.float32, device=x.device)
                        done = 0  # columns of acc already holding the tiles to the left (and carry)
                        if left is not None:
                            done = left.shape[-1]
                            acc[..., :done] = left
                        if carry is not None:
                            acc[..., : carry.shape[-2], done:] = carry[..., x0 * s + done:x1 * s]
                        acc += results[k * n:(k + 1) * n] * (wy[:, None] * wx[j][None, :])
                        right = (xs[j + 1][0] - x0) * s if j + 1 < len(xs) else acc.shape[-1]
                        sink.write(y0 * s, acc[..., :final, :right], x0 * s)
                        if final < acc.shape[-2]:
                            if next_carry is None:
                                next_carry = torch.empty((n, acc.shape[1], acc.shape[-2] - final, width * s),
                                                         dtype=torch.float32, device=x.device)
                            next_carry[..., x0 * s:x0 * s + right] = acc[..., final:, :right]
                        left = acc[..., right:].clone() if right < acc.shape[-1] else None
                    if bar is not None:
                        bar.update(len(cols))
                carry = next_carry
        finally:
            if bar is not None:
                bar.close()

    def _batch_size(self, tiling: Tiling, tile: int) -> int:
        if self.device.type != "cuda":
            return 1
        torch = _torch()
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(16, int(free * 0.5 / (tiling.bytes_per_pixel * tile * tile))))


class _Sink:
    """What the sinks of a step's output share: the grey flag, the crop of a padded small image,
    the --blend (`mix`), the expected size, whole rows for the steps that need them, and the
    check for black output. A sink gets `reset(grey)`, `open(size)`, then `write(row, band, col)`
    for each finished rectangle of output, and gives `result()`."""

    greys = True  # RGB output of a grey image becomes grey here

    def __init__(self):
        self.grey = False
        self.crop = None  # (padded h, padded w, h, w) when the step ran on a padded image
        self.mix = None  # sizing.Mix for --blend
        self.alpha_of = None  # () -> the alpha plane of the output, for an image with alpha (set per run)

    def reset(self, grey: bool):
        self.grey, self.out, self.size, self.seen = grey, None, None, False
        return self

    def open(self, size, exact: bool = False):
        """Expect an output of `size`, which still holds the padding of a small image unless `exact`."""
        self.size = tuple(size) if exact else _cropped(size, self.crop)
        self.rows = _Rows(self.size[1])

    def _bands(self, row: int, band, col: int, whole_rows: bool, clamp: bool):
        """(row, col, piece) of a written rectangle, cropped, greyed and blended; with
        `whole_rows` (or a blend, which works on whole rows) only once a band's rows are complete."""
        band = _finish_band(band, self.grey and self.greys, self.size, row, col, clamp=clamp)
        if band is None:
            return
        if self.mix is not None or whole_rows:
            band, col = self.rows.add(band, col), 0
            if band is None:
                return
        for row, piece in _mixed(self, row, band):
            yield row, col, piece

    def black(self, x) -> bool:
        """All zero for an input that is not (reduced precision can underflow to black)."""
        if self.mix is not None:
            return not self.seen and float(x.max()) > 0.0
        return self._all_zero() and float(x.max()) > 0.0

    def result(self):
        return self.out


class TensorSink(_Sink):
    """Collects a step's output rows into one float tensor (for the next step of a chain)."""

    def __init__(self, device):
        super().__init__()
        self.device = device

    def write(self, row: int, band, col: int = 0) -> None:
        for row, col, piece in self._bands(row, band, col, whole_rows=False, clamp=True):
            if self.out is None:
                self.out = _torch().empty((piece.shape[0], piece.shape[1], *self.size), device=self.device)
            self.out[..., row:row + piece.shape[-2], col:col + piece.shape[-1]] = piece.to(self.device)

    def expected_bytes(self, channels: int) -> int:
        """Memory the output will still take (a float tensor of `size`)."""
        return 0 if self.out is not None else self.size[0] * self.size[1] * channels * 4

    def _all_zero(self) -> bool:
        return float(self.out.abs().max()) == 0.0

    def put_alpha(self, alpha):
        """The alpha plane (N, 1, h, w) for the next step: resized whole to this output's size."""
        return alpha if tuple(alpha.shape[-2:]) == self.size else resize(alpha, self.size)


class ArraySink(_Sink):
    """Quantizes a step's output rows straight into the final (H, W, C) integer array; with a
    `final` size (h, w) other than the step's, through a banded resize (sizing.Resampler).

    With a `stream` (see Engine.run) and no final resize, no array is made: each band of rows
    goes to the stream as soon as its last rectangle is in, with its rows of alpha, if any."""

    def __init__(self, dtype, alpha: bool, final: tuple[int, int] | None = None, stream=None):
        super().__init__()
        self.dtype, self.alpha = dtype, alpha
        self.top = 65535.0 if str(dtype) == "uint16" else 255.0
        self.final = tuple(final) if final else None
        self.stream, self.streaming = stream, False

    def reset(self, grey: bool):
        self.resampler = None
        if self.streaming and self.stream.size is not None:
            self.stream.restart()  # a retry (smaller tiles, fp32) writes the rows again
        self.streaming, self.band, self.nonzero, self.alpha_rows = False, None, False, None
        self.spare = None  # the last band's buffer, used again (the stream copies what it keeps)
        return super().reset(grey)

    def open(self, size, exact: bool = False):
        super().open(size, exact)
        self.resampler = None
        if self.final is not None and self.final != self.size:
            from .sizing import Resampler

            self.resampler = Resampler(self.final)
            self.resampler.open(self.size)
        self.streaming = self.stream is not None and self.resampler is None
        self.next_row = 0  # the first row not yet given to the stream

    def write(self, row: int, band, col: int = 0) -> None:
        for row, col, piece in self._bands(row, band, col, whole_rows=self.resampler is not None, clamp=False):
            self.colours = piece.shape[1]
            if self.resampler is not None:
                self.resampler.write(row, piece)
            else:
                self._put(row, col, piece)

    def expected_bytes(self, channels: int) -> int:
        """Memory the output array (and a resize's float intermediate) will still take; streamed,
        a band of rows as high as the largest tile's output, beside the stream's own."""
        if self.streaming:
            return (self.size[1] * (channels + self.alpha) * (2 if self.top > 255 else 1)
                    * min(self.size[0], MAX_CPU_TILE * 4))
        if self.out is not None:
            return 0
        height, width = self.final or self.size
        total = height * width * (channels + self.alpha) * (2 if self.top > 255 else 1)
        if self.resampler is not None:
            total += self.size[0] * width * channels * 4
        return total

    def _put(self, row: int, column: int, band) -> None:
        import numpy as np

        if self.streaming:
            return self._stream(row, column, band)
        if self.out is None:
            channels = band.shape[1] + (1 if self.alpha else 0)
            self.out = np.empty((*(self.final or self.size), channels), dtype=self.dtype)
        rows, columns = band.shape[-2:]
        self.out[row:row + rows, column:column + columns, :band.shape[1]] = _quantize(
            band[0].permute(1, 2, 0), self.top, self.dtype)

    def _stream(self, row: int, column: int, band) -> None:
        """A rectangle into the band of rows being put together; the band to the stream once full.
        Rectangles come band by band, top to bottom, and left to right within a band."""
        import numpy as np

        rows, columns = band.shape[-2:]
        if self.band is None:
            if row != self.next_row:
                raise RuntimeError(f"output rows out of order: {row} after {self.next_row}")
            channels = band.shape[1] + self.alpha
            if self.stream.size is None:
                self.stream.start(*self.size, channels, self.dtype)
            shape = (rows, self.size[1], channels)
            fits = self.spare is not None and self.spare.shape == shape
            self.band, self.filled = (self.spare if fits else np.empty(shape, dtype=self.dtype)), 0
        elif row != self.next_row or rows != len(self.band):
            raise RuntimeError(f"output rectangle {rows} rows at {row} in the band of {len(self.band)} at {self.next_row}")
        values = _quantize(band[0].permute(1, 2, 0), self.top, self.dtype)
        self.band[:, column:column + columns, :values.shape[-1]] = values
        self.nonzero = self.nonzero or bool(values.any())
        self.filled += columns
        if self.filled == self.size[1]:
            if self.alpha:
                if self.alpha_rows is None:
                    self.alpha_rows = _AlphaRows(self.alpha_of(), self.size)
                self.band[..., -1] = _quantize(self.alpha_rows.take(row, rows)[0, 0], self.top, self.dtype)
            self.stream.rows(self.band)
            self.spare, self.band, self.next_row = self.band, None, row + rows

    def _all_zero(self) -> bool:
        if self.streaming:
            return not self.nonzero
        if self.resampler is not None:
            return float(self.resampler.mid.abs().max()) == 0.0
        return not self.out[:, :, :self.colours].any()

    def result(self):
        """The output array; None when it went to the stream (which is then finished)."""
        if self.streaming:
            if self.next_row != self.size[0]:
                raise RuntimeError(f"output streamed {self.next_row} of {self.size[0]} rows")
            self.stream.finish()
            return None
        if self.resampler is not None and self.out is None:
            for column, band in self.resampler.columns():
                self._put(0, column, band)
        return self.out

    def put_alpha(self, alpha) -> None:
        """The alpha plane (1, 1, h, w) into the output's last channel, resized as the colour
        was (to the step's size, then to `final`) band by band: a whole-size float alpha of an
        upscaled image would cost 4 bytes an output pixel (1.5 GB for sr x4 of 24 MP). Streamed,
        it went out with the colour."""
        if self.streaming:
            return
        for top, band in _AlphaRows(alpha, self.size, self.final).bands:
            self.out[top:top + band.shape[-2], :, -1] = _quantize(band[0, 0], self.top, self.dtype)


class _AlphaRows:
    """An alpha plane (1, 1, h, w) resized to each of `sizes` in turn (None or the size it has:
    skipped), band by band: `bands` yields (top, rows) as the resizes finish them, `take` hands
    out given rows in order (a streamed output's, as its colour rows are finished). Only a few
    bands are ever resized and held, on the CPU."""

    def __init__(self, alpha, *sizes):
        height, width = alpha.shape[-2:]
        self.stages, size = [], (height, width)
        for target in sizes:
            if target is not None and tuple(target) != size:
                self.stages.append(BandResize(size, tuple(target)))
                size = tuple(target)
        rows = max(1, ALPHA_BAND_BYTES // (4 * max(width, size[1]) * (size[0] // height + 1)))
        self.bands = self._resized(alpha, rows)
        self.ready, self.top = None, 0  # resized rows [top, top + len(ready)) not handed out yet

    def _resized(self, alpha, rows: int):
        for start in range(0, alpha.shape[-2], rows):
            done = (start, alpha[..., start:start + rows, :].cpu())
            for stage in self.stages:
                done = stage.push(done[1])
                if done is None:
                    break
            else:
                yield done

    def take(self, row: int, rows: int):
        """Output rows [row, row + rows) as a float (1, 1, rows, W) tensor; rows come in order."""
        while self.ready is None or self.top + self.ready.shape[-2] < row + rows:
            band = next(self.bands, None)
            if band is None:
                raise RuntimeError(f"alpha rows {row}..{row + rows} past the end of the plane")
            self.ready = band[1] if self.ready is None else _torch().cat([self.ready, band[1]], -2)
        start = row - self.top
        piece = self.ready[..., start:start + rows, :]
        self.ready, self.top = self.ready[..., start + rows:, :], row + rows
        return piece


class _Rows:
    """Puts the rectangles of one band of rows, arriving left to right, together into whole rows,
    for the sinks' steps that work on whole rows (a blend, a resize)."""

    def __init__(self, width: int):
        self.width, self.band = width, None

    def add(self, band, col: int):
        """The whole rows once `band` (starting at column `col`) completes them, else None."""
        if col == 0 and band.shape[-1] == self.width:
            return band
        if col == 0:
            self.band = _torch().empty((*band.shape[:-1], self.width), dtype=band.dtype, device=band.device)
        self.band[..., col:col + band.shape[-1]] = band
        if col + band.shape[-1] < self.width:
            return None
        band, self.band = self.band, None
        return band


def _mixed(sink, row: int, band):
    """(row, piece) of `band` blended with the step's input (--blend), in pieces of rows so the
    blend's temporaries stay small however large the band; first noting whether the result had
    any non-zero value (`black` must judge the network's output, not the blend)."""
    if sink.mix is None:
        yield row, band
        return
    sink.seen = sink.seen or bool(band.any())
    rows = max(1, (1 << 22) // max(1, band[0, 0].numel() // band.shape[-2]))
    for start in range(0, band.shape[-2], rows):
        yield row + start, sink.mix(row + start, band[..., start:start + rows, :], sink.size)


def model_label(model: Model) -> str:
    """A model as messages and records name it: its registered name, or a user file's name."""
    return os.path.basename(model.weights) if model.name.startswith("file:") and model.weights else model.name


class ResizeSink(_Sink):
    """Resizes a step's output on its way to another sink (`Command.output_size`), band by band.

    Rectangles arrive row band by row band, left to right; a band's rows go to the resizer once
    its last rectangle is in, and the output rows they complete go on to `inner`, which keeps
    the output, turns it grey and blends it (--blend).
    """

    greys = False  # the inner sink does, after the resize

    def __init__(self, inner, size):
        self.inner, self.target = inner, tuple(size)
        self.grey = inner.grey
        self.mix = None

    @property
    def crop(self):
        return self.inner.crop

    def reset(self, grey: bool):
        self.inner.reset(grey)
        return super().reset(grey)

    def open(self, size):
        # The padding of a small image is cropped before the resize, not after.
        super().open(size)
        self.inner.open(self.target, exact=True)
        self.resizer = BandResize(self.size, self.target)

    def write(self, row: int, band, col: int = 0) -> None:
        for _, _, piece in self._bands(row, band, col, whole_rows=True, clamp=True):
            done = self.resizer.push(piece)
            if done is not None:
                self.inner.write(*done)

    def expected_bytes(self, channels: int) -> int:
        return self.inner.expected_bytes(channels)

    def black(self, x) -> bool:
        return self.inner.black(x)

    def result(self):
        return self.inner.result()


def pad_small(t):
    """Pad (N, C, H, W) on the bottom and right to at least MIN_SIDE a side: by reflection where
    the image is large enough to reflect, else by repeating its edge pixels."""
    import torch.nn.functional as F

    height, width = t.shape[-2:]
    ph, pw = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
    mode = "reflect" if ph < height and pw < width else "replicate"
    return F.pad(t.float(), (0, pw, 0, ph), mode=mode).to(t.dtype)


def _output_alpha(ctx, alpha, crop):
    """The alpha plane a step's output gets: the command's ctx.output_alpha (cropped back from the
    padding of a small image), else the step's input `alpha`, both still at the step's input size."""
    if ctx.output_alpha is None:
        return alpha
    out = ctx.output_alpha.detach().float().clamp(0, 1).to(alpha.device)
    if crop is not None:
        rows, cols = _cropped(out.shape[-2:], crop)
        out = out[..., :rows, :cols]
    return out


def _cropped(size, crop) -> tuple[int, int]:
    """An output size of a padded run brought back to the unpadded image's share of it."""
    if crop is None:
        return tuple(size)
    padded_h, padded_w, height, width = crop
    return (max(1, round(size[0] * height / padded_h)), max(1, round(size[1] * width / padded_w)))


def _finish_band(band, grey: bool, size, row: int, col: int = 0, clamp: bool = True):
    """Crop padding beyond the output size, turn RGB back into grey for grey images, clamp."""
    band = band[..., : max(0, size[0] - row), : max(0, size[1] - col)]
    if band.shape[-2] == 0 or band.shape[-1] == 0:
        return None
    if grey and band.shape[1] == 3:
        band = 0.299 * band[:, :1] + 0.587 * band[:, 1:2] + 0.114 * band[:, 2:3]
    return band.clamp(0, 1) if clamp else band


_ROUNDER = float(1 << 23)


def _quantize(values, top: float, dtype):
    """Float 0..1 to integers, rounding, in row chunks to bound the temporary memory."""
    import numpy as np

    torch = _torch()
    out = np.empty(tuple(values.shape), dtype=dtype)
    via = torch.uint8 if out.dtype == np.uint8 else torch.uint16
    step = max(1, (1 << 24) // max(1, values[0].numel()))
    for start in range(0, values.shape[0], step):
        # One copy, then in place: `values` itself is never touched.
        chunk = values[start:start + step].to(torch.float32, copy=True)
        # Round half to even as torch.round does, by adding and taking away 2**23 (float32 has no
        # fraction bits left there); round_ costs milliseconds of CPU per call on some builds,
        # which adds up over the many small rectangles of a tiled run.
        chunk = chunk.nan_to_num_(0).clamp_(0, 1).mul_(top).add_(_ROUNDER).sub_(_ROUNDER)
        out[start:start + step] = chunk.to("cpu", via).numpy()
    return out


def _windows(length: int, tile: int, overlap: int, multiple: int) -> tuple[list[tuple[int, int]], int]:
    """Tile windows along one axis for a receptive-field radius `overlap`, and the feather width.

    Neighbours overlap by both radii plus a feather over which `_weights` ramps from one to the
    other. Windows advance by at least the feather, so no pixel lies in two ramps and the weights
    sum to one: `_spans` keeps neighbours at least half a stride (less a multiple) apart, so the
    stride must be at least twice the feather plus that multiple; a `tile` too small is enlarged.
    """
    feather = max(2, overlap // 2)
    margin = 2 * overlap + feather
    m = max(1, multiple)
    # _spans rounds the tile and the stride down to multiples of m, hence the 2 m of slack.
    tile = max(tile, margin + max(MIN_TILE, 2 * (feather + m)) + 2 * m)
    return _spans(length, tile, margin, m), feather


def _spans(length: int, tile: int, margin: int, multiple: int) -> list[tuple[int, int]]:
    """Equal-length windows covering [0, length), neighbours overlapping by at least `margin`.

    Starts are spread evenly (on multiples of `multiple`) rather than stepped by the full stride
    with the last one clamped to the end, which could leave the last two windows a few pixels
    apart; evenly spread, neighbours are at least about half a stride apart.
    """
    if length <= tile:
        return [(0, length)]
    tile = max(multiple, tile // multiple * multiple)
    stride = max(multiple, (tile - margin) // multiple * multiple)
    gaps = math.ceil((length - tile) / stride)
    starts = [i * (length - tile) // gaps // multiple * multiple for i in range(gaps)] + [length - tile]
    return [(a, a + tile) for a in sorted(set(starts))]


def _weights(spans, i: int, scale: int, feather: int, device):
    """1-D blending weights of window i at output resolution: ramps centred in each overlap."""
    torch = _torch()
    a, b = spans[i]
    pos = torch.arange(a * scale, b * scale, device=device, dtype=torch.float64) + 0.5
    w = torch.ones_like(pos)
    band = feather * scale
    if i > 0:
        centre = (spans[i][0] + spans[i - 1][1]) / 2 * scale
        w = w * ((pos - (centre - band / 2)) / band).clamp(0, 1)
    if i + 1 < len(spans):
        centre = (spans[i + 1][0] + spans[i][1]) / 2 * scale
        w = w * (1 - ((pos - (centre - band / 2)) / band).clamp(0, 1))
    return w.float()


def _as_float(x):
    """An image tensor in 0..1: 8-bit images stay bytes until a tile or step needs floats."""
    return x if x.is_floating_point() else x.float() / 255.0


def _maybe_to(x, device):
    try:
        return x.to(device)
    except Exception as exc:
        if _is_oom(exc):
            return x
        raise


def _to_tensor(array, device):
    import numpy as np

    torch = _torch()
    top = 65535.0 if array.dtype == np.uint16 else 255.0
    return torch.from_numpy(_writable(array)).to(device).permute(2, 0, 1)[None].float() / top


def _writable(array):
    """torch.from_numpy warns on read-only arrays (np.asarray of a PIL image is one)."""
    import numpy as np

    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def _check(out, command: Command, expected: tuple, what: str, reduced: bool, source: str) -> None:
    """A plugin's output must have the promised shape (None: any size) and finite values. NaN or
    infinity in fp16/bf16 asks for the fp32 retry; anything else is the plugin's error."""
    torch = _torch()
    if not isinstance(out, torch.Tensor):
        raise PluginError(f"{command.name}: {what} returned {type(out).__name__}, not a tensor", source)
    shape = tuple(out.shape)
    if len(shape) != 4 or any(e is not None and e != got for e, got in zip(expected, shape)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise PluginError(f"{command.name}: {what} returned shape {shape}, expected {want}", source)
    if not bool(torch.isfinite(out).all()):
        if reduced:
            raise _ReducedPrecisionFailed
        raise PluginError(f"{command.name}: {what} returned NaN or infinite values", source)


def _is_oom(exc: BaseException) -> bool:
    torch = _torch()
    if isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def memory_budget() -> int:
    """Bytes this process may take on the CPU, all buffers included: $IMGEN_MEMORY ("1.5G", "800M",
    plain bytes), default DEFAULT_MEMORY; tiles are sized from what the image itself leaves of
    it. A budget, not a share of free memory: a machine's free memory is no promise that this
    process may use it."""
    text = os.environ.get("IMGEN_MEMORY", "").strip().upper()
    if not text:
        return DEFAULT_MEMORY
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise UsageError(f"IMGEN_MEMORY={text!r}: give bytes with an optional K, M, G or T (e.g. 1.5G)") from None
    if not math.isfinite(value) or value < (64 << 20):
        raise UsageError(f"IMGEN_MEMORY={text!r}: at least 64M")
    return int(value)


def _carry_bytes(tiling: Tiling, width: int, channels: int) -> int:
    """The float rows a tile row hands to the next (see _run_tiles): the overlap's height, full width."""
    feather = max(2, tiling.overlap // 2)
    return (2 * tiling.overlap + feather) * tiling.scale ** 2 * width * channels * 4


def _resident_memory() -> int:
    """This process's resident memory now (0 where /proc is missing: the budget is then for tiles alone)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def bleed_colour(rgb, alpha):
    """Give fully transparent pixels the colour of their nearest visible neighbours.

    Their stored colour is usually black; a filter or resize would pull it into visible edge
    pixels as a dark fringe. Averaging down a pyramid weighted by visibility and filling holes
    from coarser levels spreads edge colours outward instead.
    """
    import torch.nn.functional as F

    torch = _torch()
    visible = (alpha > 0).float()
    if bool(visible.all()) or not bool(visible.any()):
        return rgb
    levels = [(rgb * visible, visible)]
    while min(levels[-1][1].shape[-2:]) > 1:
        colour, weight = levels[-1]
        levels.append((F.avg_pool2d(colour, 2, ceil_mode=True), F.avg_pool2d(weight, 2, ceil_mode=True)))
    colour, weight = levels[-1]
    filled = colour / weight.clamp_min(1e-8)
    for colour, weight in reversed(levels[:-1]):
        up = F.interpolate(filled, size=colour.shape[-2:], mode="nearest")
        here = colour / weight.clamp_min(1e-8)
        filled = torch.where(weight > 0, here, up)
    return torch.where(visible > 0, rgb, filled)


def resolve_device(name: str):
    """The torch device for --device; a device asked for by name must exist (no silent fallback)."""
    torch = _torch()
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"--device {name}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    return device


def parse_tile(value) -> str | int:
    """--tile: 'auto', 0 (never tile) or a side in pixels."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        side = int(text)
        if side != 0 and side < MIN_TILE:
            raise UsageError(f"--tile {side} is too small (at least {MIN_TILE}, or 0 for no tiling)")
        return side
    raise UsageError(f"--tile must be auto, 0 or a number of pixels, not {value!r}")
