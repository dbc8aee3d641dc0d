"""How a file's path is kept in the catalogue, and how it is shown to a person.

A Linux file name is any bytes but ``/`` and NUL; a Latin-1 share writes ``café`` as
``caf\\xe9``, which is not UTF-8. Python hands such a name over as ``str`` with each byte it
cannot decode carried as a lone surrogate (PEP 383: ``os.fsdecode``, "surrogateescape"), and
SQLite's TEXT cannot hold those. So a path is stored

* as TEXT when it is valid UTF-8 (every path the catalogue held before: nothing to migrate);
* otherwise as a BLOB of its exact bytes (``os.fsencode``): lossless, and a BLOB never equals
  a TEXT, so two different names can never meet under one key. PostgreSQL's TEXT column takes no
  BLOB, so there the bytes are kept as text: ``NON_UTF8_PREFIX`` (a noncharacter no real name
  starts with) and their hex (``store/postgres.py`` writes it, :func:`from_db` reads both forms).

:func:`to_db` and :func:`from_db` are the two directions; :func:`shown` is the one way a path
(or any text that may carry such bytes) is written for people: logs, ``xtalwatch status`` and
``/api/status`` show an undecodable byte as ``\\xff``, and a control character (a newline in a
name) as ``\\x0a``.
"""

from __future__ import annotations

import os

__all__ = ["to_db", "from_db", "shown", "NON_UTF8_PREFIX"]

NON_UTF8_PREFIX = "\ufffe"  # on PostgreSQL, a name that is not UTF-8: this, then its bytes in hex


def to_db(path: str) -> str | bytes:
    """The value to store for ``path``: itself when it is valid UTF-8, else its bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(path)
        except UnicodeEncodeError:  # a surrogate no file name produces: keep it, still losslessly
            return path.encode("utf-8", "surrogatepass")
    return path


def from_db(value: str | bytes) -> str:
    """The path a stored value stands for, as ``os.fsdecode`` would have handed it over."""
    if isinstance(value, str) and value.startswith(NON_UTF8_PREFIX):
        value = bytes.fromhex(value[len(NON_UTF8_PREFIX):])
    return os.fsdecode(value) if isinstance(value, bytes) else value


def shown(text: str | bytes | None) -> str:
    """``text`` for a person: valid UTF-8 as it is, any other byte as ``\\xNN``; always encodable."""
    if text is None:
        return ""
    if isinstance(text, str) and text.startswith(NON_UTF8_PREFIX):
        text = bytes.fromhex(text[len(NON_UTF8_PREFIX):])
    if isinstance(text, str):
        try:
            text = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no file name produces
            text = text.encode("utf-8", "surrogatepass")
    return text.decode("utf-8", "backslashreplace").translate(_CONTROLS)


# A newline or an escape sequence in a name must not start a new log line or recolour a terminal.
_CONTROLS = {n: f"\\x{n:02x}" for n in [*range(0x20), 0x7F]}
