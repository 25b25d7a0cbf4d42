"""Typed foldings and the one parser of a user's folding override (``--fold``, sweep specs,
manifests)."""

import pytest

from hwgen import ir
from hwgen.errors import HwgenError
from hwgen.hw.spec import (FOLDING_KEYS, DirectFolding, FoldingError, PoolFolding, WinogradFolding,
                           folding_from_dict, parse_fold_items, parse_overrides)


def test_keys_are_the_foldings_fields():
    assert FOLDING_KEYS == ("pe", "simd", "weights", "overlap", "lanes")
    assert DirectFolding.keys() == ("pe", "simd", "weights") and PoolFolding.keys() == ("lanes",)
    assert WinogradFolding.keys() == ("pe", "overlap")


def test_fold_items_parse_like_a_table():
    items = ["conv1=pe:2,simd:9", "conv1=weights:const", "w=overlap:0", "pool1=lanes:4"]
    assert parse_fold_items(items) == {"conv1": {"pe": 2, "simd": 9, "weights": "const"},
                                       "w": {"overlap": 0}, "pool1": {"lanes": 4}}
    assert parse_overrides({"w": {"overlap": True}}) == {"w": {"overlap": 1}}


@pytest.mark.parametrize("table, message", [
    ({"c": {"pe": 0}}, r"^folding of 'c': pe=0 must be a positive integer$"),
    ({"c": {"simd": True}}, r"^folding of 'c': simd=True must be a positive integer$"),
    ({"c": {"weights": "ram"}}, r"^folding of 'c': weights='ram'; use 'rom' .* or 'const' "),
    ({"c": {"overlap": 2}}, r"^folding of 'c': overlap=2; use 1 .* or 0 "),
    ({"c": {"speed": 1}}, r"^folding of 'c': unknown keys \['speed'\]; use 'pe', 'simd', 'weights', "
                          r"'overlap', 'lanes'$"),
    ({"c": {}}, r"^folding of 'c' needs a table of keys"),
    ([1], r"^folding must be a table"),
])
def test_bad_overrides_are_one_line(table, message):
    with pytest.raises(FoldingError, match=message) as err:
        parse_overrides(table)
    assert isinstance(err.value, ir.ModelError) and isinstance(err.value, HwgenError)


@pytest.mark.parametrize("item", ["conv1", "conv1=pe", "=pe:2", "conv1=pe:2,"])
def test_bad_fold_items_name_the_syntax(item):
    with pytest.raises(FoldingError, match=rf"^--fold '{item}': expected LAYER=KEY:VALUE"):
        parse_fold_items([item])


def test_an_override_fits_its_engine_only():
    base = DirectFolding(pe=2, simd=9)
    assert base.override({"simd": 3}, "f") == DirectFolding(2, 3, "rom")
    with pytest.raises(FoldingError, match=r"^f: unknown keys \['overlap'\]; use 'pe', 'simd', 'weights'"):
        base.override({"overlap": 1}, "f")
    with pytest.raises(FoldingError, match=r"^f: unknown keys \['simd'\]; use 'pe', 'overlap' "):
        WinogradFolding(1, 1).override({"simd": 3}, "f")


def test_manifest_entries_read_back_as_the_same_types():
    for fold in (DirectFolding(2, 9, "const"), WinogradFolding(4, 0), PoolFolding(2)):
        assert folding_from_dict(fold.as_dict()) == fold
    with pytest.raises(FoldingError, match=r"are the keys of no folding"):
        folding_from_dict({"pe": 1})
