"""Community models: `--model FILE` or a name found in the user model folder.

A weights file is loaded safely — safetensors, or `torch.load(weights_only=True)` for .pth/.pt —
and turned into a network by, in order:

1. the command's own `build_model(state_dict)` (its architecture, e.g. a fine-tuned `sr` model);
2. spandrel, when installed (`pip install 'imgen[spandrel]'`), which recognises ESRGAN,
   Real-ESRGAN Compact, SwinIR, HAT, SCUNet, DRUNet, NAFNet, LaMa and many more from the keys of
   the state dict. Its descriptor gives the scale, size multiple and precisions.

A file that needs unrestricted unpickling is refused: unpickling runs arbitrary code. A user's
model file becomes a `Model` of the step that asked for it, never an entry of the plugin registry,
and what loading it learns comes back as a `Loaded` descriptor.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

from .contract import Command, Loaded, Model
from .errors import PluginError, UsageError, reason

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")

# Which spandrel purposes each kind of command can run.
SPANDREL_PURPOSES = {"SR": "upscales", "FaceSR": "upscales", "Restoration": "restores", "Inpainting": "inpaints"}


def user_model_dir() -> Path:
    """$IMGEN_MODELS, else $XDG_DATA_HOME/imgen/models (~/.local/share/imgen/models)."""
    if os.environ.get("IMGEN_MODELS"):
        return Path(os.environ["IMGEN_MODELS"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "imgen" / "models"


def user_model_files() -> list[Path]:
    folder = user_model_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())


def find_model_file(value: str) -> Path | None:
    """A path to an existing weights file, or a name (stem or file name) in the user model folder."""
    path = Path(value).expanduser()
    if path.suffix.lower() in SUFFIXES and path.is_file():
        return path
    for candidate in user_model_files():
        if value in (candidate.stem, candidate.name):
            return candidate
    return None


def load_state_dict(path: Path) -> dict:
    """Tensors from a weights file, never unpickling anything but plain tensors and containers.

    A file that would need unrestricted unpickling is a UsageError (exit 2: the user asked for
    something refused); a file that cannot be read as weights is a PluginError (exit 3: the model
    failed to load). Either way one line that names the file.
    """
    import torch

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PluginError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if size == 0:
        raise PluginError(f"{path}: empty file, not a weights file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise PluginError(f"{path}: not a readable safetensors file ({reason(exc)})") from None
        if not state:
            raise PluginError(f"{path}: holds no tensors")
        return state
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if _needs_unpickling(path, exc):
            raise UsageError(f"{path}: refused: this file needs unrestricted unpickling, which can run "
                             "arbitrary code; convert it to .safetensors or a plain state dict") from None
        raise PluginError(f"{path}: not a readable PyTorch weights file ({reason(exc)})") from None
    # Common wrappers around the state dict itself.
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise PluginError(f"{path}: does not hold a state dict of tensors")
    return state


def _needs_unpickling(path: Path, exc: BaseException) -> bool:
    """Whether torch's safe loader refused a real pickle (a class or function it would have to
    import), as opposed to bytes that are no pickle at all."""
    text = str(exc)
    if "Unsupported global" in text or "GLOBAL" in text:
        return True
    if "Weights only load failed" not in text:
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    # A zip is torch's own format; a pickle starts with the PROTO opcode (0x80).
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def mismatch(exc: BaseException) -> str:
    """torch's many-line `Error(s) in loading state_dict` report, counted into one line."""
    text = str(exc)
    if "Error(s) in loading state_dict" not in text:
        return f"{type(exc).__name__}: {reason(exc)}"
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        found = re.search(pattern, text)
        if found:
            count = len(re.findall(r'"[^"]*"', found.group(1)))
            parts.append(f"{count} {label} tensor{'s' if count != 1 else ''}")
    sizes = len(re.findall(r"size mismatch for ", text))
    if sizes:
        parts.append(f"{sizes} of another shape")
    return "its tensors do not match (" + ", ".join(parts) + ")" if parts else reason(exc)


def user_model(command: Command, path: Path) -> Model:
    """A Model for `command` from a weights file; loading happens when the engine first needs it."""
    return Model(name=f"file:{path.resolve()}", command=command.name, load=lambda: load_user_model(command, path),
                 description=f"user model {path.name}", weights=str(path))


def load_user_model(command: Command, path: Path) -> Loaded:
    """The network in a user's weights file, by the command's own `build_model` or by spandrel."""
    state = load_state_dict(path)
    errors = []
    if command.build_model is not None:
        try:
            built = command.build_model(state)
        except Exception as exc:  # not this command's architecture: try spandrel next
            errors.append(f"not an imgen {command.name} network: {mismatch(exc)}")
        else:
            if isinstance(built, Loaded):
                return built
            return Loaded(built, scale=int(getattr(built, "scale", 1)), architecture=type(built).__name__)
    descriptor = _spandrel(state, path, errors)
    if descriptor is None:
        raise PluginError(f"{path}: cannot build a network from it: " + "; ".join(errors))
    purpose = getattr(descriptor, "purpose", None)
    if command.model_purposes and purpose not in command.model_purposes:
        raise UsageError(f"{path}: a {descriptor.architecture.name} {purpose} model does not fit "
                         f"`imgen {command.name}` (it takes {', '.join(command.model_purposes)} models)")
    precisions = ["fp32"]
    if getattr(descriptor, "supports_half", False):
        precisions.append("fp16")
    if getattr(descriptor, "supports_bfloat16", False):
        precisions.append("bf16")
    # The spandrel descriptor itself is the network: calling it enforces its I/O contract.
    return Loaded(descriptor, scale=int(descriptor.scale),
                  multiple=int(getattr(descriptor.size_requirements, "multiple_of", 1) or 1),
                  precisions=tuple(precisions), architecture=descriptor.architecture.name)


def _spandrel(state: dict, path: Path, errors: list[str]):
    try:
        import spandrel
    except ImportError:
        errors.append("spandrel is not installed (pip install 'imgen[spandrel]' for ESRGAN, SwinIR, HAT, ...)")
        return None
    try:
        return spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as exc:
        errors.append(f"spandrel does not recognise it ({reason(exc)})")
        return None


def _asked_scale(command: Command, options) -> int | None:
    value = options.get(command.scale_option) if command.scale_option else None
    return None if value in (None, "") else int(float(value))


def _scale_conflict(command: Command, model: str, scale: int, wanted: int) -> str:
    return (f"model {model!r} scales x{scale} but --{command.scale_option.replace('_', '-')} is {wanted}: "
            "give one of them (see `imgen models`)")


def resolve_model(registry, command: Command, options, value: str | None) -> Model | None:
    """The model a step runs, decided once when the pipeline is built: `--model` (a registered
    name, a weights file or a name in the user model folder), else the command's `select_model`,
    else its default; None for a command without models."""
    if value:
        model = registry.models.get(value)
        wanted = _asked_scale(command, options)
        if model is not None:
            if model.command != command.name:
                raise UsageError(f"model {value!r} is for `imgen {model.command}`, not `imgen {command.name}`")
            if wanted is not None and model.scale != wanted:
                raise UsageError(_scale_conflict(command, value, model.scale, wanted))
            return model
        path = find_model_file(value)
        if path is None:
            raise UsageError(f"unknown model {value!r}: not a registered model (see `imgen models`) "
                             "nor a .safetensors/.pth file")
        model = user_model(command, path)
        if wanted is None:
            return model
        # A file's scale is known once it is loaded: checked then, before its first image runs.
        def load(inner=model.load):
            loaded = inner()
            if loaded.scale != wanted:
                raise UsageError(_scale_conflict(command, value, loaded.scale, wanted))
            return loaded

        return dataclasses.replace(model, load=load)
    if command.select_model is not None:
        chosen = command.select_model(dict(options))
        if chosen:
            if chosen not in registry.models:
                raise PluginError(f"{command.name}: select_model chose {chosen!r}, which is not registered")
            return registry.models[chosen]
    return registry.default_model(command.name)
