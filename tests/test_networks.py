"""Every network's `config_from_state` round trip: a network built with a random small config,
its weights through safetensors, must come back as the same config and the same outputs.

Weights files do not record the sizes they were trained with, so the loaders read them from the
tensors; this is what lets a recipe run with other sizes ship without a loader change.
"""

import random
import re
from importlib import import_module
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def _image(channels: int = 3, size: int = 24) -> torch.Tensor:
    return torch.rand(2, channels, size, size)


# module -> (class, random config, forward on a fitting input)
NETWORKS = {
    "imgen_sr._net": ("CompactSR",
                      lambda r: {"scale": r.choice([2, 3, 4]), "channels": r.randint(2, 12), "blocks": r.randint(1, 4)},
                      lambda net, cfg: net(_image())),
    "imgen_denoise._net": ("FFDNet",
                           lambda r: {"channels": r.choice([1, 3]), "features": r.randint(2, 12), "blocks": r.randint(1, 4)},
                           lambda net, cfg: net(_image(cfg["channels"], 23), 0.1)),
    "imgen_lowlight._net": ("CurveNet",
                            lambda r: {"channels": r.randint(2, 12)},
                            lambda net, cfg: net.predict(_image(), 0.5)),
    "imgen_restyle._net": ("Restyler",
                           lambda r: {"width": r.randint(2, 12)},
                           lambda net, cfg: net(_image())),
}


def test_every_config_from_state_is_covered():
    defined = {
        ".".join(path.relative_to(PLUGINS).with_suffix("").parts)
        for path in PLUGINS.glob("*/**/*.py")
        if re.search(r"^def config_from_state\(", path.read_text(encoding="utf-8"), re.M)
    }
    assert defined == set(NETWORKS), "add the network to NETWORKS in tests/test_networks.py"


@pytest.mark.parametrize("module", sorted(NETWORKS))
@pytest.mark.parametrize("seed", range(3))
def test_config_from_state_round_trip(tmp_path, module, seed):
    name, random_config, run = NETWORKS[module]
    mod = import_module(module)
    cfg = random_config(random.Random(f"{module} {seed}"))
    net = getattr(mod, name)(**cfg).eval()
    with torch.no_grad():
        # Random values everywhere: some layers start at zero, which would hide a mismatch.
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p) * 0.1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))

    state = load_file(str(tmp_path / "w.safetensors"))
    assert mod.config_from_state(state) == cfg
    again = getattr(mod, name)(**mod.config_from_state(state)).eval()
    again.load_state_dict(state)  # strict: every tensor has a place and every place a tensor
    with torch.no_grad():
        torch.manual_seed(seed)
        first = run(net, cfg)
        torch.manual_seed(seed)
        assert torch.equal(run(again, cfg), first)
