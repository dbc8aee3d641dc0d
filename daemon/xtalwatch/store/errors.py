"""Why the state folder cannot be used as it is: each says what is wrong and what to do, on one line.

Kept apart from the modules that raise them so that the command line can catch them without
importing the store (and what it imports) for every command.
"""

from __future__ import annotations

__all__ = ["StateError", "CatalogueDamaged", "CatalogueTooNew", "CatalogueUnreachable", "CatalogueNotCopied", "StateBusy", "BackupUnsound"]


class StateError(ValueError):
    """The state folder cannot be used as it is; the message is one line for the operator."""


class CatalogueDamaged(StateError):
    """The catalogue file is there but is not a sound catalogue (empty, truncated, garbled, wrong schema)."""


class CatalogueTooNew(CatalogueDamaged, RuntimeError):
    """The catalogue was moved forward by a newer xtalwatch; this one must not write to it."""


class CatalogueUnreachable(StateError):
    """The site's PostgreSQL catalogue (``catalogue.url``) cannot be reached or refused the login."""


class CatalogueNotCopied(StateError):
    """``catalogue migrate`` refused or failed; the target was left as it was and the source untouched."""


class StateBusy(StateError):
    """Another process (a running service, or a restore) holds the state folder."""


class BackupUnsound(StateError):
    """A backup that failed its integrity or schema check; nothing was changed."""
