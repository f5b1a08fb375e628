"""Batch runs as scripts and users meet them: folders run twice, trees, names, plans, records, jobs."""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import DATA, count_loads, imgen_cmd, imgen_env, read, run_imgen_on_terminal
from imgen_cli import errors


def album(tmp_image, folder, names=("a.jpg", "b.png")):
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        (folder / name).write_bytes(tmp_image(f"src-{seed}-{name}", seed=seed).read_bytes())
        (tmp_image(f"src-{seed}-{name}").unlink())
    return folder


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- folders ------------------------------------------------------------------------------------


def test_a_folder_run_twice_never_takes_its_own_outputs(imgen, test_plugins, tmp_image, tmp_path):
    fold = album(tmp_image, tmp_path / "fold")
    first = imgen(["tinyup", fold])
    assert first.exit_code == 0, first.stderr
    assert files(fold) == ["a-tinyup-x2.jpg", "a.jpg", "b-tinyup-x2.png", "b.png"]
    written = {name: (fold / name).read_bytes() for name in files(fold)}

    again = imgen(["tinyup", fold])  # the outputs exist: refused, as for any existing output
    assert again.exit_code == errors.FAILED
    assert "a-tinyup-x2.jpg: exists" in again.stderr
    skipped = imgen(["tinyup", fold, "--skip-existing", "-v"])
    assert skipped.exit_code == 0, skipped.stderr
    assert f"{fold / 'a-tinyup-x2.jpg'}: left out, named like an output of this command" in skipped.stderr
    assert "0 written, 2 skipped" in skipped.stderr
    redone = imgen(["tinyup", fold, "--overwrite"])
    assert redone.exit_code == 0 and "2 written" in redone.stderr
    assert files(fold) == sorted(written)
    assert all((fold / name).read_bytes() == data for name, data in written.items())
    # An x2 run leaves out the x4 run's outputs too; another command's outputs are ordinary inputs.
    assert files(fold)[0] == "a-tinyup-x2.jpg"
    (fold / "a-tinyup-x4.jpg").write_bytes((fold / "a-tinyup-x2.jpg").read_bytes())
    assert imgen(["tinyup", fold, "--dry-run", "--overwrite"]).stdout.count(" -> ") == 2
    assert imgen(["invert", fold, "--dry-run"]).stdout.count(" -> ") == 5


def test_lowlight_on_a_folder_twice_as_the_issue_tells_it(imgen, test_plugins, tmp_path):
    fold = tmp_path / "fold"
    fold.mkdir()
    (fold / "friends.jpg").write_bytes(_crop(DATA / "kite.png", "JPEG"))
    assert imgen(["lowlight", fold]).exit_code == 0
    for flags in ([], ["--skip-existing"], ["--overwrite"]):
        imgen(["lowlight", fold, *flags])
        assert files(fold) == ["friends-lowlight.jpg", "friends.jpg"]
    (fold / "friends.jpg").unlink()
    alone = imgen(["lowlight", fold])
    assert alone.exit_code == 0 and "nothing to do" in alone.stderr and files(fold) == ["friends-lowlight.jpg"]


def test_recursive_mirrors_the_tree_and_without_it_subfolders_are_mentioned_once(imgen, test_plugins, tmp_image,
                                                                                   tmp_path):
    fold = album(tmp_image, tmp_path / "fold", ["a.png"])
    album(tmp_image, fold / "trip" / "day1", ["b.jpg"])
    album(tmp_image, fold / "trip" / "day2", ["c.png"])
    album(tmp_image, fold / ".cache", ["hidden.png"])

    only_subfolders = imgen(["invert", fold / "trip"])
    assert only_subfolders.exit_code == errors.USAGE and "-r takes its subfolders' too" in only_subfolders.stderr
    flat = imgen(["invert", fold, "-o", tmp_path / "flat"])
    assert flat.exit_code == 0, flat.stderr
    assert files(tmp_path / "flat") == ["a.png"]
    assert flat.stderr.count("left out subfolder") == 1
    assert f"left out subfolder {fold / 'trip'} and" not in flat.stderr  # .cache is not worth a word

    tree = imgen(["invert", fold, "-r", "-o", tmp_path / "tree"])
    assert tree.exit_code == 0, tree.stderr
    assert files(tmp_path / "tree") == ["a.png", "trip/day1/b.jpg", "trip/day2/c.png"]
    assert np.array_equal(read(tmp_path / "tree" / "trip" / "day2" / "c.png"),
                          255 - read(fold / "trip" / "day2" / "c.png"))

    # Outputs mirrored into a folder inside the input are never read back by the next run.
    inside = fold / "done"
    assert imgen(["invert", fold, "-r", "-o", inside]).exit_code == 0
    rerun = imgen(["invert", fold, "-r", "-o", inside, "--skip-existing"])
    assert rerun.exit_code == 0 and "0 written, 3 skipped" in rerun.stderr
    assert files(inside) == ["a.png", "trip/day1/b.jpg", "trip/day2/c.png"]

    beside = imgen(["invert", fold, "-r"])
    assert beside.exit_code == 0, beside.stderr
    assert (fold / "trip" / "day1" / "b-invert.jpg").exists()


# -- names --------------------------------------------------------------------------------------


def test_suffix_and_name_template(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("photo.jpg")
    assert imgen(["tinyup", source, "--suffix", "_big"]).exit_code == 0
    assert read(tmp_path / "photo_big.jpg").shape == (192, 256, 3)
    result = imgen(["tinyup", source, "--name", "{stem}-{command}{scale}x.{ext}", "--format", "png"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "photo-tinyup2x.png").read_bytes()[:4] == b"\x89PNG"
    assert imgen(["tinyup", source, "--name", "{model}/{stem}"]).exit_code == errors.USAGE
    # A template names outputs in an output folder too; without one, they keep the input's name.
    assert imgen(["tinyup", source, tmp_image("other.png"), "--name", "{stem}_{model}.{ext}", "-o", "out"]).exit_code == 0
    assert files(tmp_path / "out") == ["other_tiny-x2.png", "photo_tiny-x2.jpg"]

    unknown = imgen(["tinyup", source, "--name", "{stem}-{size}.{ext}"])
    assert unknown.exit_code == errors.USAGE
    assert unknown.stderr.strip() == ("imgen: error: --name {stem}-{size}.{ext}: unknown field {size} "
                                      "(use {stem}, {ext}, {command}, {scale}, {model})")
    both = imgen(["tinyup", source, "--name", "{stem}.{ext}", "--suffix", "_x"])
    assert both.exit_code == errors.USAGE and "give one" in both.stderr
    # A suffix that gives the input's own name is refused before anything runs.
    assert imgen(["tinyup", source, "--suffix", ""]).exit_code == errors.USAGE


def test_default_names_tell_scales_and_chains_apart(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("photo.png")
    plan = imgen(["invert", "+", "tinyup", "+", "smooth", source, "--dry-run"])
    assert plan.exit_code == 0, plan.stderr
    assert plan.stdout.strip() == f"{source} -> {tmp_path / 'photo-invert-tinyup-smooth-x2.png'}  (tiny-x2)"
    assert imgen(["sr", "--scale", "2", source, "--dry-run"]).stdout.split(" -> ")[1].startswith(
        str(tmp_path / "photo-sr-x2.png"))
    assert str(tmp_path / "photo-sr-x4.png") in imgen(["sr", "--scale", "4", source, "--dry-run"]).stdout
    # A target size is named as such: the factor differs from image to image.
    assert str(tmp_path / "photo-sr-300x200.png") in imgen(["sr", "--fit", "300x200", source, "--dry-run"]).stdout
    assert str(tmp_path / "photo-denoise-w300.png") in imgen(["denoise", "--width", "300", source, "--dry-run"]).stdout


def test_o_file_with_several_inputs_is_a_usage_error(imgen, test_plugins, tmp_image, tmp_path):
    one, two = tmp_image("one.png"), tmp_image("two.png", seed=1)
    result = imgen(["invert", one, two, "-o", "both.png"])
    assert result.exit_code == errors.USAGE
    assert result.stderr.strip() == ("imgen: error: -o both.png: names one file, but 2 inputs need a folder "
                                     "(-o FOLDER, or one input per run)")
    assert not (tmp_path / "both.png").exists()
    fold = album(tmp_image, tmp_path / "fold", ["a.png"])
    assert imgen(["invert", fold, "-o", "a.webp"]).exit_code == errors.USAGE
    assert not (tmp_path / "a.webp").exists()
    assert imgen(["invert", one, two, "-o", "both"]).exit_code == 0  # a name without extension is a folder
    assert files(tmp_path / "both") == ["one.png", "two.png"]


def test_two_inputs_to_one_output_are_refused_before_any_work(imgen, test_plugins, tmp_image, tmp_path, monkeypatch):
    calls = count_loads(test_plugins, "tiny-x2", monkeypatch)
    album(tmp_image, tmp_path / "x", ["photo.png"])
    album(tmp_image, tmp_path / "y", ["photo.png"])
    clash = imgen(["tinyup", tmp_path / "x" / "photo.png", tmp_path / "y" / "photo.png", "-o", "out"])
    assert clash.exit_code == errors.USAGE
    assert "would both be written to out/photo.png" in clash.stderr
    template = imgen(["tinyup", tmp_path / "x", tmp_path / "y", "--name", "big.{ext}", "-o", "out"])
    assert template.exit_code == errors.USAGE and "would both be written to out/big.png" in template.stderr
    assert calls == [] and not (tmp_path / "out").exists()
    # Mirrored trees keep them apart.
    assert imgen(["tinyup", tmp_path, "-r", "-o", "out"]).exit_code == 0
    assert {"x/photo.png", "y/photo.png"} <= set(files(tmp_path / "out"))


# -- scripting ----------------------------------------------------------------------------------


def test_json_records_one_per_input_and_a_summary(imgen, test_plugins, tmp_image, tmp_path):
    good = tmp_image("good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = imgen(["tinyup", good, "bad.png", "-o", "out", "--json", "--report", "report.jsonl", "--device", "cpu"])
    assert result.exit_code == errors.FAILED
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records == [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    first, second, summary = records
    assert first["input"] == str(good) and first["output"] == "out/good.png" and first["status"] == "written"
    assert first["error"] is None and first["size_in"] == [128, 96] and first["size_out"] == [256, 192]
    assert (first["model"], first["device"], first["precision"]) == ("tiny-x2", "cpu", "fp32")
    assert first["seconds"] > 0
    assert second["status"] == "failed" and "not a supported image" in second["error"]
    assert summary["summary"] is True and (summary["written"], summary["failed"], summary["skipped"]) == (1, 1, 0)
    # Messages stay on stderr.
    assert "imgen: 1 written, 1 failed" in result.stderr

    piped = imgen(["invert", "--json"], input=good.read_bytes())
    assert piped.exit_code == errors.USAGE and "--report FILE" in piped.stderr and piped.stdout_bytes == b""


def test_dry_run_writes_and_loads_nothing(imgen, test_plugins, tmp_image, tmp_path, monkeypatch):
    calls = count_loads(test_plugins, "tiny-x2", monkeypatch)
    fold = album(tmp_image, tmp_path / "fold")
    (fold / "b-tinyup-x2.png").write_bytes(b"an earlier output")
    before = files(tmp_path)
    plan = imgen(["tinyup", fold, "--dry-run", "--skip-existing"])
    assert plan.exit_code == 0, plan.stderr
    assert plan.stdout.splitlines() == [f"{fold / 'a.jpg'} -> {fold / 'a-tinyup-x2.jpg'}  (tiny-x2)",
                                        f"{fold / 'b.png'} -> {fold / 'b-tinyup-x2.png'}  (tiny-x2)  [exists, skipped]"]
    # With -o FOLDER nothing is written beside the inputs: every image of the folder is an input.
    as_json = imgen(["tinyup", fold, "--dry-run", "--json", "-o", "out"])
    assert [json.loads(line).get("status") for line in as_json.stdout.splitlines()] == ["planned"] * 3 + [None]
    assert calls == [] and files(tmp_path) == before


def test_jobs_2_writes_the_same_bytes_as_jobs_1(imgen, test_plugins, tmp_path):
    fold = tmp_path / "photos"
    fold.mkdir()
    for name in ("kite", "wood", "bridge"):  # real photos, cropped small to keep the test fast
        for fmt in ("PNG", "JPEG"):
            (fold / f"{name}.{fmt.lower()}").write_bytes(_crop(DATA / f"{name}.png", fmt))
    one = imgen(["denoise", fold, "-o", "one", "--jobs", "1", "--tile", "64", "--device", "cpu"])
    two = imgen(["denoise", fold, "-o", "two", "--tile", "64", "-v", "--device", "cpu"])  # auto: 2 for small images
    assert one.exit_code == 0 and two.exit_code == 0, two.stderr
    assert "2 files at once" in two.stderr
    names = files(tmp_path / "one")
    assert len(names) == 6 and files(tmp_path / "two") == names
    assert all((tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes() for n in names)
    # Written and reported in input order whatever finishes first.
    wrote = [line.split()[2] for line in two.stderr.splitlines() if line.startswith("imgen: wrote")]
    assert wrote == [f"two/{n}" for n in names]


def _crop(path, fmt):
    import io

    from PIL import Image

    out = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").crop((40, 60, 168, 156)).save(out, fmt, quality=90)
    return out.getvalue()


def test_ctrl_c_with_jobs_stops_the_running_images_too(tmp_path):
    import signal
    import time

    # 81 tiles of 0.2 s per image: finishing the two running images would take over 16 s.
    proc = subprocess.Popen(imgen_cmd() + ["slow", DATA / "kite.png", DATA / "wood.png", DATA / "bridge.png",
                                           "--tile", "32", "--jobs", "2", "-o", tmp_path / "out", "-v", "--device", "cpu"],
                            stderr=subprocess.PIPE, env=imgen_env())
    started = []
    while len(started) < 2:  # both images are running their tiles
        line = proc.stderr.readline().decode()
        assert line, "imgen ended before running its images"
        started += [line] if "tiles of" in line else []
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == errors.INTERRUPTED and time.monotonic() - signalled < 8
    assert err.strip().splitlines()[-1] == "imgen: interrupted" and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_jobs_auto_runs_big_images_and_single_files_one_at_a_time(imgen, test_plugins, tmp_image, monkeypatch):
    from imgen_cli import cli

    monkeypatch.setattr(cli, "_cores", lambda: 4)
    small = [tmp_image("a.png"), tmp_image("b.png", seed=1)]
    assert "2 files at once, 2 torch threads each" in imgen(["invert", *small, "-o", "out", "-v", "--device", "cpu"]).stderr
    monkeypatch.setattr(cli, "AUTO_JOBS_MAX_PIXELS", 96 * 128 - 1)
    assert "files at once" not in imgen(["invert", *small, "-o", "big", "-v", "--device", "cpu"]).stderr
    assert imgen(["invert", small[0], "--jobs", "0"]).exit_code == errors.USAGE


def test_imgen_ray_refuses_the_local_batch_options(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png")
    for option, hint in ((["--json"], "--results FILE"), (["--jobs", "2"], "--actors N"),
                         (["--suffix", "_x"], "keep their input's name")):
        result = imgen(["ray", "invert", source, "-o", "out", *option])
        assert result.exit_code == errors.USAGE and hint in result.stderr, result.stderr


# -- feedback -----------------------------------------------------------------------------------


def test_verbose_tells_model_device_precision_tiles_and_time(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png", height=200, width=300)
    result = imgen(["tinyup", source, "--tile", "128", "-v", "-o", "out.png", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "imgen: tinyup: model tiny-x2 on cpu, fp32" in lines
    assert any(re.fullmatch(rf"imgen: {source}: tinyup: \d+ tiles of 1\d\dx1\d\d px", line) for line in lines)
    assert any(line.startswith("imgen: wrote out.png (300x200 -> 600x400) in ") and line.endswith(" s")
               for line in lines)
    # A PNG file is written while the tiles run (no phase of its own); other formats after them.
    assert not any("writing" in line for line in lines)
    result = imgen(["tinyup", source, "--tile", "128", "-v", "-o", "out.jpg", "--device", "cpu"])
    assert "imgen: writing out.jpg, 0.24 MP…" in result.stderr.splitlines()


@pytest.mark.parametrize("term", ["dumb", "xterm"])
def test_progress_on_a_dumb_terminal_is_plain_text(tmp_path, term):
    # JPEG: a PNG file is written while the tiles run, other formats in a phase of their own.
    proc, shown = run_imgen_on_terminal(["slow", DATA / "kite.png", DATA / "wood.png", "--tile", "128",
                                         "-o", tmp_path / "out", "--jobs", "1", "--format", "jpeg"], {"TERM": term})
    assert proc.returncode == 0
    if term == "dumb":
        assert b"\x1b" not in shown and b"\r\r" not in shown and b"\r" not in shown.replace(b"\r\n", b"\n")
        text = shown.decode().replace("\r\n", "\n")
        assert re.search(r"^imgen: tiles (\d+)/\1 tile \(100%\)$", text, re.M)
        assert "imgen: images 2/2 img (100%)" in text
        assert f"imgen: writing {tmp_path / 'out' / 'kite.jpg'}, 0.066 MP…" in text
    else:
        # The bar, then the encode phase as a status line of its own.
        assert b"tiles" in shown and b"\r" in shown
        # (shortened to the terminal's width)
        assert f"writing {tmp_path / 'out' / 'wood.jpg'}"[:60].encode() in shown
