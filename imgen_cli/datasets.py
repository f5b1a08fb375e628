"""Training data shared by the built-in recipes: where the photos are and how they are split.

Every built-in recipe trains on the same photos and validates on the same held-out ones, so a
number reported for one plugin is never measured on a photo another plugin's model was trained on
in the same role. Nothing here imports torch; the recipes turn the arrays into tensors themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

# Held out of every training run, used for validation numbers and the benchmark scripts.
VALIDATION = ("bridge", "friends", "kite", "raindrops", "wood")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The dataset folder: `explicit`, else $IMGEN_DATA, else ../shared/datasets from the project root."""
    if explicit:
        return Path(explicit)
    if os.environ.get("IMGEN_DATA"):
        return Path(os.environ["IMGEN_DATA"])
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name so runs are reproducible."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no dataset folder at {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def split(files: list[Path], validation: tuple[str, ...] = VALIDATION) -> tuple[list[Path], list[Path]]:
    """(train, validation) by file stem; validation stems are never trained on."""
    train = [p for p in files if p.stem not in validation]
    val = [p for p in files if p.stem in validation]
    return train, val


def load_rgb(path: str | os.PathLike):
    """An 8-bit RGB photo as a (H, W, 3) uint8 numpy array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
