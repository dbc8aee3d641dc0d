"""Every built-in adapter, and the chain, on arbitrary relative paths: bytes that are not UTF-8,
control characters, huge or non-ASCII digits, paths that almost match an instrument's layout.

An adapter answers an ImageIdentity or None, never raises; the chain always answers an identity
the catalogue can store (checked by storing it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import Probe
from xtalwatch.stages.adapters import AdapterChain
from xtalwatch.store.catalogue import Catalogue
from xtalwatch_plugins.adapters.export import ExportAdapter
from xtalwatch_plugins.adapters.minstrel import MinstrelAdapter
from xtalwatch_plugins.adapters.regex import RegexAdapter
from xtalwatch_plugins.adapters.rockmaker import RockMakerAdapter

ADAPTERS = [RockMakerAdapter(), RockMakerAdapter(plate_wells=1536), MinstrelAdapter(), ExportAdapter(),
            RegexAdapter(r"(?P<plate>[^/_]+)/(?P<well>[^/_]+)_d(?P<drop>[^/_]+)_i(?P<inspection>[^/_.]+)")]

# A path segment: any bytes a Linux name may hold (no '/', no NUL), or a piece of a real layout
# with its numbers and letters replaced, so that the fuzz reaches past the first regex.
_any_bytes = st.binary(min_size=1, max_size=24).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_"))
_odd_digits = st.one_of(st.integers(min_value=-5, max_value=10**25).map(lambda n: str(n).encode()),
                        st.sampled_from([b"\xd9\xa3", b"\xef\xbc\x91", b"0" * 30, b"", b"\xff", b"9" * 40]))
_layout = st.one_of(
    st.builds(lambda p, b, w, d: b"plateID_%s/batchID_%s/wellNum_%s/profileID_1/d%s_r1_ef.jpg" % (p, b, w, d),
              _any_bytes, _odd_digits, _odd_digits, _odd_digits),
    st.builds(lambda p, c, r, d: b"%s_%s%s_%s.jpg" % (p, c, r, d), _any_bytes, _odd_digits,
              st.sampled_from([b"A", b"h", b"AF", b"\xe9", b"ZZ"]), _odd_digits),
    st.builds(lambda r, c: b"RMM3_01_470_RGKU_0000FB000000_003_081218_%s_%s_01_E0_RDI.jpg" % (r, c), _odd_digits,
              _odd_digits),
    st.builds(lambda p, w, d, i: b"%s/%s_d%s_i%s.png" % (p, w, d, i), _any_bytes, _any_bytes, _odd_digits, _odd_digits),
)
relpaths = st.lists(st.one_of(_any_bytes, _layout), min_size=1, max_size=5).map(
    lambda parts: os.fsdecode(b"/".join(parts)))

_INT64 = range(-(2**63), 2**63)


def _sane(identity: ImageIdentity) -> None:
    assert isinstance(identity, ImageIdentity) and isinstance(identity.plate, str) and identity.plate
    for value in (identity.drop, identity.inspection):
        assert value is None or (isinstance(value, int) and value in _INT64)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: f"{a.name}")
@settings(database=None, deadline=None, max_examples=150)
@given(relpath=relpaths)
def test_adapter_answers_an_identity_or_none(adapter, relpath: str) -> None:
    identity = adapter.parse(relpath)
    if identity is not None:
        _sane(identity)


def test_chain_answers_a_storable_identity_for_any_path() -> None:
    chain = AdapterChain(list(ADAPTERS))
    probe = Probe("jpeg", 64, 48, 3)
    with tempfile.TemporaryDirectory() as state:
        catalogue = Catalogue(Path(state))
        try:
            count = [0]

            @settings(database=None, deadline=None, max_examples=150)
            @given(relpath=relpaths)
            def check(relpath: str) -> None:
                identity = chain.identify(relpath)
                _sane(identity)
                for text in (identity.plate, identity.well, identity.note):
                    assert text is None or (text.encode("utf-8") and text.isprintable())
                count[0] += 1
                stored = catalogue.record_image("/imager/" + relpath, 1, 1, f"sha-{count[0]}", probe, identity)
                assert stored.outcome in ("new", "version")

            check()
        finally:
            catalogue.close()
