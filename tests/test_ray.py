"""`imgen ray`: a chain over a folder tree on a local Ray instance, started once for the session.

The CLI runs as a subprocess that joins that instance with --address, as it would join a
cluster; its actors are the instance's workers.
"""

import csv
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import DATA, TEST_PLUGINS, imgen_cmd, imgen_env, run_imgen
from imgen_cli import errors
from imgen_cli import io as imageio_

CHAIN = ["denoise", "+", "sr", "--scale", "2"]


@pytest.fixture(scope="session")
def ray_address():
    """Address of a local Ray instance (2 CPUs) whose workers load the test plugins too."""
    ray = pytest.importorskip("ray")  # the optional extra; .ci/run installs it
    import logging

    # Workers inherit the raylet's environment, which is this process's at ray.init.
    saved = {name: os.environ.get(name) for name in ("IMGEN_PLUGINS", "PYTHONPATH")}
    os.environ.update({name: imgen_env()[name] for name in saved})
    try:
        # address="local": a new instance, never one a stale /tmp/ray/ray_current_cluster points to.
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _image(rng, height, width, channels, dtype=np.uint8):
    top = np.iinfo(dtype).max
    return rng.integers(0, top, (height, width, channels), dtype=dtype, endpoint=True)


@pytest.fixture
def tree(tmp_path):
    """in/ with two sizes of 8-bit image, a corrupt file, and sub/ with a 16-bit RGBA PNG that
    carries an ICC profile and EXIF."""
    rng = np.random.default_rng(1)
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    pictures = {
        "a.png": imageio_.Picture(_image(rng, 24, 32, 3), "png"),
        "b.jpg": imageio_.Picture(_image(rng, 40, 20, 3), "jpeg"),
        "sub/deep.png": imageio_.Picture(_image(rng, 20, 28, 4, np.uint16), "png",
                                         icc=_srgb_profile(), exif=_exif()),
    }
    for name, picture in pictures.items():
        data, _ = imageio_.encode(picture, picture.format)
        (root / name).write_bytes(data)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 8)
    return root


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "imgen test camera"  # Make
    return exif.tobytes()


def _ray(args, address, **kwargs):
    return run_imgen(["ray", *args, "--address", address], **kwargs)


def test_outputs_equal_local_imgen_mirror_the_tree_and_rerun_skips(tree, tmp_path, ray_address):
    out = tmp_path / "out"
    table = tmp_path / "table.csv"
    first = _ray([*CHAIN, tree, "-o", out, "--actors", "2", "--batch-size", "1", "--results", table], ray_address)
    stderr = first.stderr.decode()
    assert first.returncode == errors.FAILED, stderr
    assert f"imgen: error: {tree / 'broken.png'}: not a supported image" in stderr or \
        f"imgen: error: {tree / 'broken.png'}: cannot decode PNG image" in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("imgen: 3 written, 1 failed in "), stderr

    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b.jpg", "sub/deep.png"]
    # The same bytes as imgen run locally, one process per folder.
    local = tmp_path / "local"
    for folder, into in ((tree, local), (tree / "sub", local / "sub")):
        done = run_imgen([*CHAIN, folder, "-o", f"{into}{os.sep}"])
        assert done.returncode == (errors.FAILED if folder == tree else 0), done.stderr.decode()
    for name in written:
        assert (out / name).read_bytes() == (local / name).read_bytes(), name

    deep_in = imageio_.decode((tree / "sub/deep.png").read_bytes())
    deep_out = imageio_.decode((out / "sub/deep.png").read_bytes())
    assert deep_out.array.dtype == np.uint16 and deep_out.array.shape == (40, 56, 4)
    assert deep_out.icc == deep_in.icc and deep_out.exif == deep_in.exif

    with open(table, newline="") as f:
        rows = {row["input"]: row for row in csv.DictReader(f)}
    assert set(rows) == {str(tree / name) for name in ("a.png", "b.jpg", "broken.png", "sub/deep.png")}
    bad = rows[str(tree / "broken.png")]
    assert bad["status"] == "failed" and "PNG" in bad["error"]
    assert rows[str(tree / "sub/deep.png")]["output"] == str(out / "sub/deep.png")
    # A file that fails to decode can take under the table's millisecond resolution.
    assert all(float(row["seconds"]) > 0 for row in rows.values() if row["status"] == "written")
    assert all(float(row["seconds"]) >= 0 for row in rows.values())

    stamps = {name: (out / name).stat().st_mtime_ns for name in written}
    again = _ray([*CHAIN, tree, "-o", out], ray_address)
    assert again.returncode == errors.FAILED
    assert again.stderr.decode().strip().splitlines()[-1].startswith("imgen: 0 written, 3 skipped, 1 failed")
    assert stamps == {name: (out / name).stat().st_mtime_ns for name in written}


def test_api_result_table_and_overwrite(tree, tmp_path, ray_address):
    from imgen_cli import scaleout

    out = tmp_path / "out"
    seen = []
    results = scaleout.run("lowlight", [str(tree)], str(out), format="webp", on_result=seen.append)
    assert sorted(seen, key=lambda r: r.input) == results
    assert [(os.path.relpath(r.input, tree), r.status) for r in results] == [
        ("a.png", "written"), ("b.jpg", "written"), ("broken.png", "failed"), ("sub/deep.png", "written")]
    assert results[0].output == str(out / "a.webp") and results[2].error.startswith("cannot decode PNG")
    before = (out / "a.webp").stat().st_mtime_ns
    again = scaleout.run("lowlight", [str(tree / "a.png")], str(out), format="webp", overwrite=True)
    assert [r.status for r in again] == ["written"] and (out / "a.webp").stat().st_mtime_ns > before


def test_killed_job_resumes_and_every_output_exists_once(tmp_path, ray_address):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(12):
        (src / f"{i:02d}.png").write_bytes(imageio_.encode(imageio_.Picture(_image(rng, 16, 16 + i, 3), "png"), "png")[0])
    args = ["ray", "slow", src, "-o", out, "--address", ray_address, "--batch-size", "1"]
    job = subprocess.Popen(imgen_cmd() + [str(a) for a in args], env=imgen_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while len(list(out.glob("*.png"))) < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    done_before = len(list(out.glob("*.png")))
    assert 3 <= done_before < 12, job.stderr.read().decode()

    rerun = run_imgen(args)
    assert rerun.returncode == 0, rerun.stderr.decode()
    summary = rerun.stderr.decode().strip().splitlines()[-1]
    counts = re.match(r"imgen: (\d+) written, (\d+) skipped in ", summary)
    assert counts and int(counts[2]) >= done_before and int(counts[1]) + int(counts[2]) == 12, summary
    outputs = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert outputs == sorted(p.name for p in src.iterdir())
    for name in outputs:
        assert imageio_.decode((out / name).read_bytes()).array.shape == \
            imageio_.decode((src / name).read_bytes()).array.shape


def test_a_chain_that_cannot_run_stops_the_job(tree, tmp_path, ray_address):
    # Every file would fail the same way: one message and the CLI's exit status, not a row per file.
    result = _ray(["sr", "--model", "no-such-model", tree, "-o", tmp_path / "out"], ray_address)
    assert result.returncode == errors.USAGE, result.stderr.decode()
    assert "imgen: error: unknown model 'no-such-model'" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    assert not (tmp_path / "out").exists()


def test_usage_errors_need_no_cluster(tmp_path):
    no_output = run_imgen(["ray", "invert", DATA / "kite.png"])
    assert no_output.returncode == errors.USAGE
    assert no_output.stderr.decode().strip() == "imgen: error: imgen ray writes into a folder: give -o FOLDER"
    inside = run_imgen(["ray", "invert", DATA, "-o", DATA / "out"])
    assert inside.returncode == errors.USAGE and "inside the input folder" in inside.stderr.decode()
    bad_step = run_imgen(["ray", "invert", "--no-such", DATA, "-o", tmp_path])
    assert bad_step.returncode == errors.USAGE and "imgen: error: no such option '--no-such'" in bad_step.stderr.decode()


def test_without_ray_installed_says_how_to_get_it(tmp_path):
    # A Python that cannot import ray: a module path entry that shadows it with a failing import.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ray.py").write_text("raise ImportError('no ray here')\n")
    env = imgen_env()
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), str(TEST_PLUGINS)])
    result = subprocess.run(imgen_cmd() + ["ray", "invert", str(DATA / "kite.png"), "-o", str(tmp_path / "o")],
                            capture_output=True, env=env, timeout=60)
    assert result.returncode == errors.USAGE
    assert result.stderr.decode().strip() == "imgen: error: imgen ray needs Ray: pip install 'imgen[ray]'"


def test_without_address_starts_its_own_instance_despite_a_stale_cluster_file(tmp_path):
    """A killed Ray instance leaves ray_current_cluster behind; ray.init() without an address
    follows it and waits for a cluster that is gone. `imgen ray` without --address must start a
    new instance instead, as its help says."""
    pytest.importorskip("ray")
    import tempfile

    # Ray puts sockets in its temp folder: keep the path short (AF_UNIX allows ~107 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="imgen-ray-", dir="/tmp")
    try:
        os.mkdir(os.path.join(ray_tmp, "ray"))
        with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as f:
            f.write("127.0.0.1:1\n")  # nothing listens on port 1
        src = tmp_path / "in"
        src.mkdir()
        imageio_.write_atomic(str(src / "a.png"), imageio_.encode(
            imageio_.Picture(_image(np.random.default_rng(2), 24, 32, 3), "png"), "png")[0])
        done = run_imgen(["ray", "denoise", src, "-o", tmp_path / "out", "--cpus-per-actor", "1"],
                         extra_env={"RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""})
        assert done.returncode == 0, done.stderr.decode()
        assert (tmp_path / "out" / "a.png").is_file()
    finally:
        subprocess.run(["rm", "-rf", ray_tmp])
