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
from dataclasses import dataclass, field
from typing import Any, Callable

from .contract import Command, Model, Tiling
from .errors import DeviceError, ImgenError, PluginError, UsageError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIN_TILE = 32


@dataclass
class Step:
    """One command of a chain with its parsed options."""

    command: Command
    options: dict = field(default_factory=dict)
    model: str | None = None  # explicit --model
    # Extra image inputs for the current image: name -> (H, W, C) array or None.
    inputs: dict = field(default_factory=dict)


class Context:
    """What a plugin's process, prepare, tiling and finish functions see. One per image and step."""

    def __init__(self, engine: "Engine", step: Step, dtype, source: str = "-"):
        self._engine = engine
        self._step = step
        self.options: dict = step.options
        self.device = engine.device
        self.dtype = dtype
        self.source = source
        self.state: dict = {}
        self.inputs: dict = {}
        self.alpha = None
        self.output_alpha = None
        self.scale: int = 1

    @property
    def model_name(self) -> str | None:
        return self._engine.model_name(self._step)

    def model(self, name: str | None = None):
        """The loaded network `name` (default: the step's model), on this device and precision."""
        name = name or self.model_name
        if name is None:
            raise PluginError(f"command {self._step.command.name!r} has no model to load")
        return self._engine.load(name, self.dtype)

    def info(self, message: str) -> None:
        """A message on stderr, shown with --verbose."""
        self._engine.info(f"{self._step.command.name}: {message}")


def _torch():
    import torch

    return torch


class Engine:
    """Holds the device, precision policy, tiling policy and loaded models of one process."""

    def __init__(self, registry, device: str = "auto", precision: str = "auto", tile: str | int = "auto",
                 threads: int | None = None, info: Callable[[str], None] | None = None,
                 progress: Callable[..., Any] | None = None):
        torch = _torch()
        self.registry = registry
        self.device = resolve_device(device)
        self.precision = precision
        self.tile = parse_tile(tile)
        self.info = info or (lambda message: None)
        self.progress = progress
        self._models: dict = {}
        if threads:
            torch.set_num_threads(int(threads))

    # -- models ----------------------------------------------------------------------------

    def model_name(self, step: Step) -> str | None:
        if step.model:
            return self._resolve_model(step)
        if step.command.select_model is not None:
            chosen = step.command.select_model(step.options)
            if chosen:
                return chosen
        default = self.registry.default_model(step.command.name)
        return default.name if default else None

    def _resolve_model(self, step: Step) -> str:
        """A registered model name, or a weights file (path or user-folder name) registered on first use."""
        from .models import find_model_file, user_model

        value = step.model
        spec = self.registry.models.get(value)
        if spec is not None:
            if spec.task != step.command.name:
                raise UsageError(f"model {value!r} is for `imgen {spec.task}`, not `imgen {step.command.name}`")
            return value
        path = find_model_file(value)
        if path is None:
            raise UsageError(f"unknown model {value!r}: not a registered model (see `imgen models`) "
                             "nor a .safetensors/.pth file")
        name = f"file:{path}"
        if name not in self.registry.models:
            self.registry.models[name] = user_model(step.command, path)
        return name

    def model_spec(self, name: str) -> Model:
        spec = self.registry.models.get(name)
        if spec is None:
            raise UsageError(f"unknown model {name!r} (see `imgen models`)")
        return spec

    def load(self, name: str, dtype):
        key = (name, str(self.device), dtype)
        if key not in self._models:
            spec = self.model_spec(name)
            if self.device.type not in spec.devices:
                raise DeviceError(f"model {name!r} does not run on {self.device.type}")
            try:
                module = spec.load()
            except ImgenError:
                raise
            except Exception as exc:
                raise PluginError(f"model {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
            if hasattr(module, "to"):
                module = module.to(device=self.device, dtype=dtype)
                if spec.channels_last:
                    module = module.to(memory_format=_torch().channels_last)
            if hasattr(module, "eval"):
                module.eval()
            if hasattr(module, "requires_grad_"):
                module.requires_grad_(False)
            self._models[key] = module
        return self._models[key]

    def dtype_for(self, step: Step):
        torch = _torch()
        if self.precision != "auto":
            return getattr(torch, DTYPES[self.precision])
        if self.device.type == "cpu":
            return torch.float32
        name = self.model_name(step)
        declared = self.registry.models[name].precisions if name in self.registry.models else ("fp32",)
        for choice in ("fp16", "bf16"):
            if choice in declared:
                return getattr(torch, DTYPES[choice])
        return torch.float32

    # -- images ----------------------------------------------------------------------------

    def run(self, array, steps: list[Step], source: str = "-"):
        """Run a chain of steps on an (H, W, C) uint8/uint16 array; returns an array of the same dtype.

        Between steps the image stays a float tensor (on the device when it fits). The last step
        streams finished rows of tiles straight into the integer output array, so a large image
        never holds a full-size float copy of its output.
        """
        import numpy as np

        torch = _torch()
        top = 65535.0 if array.dtype == np.uint16 else 255.0
        with torch.inference_mode():
            home = self._home_device(array)
            x = torch.from_numpy(_writable(array)).to(home).permute(2, 0, 1)[None].float() / top
            alpha = None
            if x.shape[1] in (2, 4):
                x, alpha = x[:, :-1], x[:, -1:]
                x = bleed_colour(x, alpha)
            for k, step in enumerate(steps):
                last = k == len(steps) - 1
                sink = ArraySink(array.dtype, alpha is not None) if last else TensorSink(home)
                x, alpha = self._run_step(step, x, alpha, source, sink)
            if alpha is not None:
                x[:, :, -1] = _quantize(alpha[0, 0], top, array.dtype)
            return x

    def _home_device(self, array):
        """Where whole images live between steps: the device if it has room, else the CPU."""
        torch = _torch()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if array.size * 4 * 8 < free * 0.25:
                return self.device
        return torch.device("cpu")

    def _run_step(self, step: Step, x, alpha, source: str, sink):
        torch = _torch()
        command = step.command
        dtype = self.dtype_for(step)
        grey = x.shape[1] == 1
        try:
            reduced = dtype != torch.float32
            ctx = self._attempt(step, x, alpha, dtype, source, sink.reset(grey, watch=reduced))
            if reduced and sink.broken(x):
                self.info(f"{command.name}: reduced precision gave NaN or black output, retrying in fp32")
                ctx = self._attempt(step, x, alpha, torch.float32, source, sink.reset(grey))
        except ImgenError:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise ImgenError(f"{command.name}: out of memory (try a smaller --tile)", source) from exc
            raise ImgenError(f"{command.name} failed: {type(exc).__name__}: {exc}", source) from exc
        if alpha is not None and ctx.output_alpha is not None:
            alpha = ctx.output_alpha.detach().float().clamp(0, 1).to(alpha.device)
        if alpha is not None and tuple(alpha.shape[-2:]) != sink.size:
            alpha = resize(alpha, sink.size)
        return sink.result(), alpha

    def _attempt(self, step: Step, x, alpha, dtype, source: str, sink):
        command = step.command
        ctx = Context(self, step, dtype, source)
        ctx.alpha = alpha.to(self.device) if (alpha is not None and command.alpha == "keep") else None
        if command.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        name = self.model_name(step)
        if name and name.startswith("file:"):
            ctx.model()  # a user model's scale and size multiple are known once it is loaded
        tiling = command.tiling(ctx) if callable(command.tiling) else command.tiling
        multiple = self.registry.models[name].meta.get("multiple", 1) if name in self.registry.models else 1
        if multiple > tiling.multiple:
            tiling = dataclasses.replace(tiling, multiple=math.lcm(multiple, tiling.multiple))
        ctx.scale = tiling.scale
        extras = {name: _to_tensor(value, x.device) for name, value in step.inputs.items() if value is not None}
        for spec in command.inputs:
            if spec.spatial and spec.name in extras and extras[spec.name].shape[-2:] != x.shape[-2:]:
                got = extras[spec.name].shape[-2:]
                raise ImgenError(f"--{spec.name} is {got[1]}x{got[0]} but the image is "
                                 f"{x.shape[-1]}x{x.shape[-2]}: sizes must match", source)
        spatial = {s.name for s in command.inputs if s.spatial}
        ctx.inputs = {k: v.to(self.device, dtype) for k, v in extras.items() if k not in spatial}
        if command.prepare is not None:
            command.prepare(_maybe_to(x, self.device), ctx)
        per_channel = command.channels == 1 and x.shape[1] > 1

        def call(batch, crops):
            ctx.inputs.update({k: v.to(self.device, dtype) for k, v in crops.items()})
            n, c = batch.shape[:2]
            if per_channel:
                batch = batch.reshape(n * c, 1, *batch.shape[-2:])
            out = command.process(batch.to(self.device, dtype), ctx)
            if per_channel:
                out = out.reshape(n, c, *out.shape[-2:])
            return out.float()

        spatial_extras = {k: v for k, v in extras.items() if k in spatial}
        if command.finish is None:
            self._tiled(call, x, spatial_extras, tiling, sink)
            return ctx
        whole = TensorSink(x.device).reset(False)
        self._tiled(call, x, spatial_extras, tiling, whole)
        y = command.finish(whole.result().to(self.device, dtype), ctx).float()
        sink.open(tuple(y.shape[-2:]))
        sink.write(0, y)
        return ctx

    def tile_size(self, tiling: Tiling, height: int, width: int) -> int:
        """Tile side in input pixels; 0 means the whole image in one call."""
        if not tiling.tileable or self.tile == 0:
            return 0
        if isinstance(self.tile, int):
            return self.tile
        torch = _torch()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = free * 0.5
        else:
            budget = min(_available_memory() * 0.25, 2 << 30)
        side = int(math.sqrt(budget / max(tiling.bytes_per_pixel, 1)))
        return max(128, min(side, 4096))

    def _tiled(self, call, x, extras: dict, tiling: Tiling, sink):
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
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
            extras = {k: F.pad(v, (0, pw, 0, ph), mode=mode) for k, v in extras.items()}
        tile = self.tile_size(tiling, height, width)
        while True:
            try:
                if tile == 0 or (tile >= x.shape[-2] and tile >= x.shape[-1]):
                    sink.write(0, call(x, extras))
                else:
                    self._run_tiles(call, x, extras, tiling, tile, sink)
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
                sink.reset(sink.grey, sink.watch).open((height * tiling.scale, width * tiling.scale))

    def _run_tiles(self, call, x, extras: dict, tiling: Tiling, tile: int, sink):
        """Process tiles row by row, handing each finished band of output rows to the sink."""
        torch = _torch()
        s = tiling.scale
        height, width = x.shape[-2:]
        ys, feather = _windows(height, tile, tiling.overlap, tiling.multiple)
        xs, _ = _windows(width, tile, tiling.overlap, tiling.multiple)
        wx = [_weights(xs, j, s, feather, x.device) for j in range(len(xs))]
        batch = self._batch_size(tiling, tile)
        bar = self.progress(total=len(ys) * len(xs), desc="tiles", unit="tile") if self.progress else None
        pending, top = None, 0  # float rows [top, top + pending rows) still receiving tiles
        try:
            for i, (y0, y1) in enumerate(ys):
                wy = _weights(ys, i, s, feather, x.device)
                if pending is not None:
                    sink.write(top, pending[..., : y0 * s - top, :])  # no later tile reaches these rows
                    carried = pending[..., y0 * s - top:, :]
                band = None
                for start in range(0, len(xs), batch):
                    cols = range(start, min(start + batch, len(xs)))
                    tiles = torch.cat([x[..., y0:y1, xs[j][0]:xs[j][1]] for j in cols])
                    crops = {k: torch.cat([v[..., y0:y1, xs[j][0]:xs[j][1]] for j in cols]) for k, v in extras.items()}
                    results = call(tiles, crops).to(x.device)
                    if band is None:
                        band = torch.zeros((x.shape[0], results.shape[1], (y1 - y0) * s, width * s),
                                           dtype=torch.float32, device=x.device)
                        if pending is not None:
                            band[..., : carried.shape[-2], :] = carried
                    n = x.shape[0]
                    for k, j in enumerate(cols):
                        x0, x1 = xs[j]
                        band[..., x0 * s:x1 * s] += results[k * n:(k + 1) * n] * (wy[:, None] * wx[j][None, :])
                    if bar is not None:
                        bar.update(len(cols))
                pending, top = band, y0 * s
            sink.write(top, pending)
        finally:
            if bar is not None:
                bar.close()

    def _batch_size(self, tiling: Tiling, tile: int) -> int:
        if self.device.type != "cuda":
            return 1
        torch = _torch()
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(16, int(free * 0.5 / (tiling.bytes_per_pixel * tile * tile))))


class TensorSink:
    """Collects a step's output rows into one float tensor (for the next step of a chain)."""

    def __init__(self, device):
        self.device = device
        self.grey = False

    def reset(self, grey: bool, watch: bool = False):
        self.grey, self.watch, self.out, self.size = grey, watch, None, None
        return self

    def open(self, size):
        self.size = tuple(size)

    def write(self, row: int, band) -> None:
        band = _finish_band(band, self.grey, self.size, row)
        if band is None:
            return
        if self.out is None:
            self.out = _torch().empty((band.shape[0], band.shape[1], *self.size), device=self.device)
        self.out[..., row:row + band.shape[-2], :] = band.to(self.device)

    def broken(self, x) -> bool:
        return _looks_broken(x, self.out)

    def result(self):
        return self.out


class ArraySink:
    """Quantizes a step's output rows straight into the final (H, W, C) integer array."""

    def __init__(self, dtype, alpha: bool):
        self.dtype, self.alpha = dtype, alpha
        self.top = 65535.0 if str(dtype) == "uint16" else 255.0
        self.grey = False

    def reset(self, grey: bool, watch: bool = False):
        """Start a new output; with `watch`, note NaNs and the peak value for `broken`."""
        self.grey, self.watch, self.out, self.size = grey, watch, None, None
        self.nan, self.peak = False, 0.0
        return self

    def open(self, size):
        self.size = tuple(size)

    def write(self, row: int, band) -> None:
        import numpy as np

        torch = _torch()
        band = _finish_band(band, self.grey, self.size, row, clamp=False)
        if band is None:
            return
        if self.watch:
            self.nan = self.nan or bool(torch.isnan(band).any())
            self.peak = max(self.peak, float(band.nan_to_num(0).abs().max()))
        if self.out is None:
            channels = band.shape[1] + (1 if self.alpha else 0)
            self.out = np.empty((*self.size, channels), dtype=self.dtype)
        rows = band.shape[-2]
        self.out[row:row + rows, :, :band.shape[1]] = _quantize(band[0].permute(1, 2, 0), self.top, self.dtype)

    def broken(self, x) -> bool:
        return self.nan or (self.peak == 0.0 and float(x.max()) > 0.0)

    def result(self):
        return self.out


def _finish_band(band, grey: bool, size, row: int, clamp: bool = True):
    """Crop padding beyond the output size, turn RGB back into grey for grey images, clamp."""
    band = band[..., : max(0, size[0] - row), : size[1]]
    if band.shape[-2] == 0:
        return None
    if grey and band.shape[1] == 3:
        band = 0.299 * band[:, :1] + 0.587 * band[:, 1:2] + 0.114 * band[:, 2:3]
    return band.clamp(0, 1) if clamp else band


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
        chunk = chunk.nan_to_num_(0).clamp_(0, 1).mul_(top).round_()
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


def _looks_broken(x, y) -> bool:
    torch = _torch()
    return bool(torch.isnan(y).any()) or (float(y.abs().max()) == 0.0 and float(x.max()) > 0.0)


def _is_oom(exc: BaseException) -> bool:
    torch = _torch()
    if isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def resize(x, size, mode: str = "bicubic"):
    """Resize (N, C, H, W) to `size` (h, w), antialiased when shrinking, clamped to 0..1."""
    import torch.nn.functional as F

    antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x.float(), size=tuple(size), mode=mode, align_corners=False,
                         antialias=antialias).clamp(0, 1)


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
