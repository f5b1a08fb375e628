"""`imgen metrics`: what an enhancement did, measured against a reference or without one.

The command is a click group whose default form scores images and whose one subcommand refits
NIQE's pristine model:

    imgen metrics REF OUT                      # PSNR, SSIM, MS-SSIM (two files, or two folders)
    imgen metrics --no-ref IMAGE...            # NIQE
    imgen metrics fit-niqe DIR -o params.npz   # a pristine model of your own photos

Only click is imported here, so `imgen --help` stays free of numpy; the numbers come from
imgen_cli.metrics and the images from imgen's own reader (imgen_cli.io).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path

import click

from .errors import FAILED, OK, ImgenError, InputError, OutputError, UsageError
from .options import ExampleCommand, WithExamples

# --align scale crops what a modcrop to the SR scale can leave: under 8 pixels (x8 is the
# largest common scale).
ALIGN_LIMIT = 8
SUBCOMMAND = "fit-niqe"


class MetricsGroup(WithExamples, click.Group):
    """Scores images unless the first argument names a subcommand (`fit-niqe`)."""

    # `imgen metrics a.png b.png --json`: options may follow the images.
    allow_interspersed_args = True

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            # The scoring options keep their defaults; the subcommand parses the rest. This sets
            # what click.Group.parse_args itself sets (a private attribute in click 8.2+); the
            # fit-niqe tests in test_metrics fail if a click release renames it.
            for param in self.get_params(ctx):
                param.handle_parse_result(ctx, {}, [])
            ctx._protected_args, ctx.args = args[:1], args[1:]
            return ctx.args
        return click.Command.parse_args(self, ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return click.Command.collect_usage_pieces(self, ctx)


class ScoredPaths(click.Argument):
    """The images to score; named in `imgen metrics`' usage line, not in its subcommand's."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return super().get_usage_pieces(ctx) if isinstance(ctx.command, MetricsGroup) else []


@click.group(cls=MetricsGroup, invoke_without_command=True, no_args_is_help=True, examples=[
    ("imgen metrics ref.png out.png", "PSNR, SSIM and MS-SSIM of out.png against ref.png"),
    ("imgen metrics --channel y --crop-border 4 hr/ sr-x4/", "Two folders, as super-resolution papers measure"),
    ("imgen metrics --no-ref --json photo-denoise.png photo.png", "NIQE of each image, as JSON"),
    ("imgen metrics fit-niqe pristine/ -o niqe.npz", "Fit NIQE's model on a folder of sharp photos"),
],
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("paths", cls=ScoredPaths, nargs=-1, type=click.Path(), metavar="REF OUT | IMAGE...")
@click.option("--no-ref", is_flag=True, help="Score each IMAGE (files or folders) without a reference: NIQE.")
@click.option("--channel", type=click.Choice(["rgb", "y"]), default="rgb", show_default=True,
              help="Compare every RGB channel, or BT.601 luma (Y) as super-resolution papers do.")
@click.option("--crop-border", type=click.IntRange(0), default=0, show_default=True, metavar="N",
              help="Leave N pixels on every side out (SR papers crop the scale factor).")
@click.option("--align", type=click.Choice(["none", "scale"]), default="none", show_default=True,
              help=f"scale: when sizes differ by under {ALIGN_LIMIT} pixels (an SR output of a modcropped "
                   "input), crop both to the smaller size, keeping the top-left corner.")
@click.option("--niqe-params", metavar="FILE",
              help="NIQE pristine model (.npz from imgen metrics fit-niqe). Default: the one shipped with imgen.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: a record per pair or image, and the mean.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: a row per pair or image, then a row with the mean.")
@click.pass_context
def metrics(ctx, paths, no_ref, channel, crop_border, align, niqe_params, as_json, as_csv):
    """Measure image quality: against a reference, or without one.

    With REF and OUT (two image files, or two folders whose images are matched by file stem),
    print PSNR (dB), SSIM and MS-SSIM of OUT against REF: higher is better. The data range
    follows the bit depth (255 or 65535; an 8-bit image met with a 16-bit one is widened, so
    16-bit pairs are compared in 16 bits), SSIM is Wang et al.'s (Gaussian window of sigma 1.5,
    K1 0.01, K2 0.03), a grey image compared with a colour one counts as R = G = B, and alpha is
    ignored. Sizes must match. MS-SSIM needs 176 pixels a side and is left empty below that.

    With --no-ref, print NIQE for each IMAGE: lower is better. Its pristine model was fitted by
    the project on its own photos, so scores compare with each other, not with published NIQE
    values; each report names the parameter file. Refit it on any folder of pristine photos
    (--exclude leaves images out by file stem, --overwrite replaces FILE):

        imgen metrics fit-niqe DIR -o FILE [--exclude STEM,...] [--overwrite]

    The table goes to stdout; --json and --csv are for scripts. Each pair or image that fails
    gets a one-line error on stderr, and the exit status is then 1.
    """
    if ctx.invoked_subcommand:
        return
    try:
        ctx.exit(_score(ctx, paths, no_ref, channel, crop_border, align, niqe_params, as_json, as_csv))
    except UsageError as exc:
        click.echo(f"imgen: error: {exc}", err=True)
        ctx.exit(exc.exit_code)


def _score(ctx, paths, no_ref, channel, crop_border, align, niqe_params, as_json, as_csv) -> int:
    if as_json and as_csv:
        raise UsageError("--json and --csv exclude each other")
    if no_ref:
        for name in ("channel", "crop_border", "align"):
            if ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP"):
                raise UsageError(f"--{name.replace('_', '-')} applies to REF OUT comparisons, not to --no-ref")
        return _no_reference(paths, niqe_params, as_json, as_csv)
    if niqe_params:
        raise UsageError("--niqe-params goes with --no-ref")
    if paths and paths[0] == SUBCOMMAND:
        raise UsageError(f"{SUBCOMMAND} comes first: imgen metrics {SUBCOMMAND} DIR -o FILE")
    if len(paths) != 2:
        raise UsageError(f"give REF OUT (two files or two folders), or --no-ref IMAGE...; got {len(paths)} paths")
    return _full_reference(paths[0], paths[1], channel, crop_border, align, as_json, as_csv)


@metrics.command(SUBCOMMAND, cls=ExampleCommand, context_settings={"help_option_names": ["-h", "--help"]}, examples=[
    ("imgen metrics fit-niqe pristine/ -o niqe.npz", "Fit on every image of a folder"),
    ("imgen metrics --no-ref --niqe-params niqe.npz photo.png", "Score with the model just fitted"),
])
@click.argument("folder", type=click.Path(), metavar="DIR")
@click.option("-o", "--output", required=True, metavar="FILE", help="The .npz file to write.")
@click.option("--exclude", multiple=True, metavar="STEM[,STEM...]",
              help="Leave out images with these file stems (e.g. held-out validation photos); repeatable.")
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists.")
def fit_niqe_command(folder, output, exclude, overwrite):
    """Fit NIQE's pristine model on the images of DIR (sharp, undistorted photos).

    The model shipped with imgen was made with:

    \b
        imgen metrics fit-niqe ../shared/datasets/photos --exclude bridge,friends,kite,raindrops,wood \\
            -o imgen_cli/metrics/niqe_pristine.npz --overwrite
    """
    from . import batch
    from . import io as imageio_

    try:
        if not os.path.isdir(folder):
            raise UsageError(f"{folder}: not a folder")
        if os.path.exists(output) and not overwrite:
            raise OutputError("exists (use --overwrite to replace it)", output)
        skip = {stem for item in exclude for stem in item.split(",") if stem}
        sources = [s for s in batch.expand_inputs((folder,), stdin_is_tty=True) if Path(s).stem not in skip]
        if not sources:
            raise UsageError(f"{folder}: no images left to fit on")
        from .metrics import fit_niqe

        def images():
            for source in sources:
                yield batch.read_source(source, imageio_.DEFAULT_MAX_PIXELS).array

        try:
            params = fit_niqe(images())
        except ValueError as exc:
            raise ImgenError(str(exc), folder) from None
        imageio_.write_atomic(output, params.to_bytes(), overwrite=overwrite)
    except ImgenError as exc:
        click.echo(f"imgen: error: {exc}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    left_out = len(skip & {Path(s).stem for s in batch.expand_inputs((folder,), stdin_is_tty=True)})
    note = f" ({left_out} left out)" if left_out else ""
    click.echo(f"imgen: wrote {output}: NIQE model of {params.patches} sharp patches from {params.images} "
               f"images{note}", err=True)


# -- scoring ----------------------------------------------------------------------------------------


def _read(path: str):
    from . import batch
    from . import io as imageio_

    return batch.read_source(path, imageio_.DEFAULT_MAX_PIXELS)


def _pairs(ref: str, out: str) -> list[tuple[str, str | None, str | None]]:
    """(reference, output, error) per pair: two files, or the images of two folders by stem."""
    from . import batch

    ref_dir, out_dir = os.path.isdir(ref), os.path.isdir(out)
    if ref_dir != out_dir:
        raise UsageError(f"REF and OUT must both be files or both be folders ({ref} is {'a folder' if ref_dir else 'a file'}, "
               f"{out} is {'a folder' if out_dir else 'a file'})")
    if not ref_dir:
        return [(ref, out, None)]
    references = batch.expand_inputs((ref,), stdin_is_tty=True)
    outputs = {Path(p).stem: p for p in reversed(batch.expand_inputs((out,), stdin_is_tty=True))}
    pairs = []
    for path in references:
        match = outputs.get(Path(path).stem)
        pairs.append((path, match, None if match else f"no image named {Path(path).stem}.* in {out}"))
    return pairs


def _full_reference(ref, out, channel, crop_border, align, as_json, as_csv) -> int:
    from .metrics import ms_ssim, psnr, ssim
    from .metrics.fullref import MS_MIN_SIDE

    def score(record):
        if record["error"]:
            raise InputError(record["error"], record["ref"])
        a, b = _read(record["ref"]).array, _read(record["out"]).array
        a, b, record["aligned"] = _align(a, b, align, record["ref"], record["out"])
        record["bits"] = 16 if 2 in (a.dtype.itemsize, b.dtype.itemsize) else 8
        conventions = {"channel": channel, "crop_border": crop_border}
        record["psnr"] = psnr(a, b, **conventions)
        record["ssim"] = ssim(a, b, **conventions)
        if min(a.shape[:2]) - 2 * crop_border >= MS_MIN_SIDE:
            record["ms_ssim"] = ms_ssim(a, b, **conventions)

    records = [{"ref": ref_path, "out": out_path, "psnr": None, "ssim": None, "ms_ssim": None, "bits": None,
                "aligned": None, "error": problem} for ref_path, out_path, problem in _pairs(ref, out)]
    done = _score_each(records, "out", score)
    mean = {key: _mean([r[key] for r in done]) for key in ("psnr", "ssim", "ms_ssim")}
    summary = {"metric": "full-reference", "channel": channel, "crop_border": crop_border, "align": align,
               "pairs": records, "mean": mean, "failed": len(records) - len(done)}
    columns = [("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4), ("ms_ssim", "MS-SSIM", 4)]
    caption = (f"channel {'Y (BT.601)' if channel == 'y' else 'RGB'}, crop border {crop_border}"
               + (", aligned by cropping" if any(r["aligned"] for r in done) else ""))
    _report(summary, records, ("ref", "out"), columns, caption, as_json, as_csv)
    return FAILED if summary["failed"] else OK


def _align(a, b, align: str, ref_path: str, out_path: str):
    """Both arrays the same size, or an InputError naming both sizes; the crop made, if any."""
    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    if (ha, wa) == (hb, wb):
        return a, b, None
    sizes = f"{wb}x{hb}, the reference {ref_path} is {wa}x{ha}"
    if align != "scale":
        raise InputError(f"size differs: {sizes} (--align scale crops a modcrop difference)", out_path)
    if max(abs(ha - hb), abs(wa - wb)) >= ALIGN_LIMIT:
        raise InputError(f"size differs by {ALIGN_LIMIT} pixels or more: {sizes}", out_path)
    h, w = min(ha, hb), min(wa, wb)
    return a[:h, :w], b[:h, :w], f"{w}x{h}"


def _no_reference(paths, params_path, as_json, as_csv) -> int:
    from . import batch
    from .metrics import load_params, niqe

    if not paths:
        raise UsageError("--no-ref needs images (files or folders)")
    sources = batch.expand_inputs(paths, stdin_is_tty=_isatty(sys.stdin))
    try:
        params = load_params(params_path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    def score(record):
        record["niqe"] = niqe(_read(record["image"]).array, params)

    records = [{"image": source, "niqe": None, "error": None} for source in sources]
    done = _score_each(records, "image", score)
    summary = {"metric": "niqe", "params": params.describe(), "params_file": params.path,
               "params_sha256": params.sha256, "images": records, "mean": {"niqe": _mean([r["niqe"] for r in done])},
               "failed": len(records) - len(done)}
    caption = f"NIQE, lower is better; parameters: {params.describe()}"
    _report(summary, records, ("image",), [("niqe", "NIQE", 3)], caption, as_json, as_csv)
    return FAILED if summary["failed"] else OK


def _score_each(records: list[dict], blamed: str, score) -> list[dict]:
    """Score every record in place; return those that succeeded.

    A record that fails keeps its one-line error (also printed on stderr) and the others go on.
    A ValueError from imgen_cli.metrics (an image it cannot score) names the file in record[blamed].
    """
    for record in records:
        try:
            try:
                score(record)
            except ValueError as exc:
                raise InputError(str(exc), record[blamed]) from None
        except ImgenError as exc:
            record["error"] = str(exc)
            click.echo(f"imgen: error: {exc}", err=True)
    return [r for r in records if r["error"] is None]


def _mean(values: list) -> float | None:
    """The mean, or None when a value is missing (infinite if a PSNR is: identical images)."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _report(summary: dict, records: list[dict], names: tuple[str, ...], columns, caption: str,
            as_json: bool, as_csv: bool) -> None:
    if as_json:
        import json

        # JSON has no infinity: an infinite PSNR (identical images) is written as null.
        click.echo(json.dumps(_finite(summary), indent=2))
        return
    cell = lambda value, digits: "" if value is None else "inf" if value == math.inf else f"{value:.{digits}f}"  # noqa: E731
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([*names, *(key for key, _, _ in columns), "error"])
        for r in records:
            writer.writerow([*(r[n] for n in names), *(cell(r[k], 6) for k, _, _ in columns), r["error"] or ""])
        writer.writerow(["mean", *([""] * (len(names) - 1)), *(cell(summary["mean"][k], 6) for k, _, _ in columns), ""])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for name in names:
        table.add_column(name)
    for _, title, _ in columns:
        table.add_column(title, justify="right")
    for r in records:
        values = [cell(r[k], d) for k, _, d in columns] if r["error"] is None else ["[red]failed[/red]"] + [""] * (len(columns) - 1)
        table.add_row(*(r[n] or "-" for n in names), *values)
    if len(records) > 1:
        table.add_row("[bold]mean[/bold]", *([""] * (len(names) - 1)),
                      *(cell(summary["mean"][k], d) for k, _, d in columns))
    # Piped tables keep whole paths instead of rich's default 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False)
    console.print(table)
    console.print(caption, soft_wrap=True, highlight=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
