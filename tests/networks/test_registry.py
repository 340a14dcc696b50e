"""NetworkRegistry over a real directory: parsing, skipping, hot reload, duplicates, self."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from genie.networks import registry as reg

BRIDGE = {"cniVersion": "1.0.0", "name": "tenant-a", "type": "bridge", "bridge": "br-a"}


def _write(directory: Path, fname: str, doc: Any) -> Path:
    path = directory / fname
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _bump(path: Path) -> None:
    """Make sure a rewrite is seen even on filesystems with coarse mtimes."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_conf_is_a_one_plugin_chain(tmp_path: Path) -> None:
    path = _write(tmp_path, "10-a.conf", BRIDGE)
    config = reg.NetworkRegistry(tmp_path).get("tenant-a")
    assert config == reg.NetworkConfig(
        name="tenant-a", cni_version="1.0.0", plugins=(BRIDGE,), parallel=True, source=path
    )


def test_conflist_and_parallel_false(tmp_path: Path) -> None:
    doc = {
        "cniVersion": "0.4.0",
        "name": "chain",
        "parallel": False,
        "plugins": [{"type": "ptp"}, {"type": "tuning", "mtu": 1400}],
    }
    _write(tmp_path, "chain.conflist", doc)
    config = reg.NetworkRegistry(tmp_path).get("chain")
    assert config.cni_version == "0.4.0"
    assert config.plugins == ({"type": "ptp"}, {"type": "tuning", "mtu": 1400})
    assert config.parallel is False


def test_json_extension_and_missing_version(tmp_path: Path) -> None:
    _write(tmp_path, "x.json", {"name": "x", "type": "bridge"})
    assert reg.NetworkRegistry(tmp_path).get("x").cni_version == reg.DEFAULT_CNI_VERSION


def test_unknown_network(tmp_path: Path) -> None:
    with pytest.raises(reg.UnknownNetworkError) as info:
        reg.NetworkRegistry(tmp_path).get("nope")
    assert "nope" in str(info.value)
    assert info.value.net_dir == tmp_path


def test_missing_dir_is_empty_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = reg.NetworkRegistry(tmp_path / "absent")
    assert registry.names() == ()
    assert registry.names() == ()
    assert caplog.text.count("cannot list net dir") == 1


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"type": "bridge"}), "no network name"),
        (json.dumps({"name": "", "type": "bridge"}), "no network name"),
        (json.dumps({"name": "n"}), "plugin 0 has no type"),
        (json.dumps({"name": "n", "type": 3}), "plugin 0 has no type"),
        (json.dumps({"name": "n", "plugins": []}), "non-empty plugins"),
        (json.dumps({"name": "n", "plugins": {"type": "x"}}), "non-empty plugins"),
        (json.dumps({"name": "n", "plugins": [{"type": "a"}, "b"]}), "plugin 1 is not"),
        (json.dumps({"name": "n", "plugins": [{"type": "a"}, {}]}), "plugin 1 has no type"),
        (json.dumps({"name": "n", "type": "a", "cniVersion": 1}), "cniVersion"),
        (json.dumps({"name": "n", "type": "a", "parallel": "no"}), "parallel"),
        ('{"name": "n", "type": "a", "pad": "' + "x" * reg.MAX_CONFIG_BYTES + '"}', "larger"),
    ],
)
def test_invalid_files_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, why: str
) -> None:
    _write(tmp_path, "bad.conf", content)
    _write(tmp_path, "good.conf", BRIDGE)
    registry = reg.NetworkRegistry(tmp_path)
    with caplog.at_level(logging.ERROR, logger="genie.networks"):
        assert registry.names() == ("tenant-a",)
        assert registry.names() == ("tenant-a",)
        registry.get("tenant-a")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(tmp_path / "bad.conf") in errors[0].getMessage()
    assert why in errors[0].getMessage()


def test_invalid_file_logged_again_after_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path, "bad.conf", "{")
    registry = reg.NetworkRegistry(tmp_path)
    registry.names()
    _write(tmp_path, "bad.conf", "{{")
    _bump(path)
    registry.names()
    assert caplog.text.count("ignoring network config") == 2


def test_genie_own_config_is_never_a_delegate(tmp_path: Path) -> None:
    own = {
        "cniVersion": "1.0.0",
        "name": "genie",
        "plugins": [{"type": "genie", "socket": "/run/genie/genie.sock"}, {"type": "portmap"}],
    }
    _write(tmp_path, "00-genie.conflist", own)
    _write(tmp_path, "genie-solo.conf", {"name": "solo", "type": "genie"})
    _write(tmp_path, "10-a.conf", BRIDGE)
    registry = reg.NetworkRegistry(tmp_path)
    assert registry.names() == ("tenant-a",)
    with pytest.raises(reg.UnknownNetworkError):
        registry.get("genie")
    assert reg.NetworkRegistry(tmp_path, self_type="other").names() == (
        "genie",
        "solo",
        "tenant-a",
    )


def test_only_regular_config_files_count(tmp_path: Path) -> None:
    _write(tmp_path, ".hidden.conf", {"name": "hidden", "type": "bridge"})
    _write(tmp_path, "a.conf.tmp", {"name": "tmp", "type": "bridge"})
    _write(tmp_path, "a.conf~", {"name": "backup", "type": "bridge"})
    _write(tmp_path, "README.md", "hello")
    (tmp_path / "dir.conf").mkdir()
    (tmp_path / "dangling.conf").symlink_to(tmp_path / "nowhere")
    target = _write(tmp_path, "target.txt", {"name": "linked", "type": "bridge"})
    (tmp_path / "linked.conf").symlink_to(target)
    assert reg.NetworkRegistry(tmp_path).names() == ("linked",)


def test_duplicate_names_first_file_wins_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _write(tmp_path, "10-a.conf", BRIDGE)
    _write(tmp_path, "20-a.conflist", {"name": "tenant-a", "plugins": [{"type": "ptp"}]})
    registry = reg.NetworkRegistry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="genie.networks"):
        assert registry.get("tenant-a").source == first
        assert registry.get("tenant-a").source == first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "20-a.conflist" in warnings[0].getMessage()


def test_hot_reload_add_modify_delete(tmp_path: Path) -> None:
    registry = reg.NetworkRegistry(tmp_path)
    assert registry.names() == ()

    path = _write(tmp_path, "10-a.conf", BRIDGE)
    assert registry.get("tenant-a").plugins[0]["bridge"] == "br-a"

    _write(tmp_path, "10-a.conf", {**BRIDGE, "bridge": "br-new"})
    _bump(path)
    assert registry.get("tenant-a").plugins[0]["bridge"] == "br-new"

    # atomic replace (new inode), same size and even the same mtime
    tmp = _write(tmp_path, ".10-a.conf.tmp", {**BRIDGE, "bridge": "br-xyz"})
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    tmp.replace(path)
    assert registry.get("tenant-a").plugins[0]["bridge"] == "br-xyz"

    _write(tmp_path, "20-b.conf", {**BRIDGE, "name": "tenant-b"})
    assert registry.names() == ("tenant-a", "tenant-b")

    path.unlink()
    assert registry.names() == ("tenant-b",)
    with pytest.raises(reg.UnknownNetworkError):
        registry.get("tenant-a")


def test_unchanged_files_are_not_reparsed(tmp_path: Path) -> None:
    _write(tmp_path, "10-a.conf", BRIDGE)
    registry = reg.NetworkRegistry(tmp_path)
    first = registry.get("tenant-a")
    _write(tmp_path, "20-b.conf", {**BRIDGE, "name": "tenant-b"})
    assert registry.get("tenant-a") is first


def test_a_duplicate_takes_over_when_the_winner_goes(tmp_path: Path) -> None:
    first = _write(tmp_path, "10-a.conf", BRIDGE)
    second = _write(tmp_path, "20-a.conf", {**BRIDGE, "bridge": "br-2"})
    registry = reg.NetworkRegistry(tmp_path)
    assert registry.get("tenant-a").source == first
    first.unlink()
    assert registry.get("tenant-a").source == second
