"""Golden outputs: every shipped model, run through the CLI on a small fixed crop, must give the
stored output within 1/255, so a refactor (or new weights) that shifts what users get fails here.

Inputs and expected outputs are 16-bit PNGs in tests/golden/ (MODEL.in.png, MODEL.png, and
MODEL.mask.png for inpaint), made from crops of examples/images. 16 bits keep a shift smaller
than one 8-bit level visible. Whoever ships new weights for a model, or changes its output on
purpose, regenerates that model's files and commits them with the change:

    python tests/test_golden.py --update sr-real-x4        # one model (several names allowed)
    python tests/test_golden.py --update --all             # every model

Runs on CPU in fp32, one thread, untiled.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = ROOT / "examples" / "images"
TOLERANCE = 257  # 1/255 on the 16-bit scale
ENGINE = ["--device", "cpu", "--precision", "fp32", "--threads", "1"]
UNTILED = ("inpaint", "lowlight")  # commands that never tile, and so take no --tile


@dataclass(frozen=True)
class Case:
    """One model's golden run: `args` before the input, a `size`-pixel crop of an example image."""

    args: tuple[str, ...]
    weights: str  # the shipped file this model runs, relative to the repository root
    image: str = "friends.jpg"
    top: int = 150
    left: int = 200
    size: int = 48
    degrade: str = ""  # "noise" or "dark": what the command is for
    mask: bool = False


FIDELITY = dict(image="friends.jpg", top=240, left=330, size=32)  # a dog's eye: edges and fur
CASES = {
    "denoise-ffdnet": Case(("denoise",), "plugins/imgen_denoise/weights/ffdnet.safetensors",
                           top=230, left=330, degrade="noise"),
    "inpaint-ffc": Case(("inpaint",), "plugins/imgen_inpaint/weights/inpaint.safetensors",
                        top=200, left=300, size=64, mask=True),
    "lowlight-curves": Case(("lowlight",), "plugins/imgen_lowlight/weights/lowlight.safetensors",
                            image="raindrops.png", top=280, left=30, degrade="dark"),
    "restyle-adain": Case(("restyle", "--style", "autumn"), "plugins/imgen_restyle/weights/restyle.safetensors",
                          top=10, left=200),
    "sr-fidelity-x2": Case(("sr", "--model", "sr-fidelity-x2"), "plugins/imgen_sr/weights/fidelity_x2.safetensors",
                           **FIDELITY),
    "sr-fidelity-x3": Case(("sr", "--model", "sr-fidelity-x3"), "plugins/imgen_sr/weights/fidelity_x3.safetensors",
                           **FIDELITY),
    "sr-fidelity-x4": Case(("sr", "--model", "sr-fidelity-x4"), "plugins/imgen_sr/weights/fidelity_x4.safetensors",
                           **FIDELITY),
    "sr-real-x4": Case(("sr", "--model", "sr-real-x4"), "plugins/imgen_sr/weights/real_x4.safetensors",
                       image="raindrops.png", top=300, left=255, size=32),
    "sr-real-x2": Case(("sr", "--model", "sr-real-x2"), "plugins/imgen_sr/weights/real_x2.safetensors",
                       image="raindrops.png", top=300, left=255, size=32),
}


def read_png(path: Path) -> np.ndarray:
    """(H, W, C) uint16 or uint8; pypng, because Pillow reads 16-bit RGB as 8 bits."""
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    return np.vstack([np.asarray(r, dtype=dtype) for r in rows]).reshape(height, width, info["planes"])


def write_png(path: Path, array: np.ndarray) -> Path:
    import png

    h, w, c = array.shape
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=c == 1, bitdepth=array.dtype.itemsize * 8).write_array(f, array.reshape(-1))
    return path


def make_inputs(name: str) -> dict[str, np.ndarray]:
    """The case's input (and mask), deterministic from the example image: no RNG state involved
    beyond a fixed-seed noise field, and the files are stored anyway."""
    from PIL import Image

    case = CASES[name]
    with Image.open(EXAMPLES / case.image) as im:
        crop = np.asarray(im.convert("RGB"))[case.top:case.top + case.size, case.left:case.left + case.size]
    x = crop.astype(np.float64) / 255
    if case.degrade == "noise":
        x = x + np.random.default_rng(0).normal(0, 25 / 255, x.shape)
    elif case.degrade == "dark":
        x = 0.25 * x**2.2
    inputs = {"in": np.round(np.clip(x, 0, 1) * 65535).astype(np.uint16)}
    if case.mask:
        mask = np.zeros((case.size, case.size, 1), np.uint8)
        q = case.size // 4
        mask[q:3 * q, q + 4:3 * q - 4] = 255
        inputs["mask"] = mask
    return inputs


def run_case(name: str, folder: Path, invoke) -> np.ndarray:
    """Run the case's stored inputs through `invoke(args)` (the CLI) and return the output."""
    case = CASES[name]
    args = [*case.args, str(GOLDEN / f"{name}.in.png"), "-o", str(folder / f"{name}.png"), *ENGINE]
    if case.args[0] not in UNTILED:
        args += ["--tile", "0"]
    if case.mask:
        args += ["--mask", str(GOLDEN / f"{name}.mask.png")]
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    return read_png(folder / f"{name}.png")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_output(imgen, tmp_path, name):
    expected = read_png(GOLDEN / f"{name}.png")
    out = run_case(name, tmp_path, imgen)
    assert out.dtype == np.uint16 and out.shape == expected.shape
    diff = np.abs(out.astype(np.int64) - expected).max()
    assert diff <= TOLERANCE, f"{name}: max difference {diff / 257:.2f}/255 from the stored output"
    # The comparison can fail: the model does change its input by far more than the tolerance.
    source = read_png(GOLDEN / f"{name}.in.png")
    scale = expected.shape[0] // source.shape[0]
    baseline = source.repeat(scale, 0).repeat(scale, 1)
    assert np.abs(expected.astype(np.int64) - baseline).max() > 4 * TOLERANCE


def test_every_shipped_model_has_a_golden_case(imgen):
    import json

    result = imgen(["models", "--json"])
    assert result.exit_code == 0, result.stderr
    models = {m["name"]: Path(m["weights"]).resolve() for m in json.loads(result.stdout)}
    assert set(models) == set(CASES)
    assert {name: models[name] for name in CASES} == {name: (ROOT / c.weights).resolve() for name, c in CASES.items()}
    shipped = {p.resolve() for p in ROOT.glob("plugins/*/weights/*") if p.is_file()}
    assert shipped == set(models.values())


def update(names: list[str]) -> None:
    """Rewrite the inputs and expected outputs of `names` from the current code and weights."""
    import tempfile

    from click.testing import CliRunner

    from imgen_cli.cli import cli

    def invoke(args):
        return CliRunner().invoke(cli, args, catch_exceptions=False)

    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for kind, array in make_inputs(name).items():
                write_png(GOLDEN / f"{name}.{kind}.png", array)
            write_png(GOLDEN / f"{name}.png", run_case(name, Path(tmp), invoke))
            print(f"updated {GOLDEN / name}.*.png", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Regenerate golden outputs (see this file's docstring).")
    ap.add_argument("--update", nargs="*", metavar="MODEL", required=True, help=f"models: {', '.join(sorted(CASES))}")
    ap.add_argument("--all", action="store_true", help="every model")
    args = ap.parse_args(argv)
    names = sorted(CASES) if args.all else args.update
    unknown = set(names) - set(CASES)
    if unknown or not names:
        ap.error(f"name models to update ({', '.join(sorted(CASES))}) or --all" if not names
                 else f"no golden case for {', '.join(sorted(unknown))}")
    update(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
