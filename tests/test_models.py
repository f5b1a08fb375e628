"""Community models through --model: weights files, safe loading, the user model folder."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imgen_cli import errors
from imgen_cli import io as imgio


def read(path):
    return imgio.decode(path.read_bytes()).array


@pytest.fixture
def finetuned(test_plugins):
    """The test upscaler's architecture with other weights, as a user's fine-tune would be."""
    network = test_plugins.models["tiny-x2"].load()
    state = {k: v + 0.05 for k, v in network.state_dict().items()}
    return state


def test_safetensors_file_runs_with_the_commands_architecture(imgen, finetuned, tmp_image, tmp_path):
    save_file(finetuned, str(tmp_path / "mine.safetensors"))
    source = tmp_image("in.png")
    assert imgen(["tinyup", source, "-o", "default.png"]).exit_code == 0
    result = imgen(["tinyup", source, "--model", "mine.safetensors", "-o", "mine.png"])
    assert result.exit_code == 0, result.stderr
    mine, default = read(tmp_path / "mine.png"), read(tmp_path / "default.png")
    assert mine.shape == default.shape == (192, 256, 3)
    assert np.abs(mine.astype(int) - default.astype(int)).mean() > 1


def test_plain_pth_state_dict_loads_with_weights_only(imgen, finetuned, tmp_image, tmp_path):
    torch.save({"params_ema": finetuned}, tmp_path / "mine.pth")
    result = imgen(["tinyup", tmp_image("in.png"), "--model", "mine.pth", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr


class Payload:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_file_needing_unrestricted_unpickling_is_refused(imgen, test_plugins, tmp_image, tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    result = imgen(["tinyup", tmp_image("in.png"), "--model", "evil.pth", "-o", "out.png"])
    assert result.exit_code == errors.USAGE
    assert "refused: this file needs unrestricted unpickling" in result.stderr
    assert "this would run arbitrary code" not in result.stdout
    assert not (tmp_path / "out.png").exists()


def test_unknown_model_name_is_a_usage_error(imgen, test_plugins, tmp_image):
    result = imgen(["tinyup", tmp_image("in.png"), "--model", "nope"])
    assert result.exit_code == errors.USAGE and "unknown model 'nope'" in result.stderr


def test_model_of_another_command_is_refused(imgen, test_plugins, tmp_image):
    result = imgen(["fill", "--mask", tmp_image("m.png"), tmp_image("in.png"), "--model", "tiny-x2"])
    assert result.exit_code == errors.USAGE


def test_user_model_folder_is_searched_by_name_and_listed(imgen, finetuned, tmp_image, tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    save_file(finetuned, str(folder / "crisp.safetensors"))
    monkeypatch.setenv("IMGEN_MODELS", str(folder))
    result = imgen(["tinyup", tmp_image("in.png"), "--model", "crisp", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(imgen(["models", "--json"]).stdout)}
    assert rows["crisp"]["source"] == "user" and rows["crisp"]["weights"].endswith("crisp.safetensors")
    assert rows["tiny-x2"]["source"] == "imgen_test_tiny"


def test_weights_of_another_architecture_say_why(imgen, test_plugins, tmp_image, tmp_path):
    save_file({"something.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    result = imgen(["tinyup", tmp_image("in.png"), "--model", "other.safetensors"])
    assert result.exit_code in (errors.PLUGIN, errors.USAGE)
    assert "other.safetensors" in result.stderr and "Traceback" not in result.stderr
