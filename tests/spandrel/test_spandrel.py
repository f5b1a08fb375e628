"""Community architectures through spandrel, in the environment that has it (see .ci/run).

The model files are made here: spandrel's own architectures with random weights, saved the way
users' downloads come (.pth state dicts, .safetensors).
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import DATA
from imgen_cli import io as imgio

spandrel = pytest.importorskip("spandrel", reason="run in the spandrel environment of .ci/run")


def read(path):
    return imgio.decode(path.read_bytes()).array


@pytest.fixture
def esrgan_file(tmp_path):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    network = ESRGAN(num_filters=16, num_blocks=1, scale=2)
    for p in network.parameters():
        p.data.mul_(0.1)
    path = tmp_path / "tiny-esrgan-x2.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture
def compact_file(tmp_path):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    network = Compact(num_feat=16, num_conv=4, upscale=4)
    path = tmp_path / "tiny-compact-x4.safetensors"
    save_file(network.state_dict(), str(path))
    return path


def test_esrgan_pth_upscales_through_sr_tiled(imgen, esrgan_file, tmp_path):
    source = DATA / "kite.png"
    tiled = imgen(["sr", source, "--model", esrgan_file, "--tile", "96", "-o", "tiled.png"])
    assert tiled.exit_code == 0, tiled.stderr
    assert read(tmp_path / "tiled.png").shape == (512, 512, 3)
    whole = imgen(["sr", source, "--model", esrgan_file, "--tile", "0", "-o", "whole.png"])
    assert whole.exit_code == 0, whole.stderr
    difference = np.abs(read(tmp_path / "tiled.png").astype(int) - read(tmp_path / "whole.png").astype(int))
    assert difference.mean() < 1.0


def test_compact_safetensors_scale_comes_from_the_descriptor(imgen, compact_file, tmp_path):
    result = imgen(["sr", DATA / "bridge.png", "--model", compact_file, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert read(tmp_path / "out.png").shape == (1024, 1024, 3)


def test_sr_model_refused_by_a_command_of_another_purpose(imgen, esrgan_file):
    result = imgen(["denoise", DATA / "kite.png", "--model", esrgan_file, "-o", "out.png"])
    assert result.exit_code == 2
    assert "does not fit `imgen denoise`" in result.stderr
