"""`genie install-cni`: the files it writes, their modes and content, idempotence, failures."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest

from genie.cni import install, versions
from tests.cni import conftest


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="genie")
    install.register(parser.add_subparsers())
    args = parser.parse_args(["install-cni", *argv])
    code: int = args.func(args)
    return code


def dirs(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    return bin_dir, root / "net.d"


def test_install_writes_both_files(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    sock = "/run/genie-test/agent.sock"
    assert run_cli("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--socket", sock) == 0
    shim = bin_dir / "genie"
    conf = conf_dir / "00-genie.conflist"
    assert stat.S_IMODE(shim.stat().st_mode) == 0o755
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
    text = shim.read_text()
    python = install.default_python()
    assert python in (install.SYSTEM_PYTHON, os.path.realpath(sys.executable))
    assert text.startswith(f"#!{python} -IS\n")
    assert f'SOCKET_PATH = "{sock}"\n' in text
    assert "/run/genie/genie.sock" not in text
    assert json.loads(conf.read_text()) == {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "genie",
        "plugins": [{"type": "genie", "socket": sock}],
    }
    assert sorted(p.name for p in bin_dir.iterdir()) == ["genie"]  # no temp files left
    assert sorted(p.name for p in conf_dir.iterdir()) == ["00-genie.conflist"]


def test_installed_shim_uses_the_socket(installed: conftest.Installed) -> None:
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"}
    done = subprocess.run(
        [str(installed.shim)],
        input=b'{"cniVersion":"1.1.0"}',
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 1
    assert str(installed.socket) in json.loads(done.stdout)["msg"]


def test_socket_with_odd_characters(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    sock = '/tmp/we"ird\\path é.sock'
    install.install(bin_dir=bin_dir, conf_dir=conf_dir, socket=sock, python=sys.executable)
    done = subprocess.run(
        [str(bin_dir / "genie")],
        env={"CNI_COMMAND": "ADD"},
        input=b"{}",
        capture_output=True,
        check=False,
    )
    assert sock in json.loads(done.stdout)["msg"]


def test_idempotent(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    argv = ("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir))
    assert run_cli(*argv) == 0
    first = {
        p: (p.read_bytes(), p.stat().st_ino)
        for p in (bin_dir / "genie", conf_dir / "00-genie.conflist")
    }
    assert run_cli(*argv) == 0
    second = {p: (p.read_bytes(), p.stat().st_ino) for p in first}
    assert first == second


def test_reinstall_replaces_changed_files(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    run_cli("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--socket", "/a.sock")
    (bin_dir / "genie").chmod(0o700)
    run_cli("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--socket", "/b.sock")
    assert 'SOCKET_PATH = "/b.sock"' in (bin_dir / "genie").read_text()
    assert stat.S_IMODE((bin_dir / "genie").stat().st_mode) == 0o755
    assert "/b.sock" in (conf_dir / "00-genie.conflist").read_text()


def test_uninstall(short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    (bin_dir / "bridge").write_text("other plugin")
    argv = ("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir))
    assert run_cli(*argv) == 0
    assert run_cli(*argv, "--uninstall") == 0
    assert sorted(p.name for p in bin_dir.iterdir()) == ["bridge"]
    assert list(conf_dir.iterdir()) == []
    assert run_cli(*argv, "--uninstall") == 0  # nothing left: still fine
    assert "removed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("python", "words"),
    [
        ("/bin/false", "does not run"),
        ("/bin/sh", "does not run"),
        ("/nonexistent/python3", "not an executable"),
        ("python3", "absolute"),
        ("/usr/bin/with space/python3", "shebang"),
    ],
)
def test_bad_python(
    short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str], python: str, words: str
) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    code = run_cli("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--python", python)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("genie install-cni: ")
    assert err.count("\n") == 1
    assert words in err
    assert list(bin_dir.iterdir()) == []  # nothing half-installed
    assert not (conf_dir / "00-genie.conflist").exists()


def test_missing_bin_dir(short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli("--bin-dir", str(short_dir / "nope"), "--conf-dir", str(short_dir / "c"))
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (short_dir / "c").exists()


def test_relative_socket_refused(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    assert run_cli("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--socket", "x") == 2


def test_via_the_genie_command(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "genie.cli",
            "install-cni",
            "--bin-dir",
            str(bin_dir),
            "--conf-dir",
            str(conf_dir),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = subprocess.run(
        [str(bin_dir / "genie")], env={"CNI_COMMAND": "VERSION"}, capture_output=True, check=True
    ).stdout
    assert json.loads(out)["supportedVersions"] == list(versions.SUPPORTED)
