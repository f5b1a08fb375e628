"""The training-recipe kit (imgen_cli.recipes): schedule, checkpoints that resume exactly, exports."""

import random
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imgen_cli import recipes


def test_cosine_schedule():
    lr = 1e-3
    assert [recipes.cosine(i, 100, lr, warmup=4) for i in range(4)] == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr])
    assert recipes.cosine(4, 100, lr, warmup=4) == pytest.approx(lr)
    assert recipes.cosine(52, 100, lr, warmup=4, floor=1e-5) == pytest.approx((lr + 1e-5) / 2)
    assert recipes.cosine(100, 100, lr, floor=1e-5) == pytest.approx(1e-5)
    rates = [recipes.cosine(i, 100, lr) for i in range(101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


class Run:
    """A tiny training loop that draws from every RNG a recipe may use."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        self.model = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.objects = {"model": self.model, "optimizer": self.opt}
        self.rngs = {"gen": self.gen, "rng": self.rng}

    def step(self) -> None:
        x = torch.rand(2, 3, 8, 8, generator=self.gen) + torch.randn(2, 3, 8, 8)
        x = x * float(self.rng.random()) * float(np.random.rand()) * random.random()
        loss = (self.model(x) - x.flip(-1)).square().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def draws(self) -> list[float]:
        return [torch.rand(1, generator=self.gen).item(), torch.rand(1).item(), float(self.rng.random()),
                float(np.random.rand()), random.random()]


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    straight = Run(0)
    for _ in range(6):
        straight.step()
    expected = straight.draws()  # before the other runs touch the global RNGs

    first = Run(0)
    for _ in range(3):
        first.step()
    recipes.save_checkpoint(tmp_path / "last.pt", 3, first.objects, first.rngs, best=0.25)
    second = Run(1)  # other weights and RNG states: everything must come from the checkpoint
    state = recipes.load_checkpoint(tmp_path / "last.pt", second.objects, second.rngs)
    assert state == {"step": 3, "best": 0.25}
    for _ in range(3):
        second.step()

    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert second.draws() == expected


def test_checkpoint_is_plain_data_for_weights_only(tmp_path):
    run = Run(0)
    recipes.save_checkpoint(tmp_path / "last.pt", 1, run.objects, run.rngs)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(ck["rng"]) == {"torch", "numpy", "random", "own"} and set(ck["rng"]["own"]) == {"gen", "rng"}


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    run = Run(0)
    recipes.save_checkpoint(tmp_path / "last.pt", 1, run.objects)
    before = (tmp_path / "last.pt").read_bytes()

    def dies_halfway(obj, f):
        with open(f, "wb") as out:
            out.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        recipes.save_checkpoint(tmp_path / "last.pt", 2, run.objects)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_export_defaults_to_the_run_folder(tmp_path):
    ap = recipes.arguments(None, run=str(tmp_path / "run"), steps=10, batch=2, lr=1e-3)
    args = ap.parse_args([])
    assert recipes.export_path(args) == tmp_path / "run" / "final.safetensors"
    assert recipes.export_path(ap.parse_args(["--export", "w.safetensors"])).name == "w.safetensors"
    assert ap.parse_args(["--resume"]).resume == "" and ap.parse_args([]).resume is None

    model = torch.nn.Conv2d(3, 4, 3)
    written = recipes.export(model.state_dict(), recipes.export_path(args), metadata={"arch": "test"})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_file(str(written)).items())


def test_restore_starts_from_init_weights(tmp_path):
    source = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 3))
    recipes.export(source.state_dict(), tmp_path / "w.safetensors")
    target = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 8, 3))  # second layer differs
    args = recipes.arguments(None, run=str(tmp_path), steps=1, batch=1, lr=1.0).parse_args(
        ["--init", str(tmp_path / "w.safetensors")])
    lines = []
    assert recipes.restore(args, {"model": target}, log=lines.append) == {"step": 0}
    assert torch.equal(target[0].weight, source[0].weight)
    assert lines == [f"initialised 2/4 tensors from {tmp_path / 'w.safetensors'}"]


def test_rng_states_restore_numpy_legacy_state():
    states = recipes.rng_states()
    expected = np.random.rand(5)
    np.random.seed(123)
    recipes.set_rng_states(states)
    assert np.array_equal(np.random.rand(5), expected)


# --- the recipes themselves, on a tiny generated dataset ----------------------------------------

RECIPES = {
    "imgen_denoise.train": ["--patch", "16", "--features", "4", "--blocks", "1", "--val-crop", "16", "--batch", "2"],
    "imgen_lowlight.train": ["--crop", "32", "--batch", "2"],
    "imgen_restyle.train": ["--patch", "16", "--width", "2", "--batch", "1"],
}


@pytest.fixture(scope="module", autouse=True)
def _forget_recipes():
    """Unimport the recipes these tests import: other tests check that loading a model does not
    import its training code."""
    yield
    for name in [n for n in sys.modules if n.startswith("imgen_") and n.endswith(".train")]:
        package = sys.modules.pop(name).__name__.rpartition(".")[0]
        if hasattr(sys.modules.get(package), "train"):
            delattr(sys.modules[package], "train")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """photos/ (with the held-out names) and styles/ (with restyle's held-out ones), small images."""
    from imgen_cli.datasets import VALIDATION
    from imgen_cli.testing import natural_image
    from imgen_restyle.train import VAL_STYLES
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    for folder, names in (("photos", [*VALIDATION, "a", "b"]), ("styles", [*VAL_STYLES, "s"])):
        (root / folder).mkdir()
        for i, name in enumerate(names):
            Image.fromarray(natural_image(40, 48, seed=i + len(folder))).save(root / folder / f"{name}.png")
    return root


@pytest.mark.parametrize("module", sorted(RECIPES))
def test_recipe_stopped_and_resumed_equals_a_straight_run(tmp_path, dataset, module):
    from importlib import import_module

    main = import_module(module).main
    common = ["--data", str(dataset), "--steps", "2", "--val-every", "2", *RECIPES[module]]
    main([*common, "--run", str(tmp_path / "straight")])
    main([*common, "--run", str(tmp_path / "split"), "--stop-at", "1"])
    main([*common, "--run", str(tmp_path / "split"), "--resume"])

    straight = load_file(str(tmp_path / "straight" / "final.safetensors"))  # the default --export
    split = load_file(str(tmp_path / "split" / "final.safetensors"))
    assert straight.keys() == split.keys()
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] == 2
