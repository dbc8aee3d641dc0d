"""Plugin interfaces and how plugins are found.

A plugin is a class with a short ``name`` and a ``kind`` implementing one small Protocol.
They come from three places, later ones overriding earlier ones of the same name:

1. the entry-point group ``xtalwatch.plugins`` (the built-ins in ``plugins/xtalwatch_plugins``
   are registered there too, exactly like a lab's own installed package would be);
2. ``*.py`` files in the folders of ``plugins.dirs`` that define a module-level ``PLUGINS`` list;
3. a ``module:attr`` reference given directly where a name is expected.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from xtalwatch.plate import ImageIdentity

__all__ = ["InstrumentAdapter", "PluginError", "PluginRegistry", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "xtalwatch.plugins"

log = logging.getLogger(__name__)


@runtime_checkable
class InstrumentAdapter(Protocol):
    """Turns a path (relative to the watched folder, '/'-separated) into plate, well, drop, inspection."""

    name: str
    kind: str  # "adapter"

    def parse(self, relpath: str) -> ImageIdentity | None:
        """The identity, or None when this adapter does not recognise the path."""
        ...


class PluginError(Exception):
    """A plugin could not be loaded; the message names the plugin and where it came from."""


def _load_reference(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise PluginError(f"plugin {ref!r}: expected 'module:attr'")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"plugin {ref!r}: cannot import: {exc}") from exc


def _load_file(path: Path) -> list[Any]:
    spec = importlib.util.spec_from_file_location(f"xtalwatch_local_plugins.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {path}: not importable")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a lab's file may fail any way; name it and go on
        raise PluginError(f"plugin file {path}: {type(exc).__name__}: {exc}") from exc
    found = getattr(module, "PLUGINS", None)
    if found is None:
        return []
    if not isinstance(found, list | tuple):
        raise PluginError(f"plugin file {path}: PLUGINS must be a list of plugin classes")
    return list(found)


class PluginRegistry:
    """Plugin classes by kind and short name."""

    def __init__(self) -> None:
        self._classes: dict[tuple[str, str], Any] = {}
        self.errors: list[str] = []

    def add(self, cls: Any, origin: str) -> None:
        name, kind = getattr(cls, "name", None), getattr(cls, "kind", None)
        if not isinstance(name, str) or not isinstance(kind, str):
            raise PluginError(f"plugin {cls!r} from {origin}: needs string attributes 'name' and 'kind'")
        self._classes[(kind, name)] = cls

    @classmethod
    def discover(cls, dirs: list[Path] | None = None) -> PluginRegistry:
        """Find plugins from entry points and plugin folders; a broken one is logged and skipped."""
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                registry.add(ep.load(), f"entry point {ep.name}")
            except Exception as exc:
                registry._note(f"plugin {ep.name!r} (entry point {ep.value}): {type(exc).__name__}: {exc}")
        for folder in dirs or []:
            if not folder.is_dir():
                registry._note(f"plugins folder {folder}: does not exist")
                continue
            for path in sorted(folder.glob("*.py")):
                try:
                    for plugin in _load_file(path):
                        registry.add(plugin, str(path))
                except PluginError as exc:
                    registry._note(str(exc))
        return registry

    def _note(self, message: str) -> None:
        self.errors.append(message)
        log.error("%s", message)

    def get(self, kind: str, name: str) -> Any:
        """The class for ``name`` (or a ``module:attr`` reference) of ``kind``."""
        if ":" in name:
            return _load_reference(name)
        try:
            return self._classes[(kind, name)]
        except KeyError:
            known = sorted(n for k, n in self._classes if k == kind)
            raise PluginError(f"no {kind} plugin named {name!r}; known: {', '.join(known) or 'none'}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self._classes if k == kind)
