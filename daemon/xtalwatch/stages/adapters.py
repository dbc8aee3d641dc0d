"""Turn a path into an ImageIdentity by asking the configured adapters in order.

A path no adapter understands is still catalogued, under plate ``unassigned``, with the
reason, so that nothing the imager writes is ever dropped for being named unexpectedly.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from xtalwatch.config import AdaptersConfig
from xtalwatch.plate import UNASSIGNED, ImageIdentity
from xtalwatch.plugins import InstrumentAdapter, PluginError, PluginRegistry
from xtalwatch.store.paths import shown

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


# SQLite's INTEGER: a drop or inspection number outside it could not be stored.
_INT64 = range(-(2**63), 2**63)


def _checked(identity: object) -> ImageIdentity:
    """An adapter's answer made safe to store; ValueError for one that is not an ImageIdentity."""
    if not isinstance(identity, ImageIdentity) or not isinstance(identity.plate, str) or not identity.plate:
        raise ValueError(f"returned {type(identity).__name__} without a plate, not an ImageIdentity")
    for name in ("drop", "inspection"):
        value = getattr(identity, name)
        if value is not None and (not isinstance(value, int) or value not in _INT64):
            raise ValueError(f"{name} {shown(str(value))[:40]} is not a whole number SQLite can store")
    return replace(identity, plate=shown(identity.plate), well=None if identity.well is None else shown(identity.well),
                   note=None if identity.note is None else shown(identity.note))


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
        """The first adapter's answer, or plate ``unassigned``; never raises.

        ``relpath`` may carry bytes that are not UTF-8 (as ``os.fsdecode`` surrogates): whatever an
        adapter takes from it is returned shown as ``\\xNN`` (``store/paths.shown``), so that the
        catalogue and the logs can always hold it.
        """
        for adapter in self.adapters:
            try:
                identity = adapter.parse(relpath)
                if identity is not None:
                    return _checked(identity)
            except Exception as exc:  # a lab's adapter must not stop ingest
                log.warning("adapter %s failed on %s: %s", getattr(adapter, "name", adapter), shown(relpath),
                            shown(str(exc)))
        tried = ", ".join(getattr(a, "name", "?") for a in self.adapters) or "none configured"
        return ImageIdentity(plate=UNASSIGNED, well=None, adapter="", note=f"no adapter understood the path (tried {tried})")
