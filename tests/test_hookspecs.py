"""The hooks are the plugin contract: each is documented, in the code and in docs/plugins.md, and tested."""

import inspect
from pathlib import Path

import pytest

from imgen_cli import Command, Model, hookimpl, hookspecs

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "imgen_spec")]
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def test_there_are_hooks():
    assert HOOKS == ["register_commands", "register_models"]


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc and len(doc.split()) > 20


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_in_the_guide_with_its_signature(name):
    signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
    assert f"### `{signature}`" in GUIDE.read_text()


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_tested(name):
    assert f"test_hook_{name}" in globals()


def test_hook_register_commands(imgen_registry):
    class Plugin:
        @hookimpl
        def register_commands(self, register):
            register(Command("noop", "Do nothing.", lambda x, ctx: x))

    info = imgen_registry.add(Plugin(), "noop-plugin")
    assert info.error is None and info.commands == ["noop"]
    assert imgen_registry.commands["noop"].help == "Do nothing."

    class Clash:
        @hookimpl
        def register_commands(self, register):
            register(Command("noop", "Again.", lambda x, ctx: x))

    clash = imgen_registry.add(Clash(), "clash")
    assert "already registered by plugin 'noop-plugin'" in clash.error
    assert imgen_registry.commands["noop"].help == "Do nothing."


def test_hook_register_models(imgen_registry):
    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(Model("noop-a", "noop", load=lambda: None))
            register(Model("noop-b", "noop", load=lambda: None, default=True))

    info = imgen_registry.add(Plugin(), "models-plugin")
    assert info.models == ["noop-a", "noop-b"]
    assert imgen_registry.default_model("noop").name == "noop-b"


def test_misspelled_hook_is_an_error_of_that_plugin(imgen_registry):
    class Typo:
        @hookimpl
        def register_comands(self, register):
            pass

    typo = Typo()
    info = imgen_registry.add(typo, "typo")
    assert "register_comands" in info.error
    assert not imgen_registry.pm.is_registered(typo)


def test_hooks_are_called_through_pluggys_registrations(imgen_registry):
    class Plugin:
        @hookimpl(specname="register_commands")
        def commands(self, register):
            register(Command("aliased", "Registered through specname=.", lambda x, ctx: x))

        def register_models(self, register):  # no @hookimpl: not a hook implementation
            raise AssertionError("an unmarked function must not be called")

    info = imgen_registry.add(Plugin(), "specname-plugin")
    assert info.error is None and info.commands == ["aliased"] and info.models == []
