"""Version list, parsing and the feature gates other modules use."""

from __future__ import annotations

import pytest

from genie.cni import errors, shim, versions


def test_shim_lists_the_same_versions() -> None:
    assert shim.SUPPORTED == versions.SUPPORTED
    assert shim.LATEST == versions.LATEST == versions.SUPPORTED[-1]


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_require_supported_accepts(version: str) -> None:
    assert versions.require_supported(version) == version


@pytest.mark.parametrize("version", [None, "", "0.2.0", "0.1.0", "1.2.0", "2.0.0", "1.0", 1, "x"])
def test_require_supported_rejects(version: object) -> None:
    with pytest.raises(errors.CniError) as info:
        versions.require_supported(version)
    assert info.value.code == errors.INCOMPATIBLE_VERSION
    assert "1.1.0" in info.value.details


def test_parse_and_compare() -> None:
    assert versions.parse("0.3.1") == (0, 3, 1)
    assert versions.at_least("1.0.0", "0.4.0")
    assert not versions.at_least("0.3.1", "0.4.0")
    for bad in ("1.0", "1.0.0.0", "a.b.c", "-1.0.0", ""):
        with pytest.raises(errors.CniError):
            versions.parse(bad)


@pytest.mark.parametrize(
    ("version", "check", "status_gc"),
    [
        ("0.3.0", False, False),
        ("0.3.1", False, False),
        ("0.4.0", True, False),
        ("1.0.0", True, False),
        ("1.1.0", True, True),
    ],
)
def test_feature_gates(version: str, check: bool, status_gc: bool) -> None:
    assert versions.supports_check(version) is check
    assert versions.supports_status_gc(version) is status_gc


def test_highest() -> None:
    assert versions.highest(["1.0.0", "1.1.0", "0.4.0"]) == "1.1.0"
    assert versions.highest(["9.9.9", "0.4.0"]) == "0.4.0"
    with pytest.raises(errors.CniError):
        versions.highest(["0.2.0"])
