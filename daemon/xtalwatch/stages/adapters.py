"""Turn a path into an ImageIdentity by asking the configured adapters in order.

A path no adapter understands is still catalogued, under plate ``unassigned``, with the
reason, so that nothing the imager writes is ever dropped for being named unexpectedly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtalwatch.config import AdaptersConfig
from xtalwatch.plate import UNASSIGNED, ImageIdentity
from xtalwatch.plugins import InstrumentAdapter, PluginError, PluginRegistry

__all__ = ["AdapterChain", "relative_path"]

log = logging.getLogger(__name__)


def relative_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` with '/' separators; the bare name when it is outside ``root``."""
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


class AdapterChain:
    """The adapters of a config, regex ones first, then ``adapters.order``."""

    def __init__(self, adapters: list[InstrumentAdapter]):
        self.adapters = adapters

    @classmethod
    def from_config(cls, config: AdaptersConfig, registry: PluginRegistry) -> AdapterChain:
        adapters: list[InstrumentAdapter] = []
        regex_cls = registry.get("adapter", "regex")
        for rx in config.regex:
            adapters.append(regex_cls(pattern=rx.pattern, name=rx.name, imaging=rx.imaging))
        for name in config.order:
            adapter_cls = registry.get("adapter", name)
            try:
                adapter = adapter_cls(plate_wells=config.plate_wells) if name == "rockmaker" else adapter_cls()
            except Exception as exc:
                raise PluginError(f"adapter {name!r}: cannot be created: {exc}") from exc
            if not isinstance(adapter, InstrumentAdapter):
                raise PluginError(f"adapter {name!r}: does not implement parse(relpath)")
            adapters.append(adapter)
        return cls(adapters)

    def identify(self, relpath: str) -> ImageIdentity:
        for adapter in self.adapters:
            try:
                identity = adapter.parse(relpath)
            except Exception as exc:  # a lab's adapter must not stop ingest
                log.warning("adapter %s failed on %s: %s", getattr(adapter, "name", adapter), relpath, exc)
                continue
            if identity is not None:
                return identity
        tried = ", ".join(getattr(a, "name", "?") for a in self.adapters) or "none configured"
        return ImageIdentity(plate=UNASSIGNED, well=None, adapter="", note=f"no adapter understood the path (tried {tried})")
