"""Finding plugins and collecting what they register, one plugin at a time.

pluggy's own `load_setuptools_entrypoints` stops at the first plugin that fails to import, and a
hook call stops at the first implementation that raises. Here every entry point is loaded and
every hook implementation is called on its own, so a broken plugin is recorded (and shown by
`imgen plugins` and by its own commands) while every other command keeps working.

Which plugins load:
- every entry point of the `imgen` group of the imgen distribution itself (the built-ins);
- every other entry point of the group, unless $IMGEN_LOAD_PLUGINS is set: then only those whose
  entry-point or distribution name it lists (comma-separated; empty means built-ins only), which
  is how to start imgen past a third-party plugin that breaks it;
- the modules named in $IMGEN_PLUGINS (comma-separated), loaded by import without installing
  them (tests, development), unless an entry point already loaded the same module.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import traceback
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .contract import Command, Model

GROUP = "imgen"
HOST_DISTRIBUTION = "imgen"


@dataclass
class PluginInfo:
    """What `imgen plugins` shows about one plugin."""

    name: str
    module: str
    version: str | None = None
    distribution: str | None = None
    builtin: bool = False
    commands: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    location: str | None = None  # the folder its module was imported from
    imports_torch: bool = False  # importing its front module pulled in torch (slows every command)


class Registry:
    """The plugin manager plus everything its plugins registered."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.plugins: dict[str, PluginInfo] = {}
        self.commands: dict[str, Command] = {}
        self.models: dict[str, Model] = {}
        self.command_owner: dict[str, str] = {}
        # Command names promised by a broken plugin's entry point, so using them says why.
        self.broken_commands: dict[str, PluginInfo] = {}

    # -- loading ---------------------------------------------------------------------------

    def add(self, plugin: object, name: str, info: PluginInfo | None = None) -> PluginInfo:
        """Register a plugin object (module or instance) and collect its registrations."""
        info = info or PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__),
                                  version=getattr(plugin, "__version__", None))
        info.location = info.location or _location(plugin)
        self.plugins[name] = info
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # a misspelled hook or a duplicate name: the plugin is out
            self._fail(info, exc)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return info
        self._collect(plugin, info)
        return info

    def remove(self, name: str) -> None:
        """Unregister a plugin and everything it registered."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        info = self.plugins.pop(name, None)
        if info is None:
            return
        for command in info.commands:
            self.commands.pop(command, None)
            self.command_owner.pop(command, None)
        for model_name in info.models:
            self.models.pop(model_name, None)

    def load_entry_points(self, allow: set[str] | None = None) -> None:
        """Load the entry points of the `imgen` group: the built-ins, and the others whose
        entry-point or distribution name is in `allow` (all of them when `allow` is None)."""
        for ep in sorted(_entry_points(), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                version=dist.version if dist else None,
                distribution=dist.name if dist else None,
                builtin=bool(dist and _canonical(dist.name) == HOST_DISTRIBUTION),
            )
            if not info.builtin and allow is not None and not {_canonical(ep.name), _canonical(info.distribution or "")} & allow:
                continue
            if ep.name in self.plugins:
                self._fail(info, ValueError(f"plugin name {ep.name!r} is already taken"))
                continue
            try:
                plugin = _watching_torch(ep.load, info)
            except Exception as exc:
                self.plugins[ep.name] = info
                self._fail(info, exc)
                # Its entry point name is its main command by convention: say why it is missing.
                self.broken_commands.setdefault(ep.name, info)
                continue
            self.add(plugin, ep.name, info)

    def load_modules(self, names: list[str]) -> None:
        """Load plugins by module name (`IMGEN_PLUGINS=mod1,mod2`), as third-party plugins."""
        loaded = {info.module.split(":")[0] for info in self.plugins.values()}
        for module_name in dict.fromkeys(names):
            if module_name in loaded:  # installed too: its entry point has loaded it already
                continue
            info = PluginInfo(name=module_name.rsplit(".", 1)[-1], module=module_name)
            try:
                plugin = _watching_torch(lambda: importlib.import_module(module_name), info)
            except Exception as exc:
                self.plugins[info.name] = info
                self._fail(info, exc)
                self.broken_commands.setdefault(info.name, info)
                continue
            info.version = getattr(plugin, "__version__", None)
            self.add(plugin, info.name, info)

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        info.traceback = "".join(traceback.format_exception(exc))

    def _collect(self, plugin: object, info: PluginInfo) -> None:
        # Through pluggy's own record of this plugin's implementations: a `specname=` alias is
        # called, a function that merely has a hook's name without `@hookimpl` is not.
        for hook_name, register in (("register_models", self._register_model),
                                    ("register_commands", self._register_command)):
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    impl.function(register=lambda item, _info=info, _reg=register: _reg(item, _info))
                except Exception as exc:
                    # A half-registered plugin is worse than none: take back what it registered.
                    self._fail(info, exc)
                    for command in info.commands or [info.name]:
                        self.broken_commands.setdefault(command, info)
                        self.commands.pop(command, None)
                        self.command_owner.pop(command, None)
                    for model_name in info.models:
                        self.models.pop(model_name, None)
                    return

    def _register_command(self, command: Command, info: PluginInfo) -> None:
        if not isinstance(command, Command):
            raise TypeError(f"register_commands got {type(command).__name__}, not imgen_cli.Command")
        if command.name in self.commands:
            raise ValueError(
                f"command {command.name!r} is already registered by plugin {self.command_owner[command.name]!r}")
        flags, names = _host_options()
        for param in command.params:
            taken = [opt for opt in (*param.opts, *getattr(param, "secondary_opts", ())) if opt in flags]
            if taken or param.name in names:
                raise ValueError(f"command {command.name!r} declares {(taken or param.opts)[0]}, an option "
                                 "the host adds to every command")
        self.commands[command.name] = command
        self.command_owner[command.name] = info.name
        info.commands.append(command.name)

    def _register_model(self, model: Model, info: PluginInfo) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"register_models got {type(model).__name__}, not imgen_cli.Model")
        if model.name in self.models:
            raise ValueError(f"model {model.name!r} is already registered")
        self.models[model.name] = model
        info.models.append(model.name)

    # -- queries ---------------------------------------------------------------------------

    def models_for(self, command: str) -> list[Model]:
        return [m for m in self.models.values() if m.command == command]

    def model_owner(self, name: str) -> str | None:
        """The plugin that registered model `name`."""
        for info in self.plugins.values():
            if name in info.models:
                return info.name
        return None

    def default_model(self, command: str) -> Model | None:
        models = self.models_for(command)
        defaults = [m for m in models if m.default]
        return (defaults or models or [None])[0]


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def _watching_torch(load, info: PluginInfo):
    """Run `load` (an import), noting in `info` whether it pulled in torch."""
    before = "torch" in sys.modules
    try:
        return load()
    finally:
        info.imports_torch = not before and "torch" in sys.modules


def _location(plugin: object) -> str | None:
    """The folder a plugin module (or an instance's class's module) was imported from."""
    module = plugin if hasattr(plugin, "__file__") else sys.modules.get(type(plugin).__module__)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else None


def allow_list() -> set[str] | None:
    """$IMGEN_LOAD_PLUGINS as a set of canonical names; None when it is not set."""
    value = os.environ.get("IMGEN_LOAD_PLUGINS")
    if value is None:
        return None
    return {_canonical(name.strip()) for name in value.split(",") if name.strip()}


def _entry_points():
    return metadata.entry_points(group=GROUP)


def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use from the installed entry points
    ($IMGEN_LOAD_PLUGINS) and the modules named in $IMGEN_PLUGINS (see the module's docstring)."""
    global _registry
    if _registry is None:
        _registry = Registry(get_plugin_manager())
        _registry.load_entry_points(allow_list())
        extra = os.environ.get("IMGEN_PLUGINS", "")
        _registry.load_modules([name.strip() for name in extra.split(",") if name.strip()])
    return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests build their own world with this)."""
    global _registry
    _registry = registry


_HOST_OPTIONS: tuple[set[str], set[str]] | None = None


def _host_options() -> tuple[set[str], set[str]]:
    global _HOST_OPTIONS
    if _HOST_OPTIONS is None:
        from .options import host_options

        _HOST_OPTIONS = host_options()
    return _HOST_OPTIONS
