"""Run imgen commands from Python, with the engine, options and models of the CLI (which uses this).

    from imgen_cli.api import Pipeline

    upscale = Pipeline("denoise --sigma 10 + sr --scale 2", device="auto", tile="auto")
    big = upscale(array)                 # numpy (H, W[, C]) uint8/uint16/float, PIL image or path
    filled = Pipeline("fill --value 0")(photo, mask=mask_array)   # extra image inputs by name

A Pipeline parses its chain once and keeps its models loaded, so calling it on many images (a
notebook loop, a Ray Data or Dask `map_batches`) pays for loading once per process.
"""

from __future__ import annotations

import shlex
import threading
from pathlib import Path
from typing import Any

from .errors import UsageError
from .io import DEFAULT_MAX_PIXELS


class Pipeline:
    """A parsed chain of commands, each step resolved once, plus the engine that runs it.

    Args:
        chain: command line of one command or a `+` chain, without `imgen` and without inputs or
            outputs (`"sr --scale 4"`, `"denoise + sr --fit 1920x1080 --blend 0.8"`), or a list of
            its words.
        device, precision, tile, threads: as the CLI's `--device`, `--precision`, `--tile`, `--threads`.
        max_pixels: refuse larger images read from paths (0 or None: no limit).
        registry: the plugin registry to parse against (default: the process-wide one).

    Raises `imgen_cli.UsageError` for a chain that cannot run (unknown command, bad option value,
    unknown model) and `imgen_cli.PluginError` for a command whose plugin failed to load.
    """

    def __init__(self, chain: str | list[str], *, device: str = "auto", precision: str = "auto",
                 tile: str | int = "auto", threads: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, info=None, progress=None, registry=None):
        from . import chain as chain_
        from .plugins import get_registry

        registry = registry or get_registry()
        words = shlex.split(chain) if isinstance(chain, str) else list(chain)
        self._build(chain_.parse(words, registry), registry, device, precision, tile, threads, max_pixels,
                    info, progress)

    @classmethod
    def from_specs(cls, specs, *, registry=None, device="auto", precision="auto", tile="auto", threads=None,
                   max_pixels=DEFAULT_MAX_PIXELS, info=None, progress=None, models=None) -> "Pipeline":
        """A Pipeline from already parsed steps (`chain.parse`, `chain.specs`: the CLI's path);
        `models`, when given, is the Model (or None) of each step as `models.resolve_model`
        resolved it (the CLI names outputs after them before building the pipeline)."""
        from .plugins import get_registry

        pipeline = cls.__new__(cls)
        pipeline._build(specs, registry or get_registry(), device, precision, tile, threads, max_pixels,
                        info, progress, models)
        return pipeline

    def _build(self, specs, registry, device, precision, tile, threads, max_pixels, info, progress, models=None):
        from .chain import output_size
        from .engine import Engine, Step
        from .models import resolve_model

        self.specs = list(specs)
        self.target = output_size(self.specs)
        # Command, options and model of every step are settled here, once: user model files are
        # looked up now, never per image or tile.
        if models is None:
            models = [resolve_model(registry, spec.command, spec.options, spec.model) for spec in self.specs]
        self.steps = [Step(spec.command, spec.options, model, blend=spec.blend, choices=self._choices(registry, spec))
                      for spec, model in zip(self.specs, models)]
        self.max_pixels = max_pixels or None
        # The steps as they last ran in each thread: with a target size a step's model is chosen
        # per image, and describe() names the one that ran.
        self._ran = threading.local()
        self.engine = Engine(registry, device=device, precision=precision, tile=tile, threads=threads,
                             info=info, progress=progress)

    def _choices(self, registry, spec) -> dict:
        """scale -> model for a step that picks its scale per image to reach the target size."""
        from .errors import PluginError

        if self.target is None or spec.model or spec.command.models_by_scale is None:
            return {}
        choices = {}
        for scale, name in dict(spec.command.models_by_scale(dict(spec.options))).items():
            if name not in registry.models:
                raise PluginError(f"{spec.command.name}: models_by_scale named {name!r}, which is not registered")
            choices[int(scale)] = registry.models[name]
        return choices

    def describe(self) -> dict:
        """What runs: {"model", "device", "precision"}, steps joined by "+" (a step without a
        model or not run yet left out; None when none is left). After an image, in the thread
        that ran it: what ran for it (the model a target size chose)."""
        from .engine import model_label

        steps = getattr(self._ran, "steps", None) or self.steps
        models = [model_label(step.model) for step in steps if step.model is not None]
        precisions = dict.fromkeys(p for p in map(self.engine.precision_of, steps) if p)
        return {"model": "+".join(models) or None, "device": str(self.engine.device),
                "precision": "+".join(precisions) or None}

    @property
    def input_names(self) -> list[str]:
        return [name for spec in self.specs for name in spec.inputs]

    def run_array(self, array, source: str = "-", inputs: dict | None = None, stream=None):
        """(H, W, C) uint8/uint16 in, same dtype out; `inputs` maps extra input names to arrays or paths.
        With `stream` (an io.PngFile) the output's rows may go there as they are made: see Engine.run."""
        from . import batch

        inputs = inputs or {}
        unknown = set(inputs) - set(self.input_names)
        if unknown:
            raise UsageError(f"no image input named {', '.join(sorted(unknown))} in this chain")
        extras = []
        for spec in self.specs:
            values = {name: inputs.get(name, value) for name, (_, value) in spec.inputs.items()}
            spec.check_inputs({name: value is not None for name, value in values.items()})
            arrays = {}
            for name, value in values.items():
                image_input = spec.inputs[name][0]
                if value is None:
                    arrays[name] = None
                elif isinstance(value, (str, Path)):
                    path = batch.match_input(image_input, str(value), source)
                    arrays[name] = batch.extra_array(path, image_input, self.max_pixels)
                else:
                    arrays[name] = _extra_from_object(value, image_input)
            extras.append(arrays)
        if self.target is not None and self.max_pixels:
            # A typed size is a typo away from an image no memory holds: the same limit as inputs.
            from .errors import InputError
            from .io import megapixels

            height, width = self.target.resolve(*array.shape[:2])
            if height * width > self.max_pixels:
                raise InputError(f"{self.target} would make it {width}x{height}, {megapixels(height * width)}, "
                                 f"above the {megapixels(self.max_pixels)} limit (raise it with --max-pixels)",
                                 source)
        used: list = []
        result = self.engine.run(array, self.steps, extras, source=source, target=self.target, used=used,
                                 stream=stream)
        self._ran.steps = used
        return result

    def __call__(self, image: Any, **inputs):
        """Process a numpy array, a PIL image or a path; returns the same kind (a path gives an array)."""
        array, restore = _to_array(image, self.max_pixels)
        return restore(self.run_array(array, source=str(image) if isinstance(image, (str, Path)) else "-",
                                      inputs=inputs))


def run(chain: str | list[str], image: Any, **options):
    """One-off: `run("sr --scale 2", image)`. Keyword options go to Pipeline, extra inputs too
    (`mask=array`); for many images build a Pipeline once instead."""
    engine_keys = {"device", "precision", "tile", "threads", "max_pixels"}
    pipeline = Pipeline(chain, **{k: v for k, v in options.items() if k in engine_keys})
    return pipeline(image, **{k: v for k, v in options.items() if k not in engine_keys})


def _to_array(image, max_pixels):
    """(H, W, C) integer array and a function that turns a result back into the caller's kind."""
    import numpy as np

    from . import io as imgio

    if isinstance(image, (str, Path)):
        return imgio.decode(imgio.read_bytes(str(image)), str(image), max_pixels).array, lambda a: a
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL
        from PIL import Image

        mode = image.mode
        if mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
            mode = image.mode
        array = np.asarray(image)
        array = array[:, :, None] if array.ndim == 2 else array

        def back(result):
            out = result[:, :, 0] if result.shape[2] == 1 else result
            return Image.fromarray(out, mode=mode if mode != "I;16" else None)

        return np.ascontiguousarray(array), back
    array = np.asarray(image)
    squeeze = array.ndim == 2
    array = array[:, :, None] if squeeze else array
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise UsageError(f"expected an (H, W) or (H, W, C) image array with C in 1..4, got {array.shape}")
    if array.dtype.kind == "f":
        as16 = (np.clip(array, 0, 1) * 65535 + 0.5).astype(np.uint16)
        return as16, lambda r: (r.astype(np.float32) / 65535)[:, :, 0] if squeeze else r.astype(np.float32) / 65535
    if array.dtype not in (np.uint8, np.uint16):
        raise UsageError(f"expected uint8, uint16 or float pixels, got {array.dtype}")
    return np.ascontiguousarray(array), (lambda r: r[:, :, 0]) if squeeze else (lambda r: r)


def _extra_from_object(value, spec):
    from .batch import fit_channels

    array, _ = _to_array(value, None)
    return fit_channels(array, spec)
