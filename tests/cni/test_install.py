"""`genie install-cni`: the files it writes, their modes and content, idempotence, failures."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator

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


# --- --host-root: the shim's interpreter is the host's, checked in the host's root ----------

HOST_PYTHON = pathlib.Path(install.SYSTEM_PYTHON)
needs_host_python = pytest.mark.skipif(
    not HOST_PYTHON.is_file(), reason=f"no {HOST_PYTHON} on this machine"
)
NO_PYTHON_HINT = (
    "(kubelet runs the shim on the host; install python3 >= "
    f"{install.SHIM_MIN_PYTHON} there or pass --python)"
)

VERSION_ANSWER = {"cniVersion": versions.LATEST, "supportedVersions": list(versions.SUPPORTED)}


def assert_nothing_written(bin_dir: pathlib.Path, conf_dir: pathlib.Path) -> None:
    assert list(bin_dir.iterdir()) == []  # no shim, no temp file
    assert not conf_dir.exists()  # and so no conflist: the runtime never calls genie


def host_root_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    prefix = "genie install-cni: the host has no usable Python for the CNI shim: "
    assert err.startswith(prefix), err
    assert err.rstrip("\n").endswith(NO_PYTHON_HINT), err
    return err[len(prefix) : -len(NO_PYTHON_HINT) - 2]


def version_answer(shim: pathlib.Path) -> object:
    done = subprocess.run(
        [str(shim)],
        env={"CNI_COMMAND": "VERSION"},
        input=b'{"cniVersion":"1.1.0"}',
        capture_output=True,
        check=True,
        timeout=30,
    )
    return json.loads(done.stdout)


@needs_host_python
def test_host_root_slash_installs_a_working_shim(short_dir: pathlib.Path) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    sock = str(short_dir / "agent.sock")
    argv = ("--host-root", "/", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir))
    assert run_cli(*argv, "--socket", sock) == 0
    shim = bin_dir / "genie"
    assert shim.read_text().startswith(f"#!{HOST_PYTHON} -IS\n")  # the host's, by default
    assert version_answer(shim) == VERSION_ANSWER
    done = subprocess.run(
        [str(shim)],
        env={"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"},
        input=b'{"cniVersion":"1.0.0"}',
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 1
    assert f"genie agent unreachable at {sock}" in json.loads(done.stdout)["msg"]
    assert json.loads((conf_dir / "00-genie.conflist").read_text())["plugins"][0]["socket"] == sock
    inode = shim.stat().st_ino
    assert run_cli(*argv, "--socket", sock) == 0  # idempotent
    assert shim.stat().st_ino == inode


def test_host_root_without_python_writes_nothing(
    short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    empty = short_dir / "host"
    empty.mkdir()
    code = run_cli(
        "--host-root", str(empty), "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)
    )
    assert code == 2
    assert host_root_error(capsys) == f"/usr/bin/python3 not found under {empty}"
    assert_nothing_written(bin_dir, conf_dir)


def test_host_root_must_be_a_directory(
    short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    argv = ("--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir))
    assert run_cli("--host-root", str(short_dir / "nope"), *argv) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert_nothing_written(bin_dir, conf_dir)


def _script(path: pathlib.Path, body: str, *, mode: int = 0o755) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return str(path)


def _not_a_python(kind: str, where: pathlib.Path) -> str:
    fake = where / "python3"
    match kind:
        case "true":
            return "/bin/true"
        case "exit1":
            return _script(fake, "exit 1")
        case "complains":
            return _script(fake, "echo 'no python here' >&2; exit 3")
        case "floods":
            return _script(fake, "exec yes")
        case "not-executable":
            return _script(fake, "exit 0", mode=0o644)
        case "directory":
            return str(where)
        case _:
            fake.symlink_to(where / "gone")
            return str(fake)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("true", "/bin/true under / does not run the shim: exit 0, output b''"),
        ("exit1", "does not run the shim: exit 1, output b''"),
        ("complains", "does not run the shim: no python here"),
        ("floods", "does not run the shim: more than 65536 bytes of output"),
        ("not-executable", "is not an executable file"),
        ("directory", "is not an executable file"),
        ("dangling", "not found under /"),
    ],
)
def test_host_root_python_that_is_not_a_python(
    short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str], kind: str, words: str
) -> None:
    bin_dir, conf_dir = dirs(short_dir)
    python = _not_a_python(kind, short_dir)
    argv = ("--host-root", "/", "--python", python)
    assert run_cli(*argv, "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)) == 2
    assert words in host_root_error(capsys)
    assert_nothing_written(bin_dir, conf_dir)


def test_host_root_check_times_out(
    short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install, "_CHECK_TIMEOUT", 1.0)
    bin_dir, conf_dir = dirs(short_dir)
    hangs = _script(short_dir / "python3", "sleep 60 & sleep 60")
    argv = ("--host-root", "/", "--python", hangs)
    assert run_cli(*argv, "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)) == 2
    assert "does not run the shim: no answer within 1 s" in host_root_error(capsys)
    assert_nothing_written(bin_dir, conf_dir)


@pytest.fixture
def host_tree(short_dir: pathlib.Path) -> Iterator[pathlib.Path]:
    """A separate root that runs the system python: /usr bound read-only, the merged-/usr
    symlinks (or bound dirs) beside it, and /opt/hostpy/bin/python3 -> /usr/bin/python3 that
    exists only in this root (an absolute symlink, to be followed inside the root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (bind mounts)")
    root = short_dir / "host"
    root.mkdir()
    mounted: list[pathlib.Path] = []
    try:
        for name in ("usr", "bin", "sbin", "lib", "lib64"):
            src = pathlib.Path("/") / name
            dst = root / name
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
            elif src.is_dir():
                dst.mkdir()
                subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
                mounted.append(dst)
                subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
        (root / "opt" / "hostpy" / "bin").mkdir(parents=True)
        (root / "opt" / "hostpy" / "bin" / "python3").symlink_to("/usr/bin/python3")
        yield root
    finally:
        for dst in reversed(mounted):
            subprocess.run(["umount", str(dst)], check=False)


@needs_host_python
def test_host_root_runs_the_python_of_that_root(
    short_dir: pathlib.Path, host_tree: pathlib.Path
) -> None:
    assert not pathlib.Path("/opt/hostpy").exists()  # only the "host" has this interpreter
    bin_dir, conf_dir = dirs(short_dir)
    python = "/opt/hostpy/bin/python3"
    argv = ("--host-root", str(host_tree), "--python", python)
    assert run_cli(*argv, "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)) == 0
    text = (bin_dir / "genie").read_text()
    assert text.startswith(f"#!{python} -IS\n")
    assert (conf_dir / "00-genie.conflist").is_file()


def test_resolve_in_root_stays_inside(short_dir: pathlib.Path) -> None:
    root = short_dir / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3.11").write_text("")
    (root / "usr" / "bin" / "python3").symlink_to("python3.11")
    (root / "bin").symlink_to("/usr/bin")  # absolute: the root's /usr/bin, not ours
    (root / "up").symlink_to("../../../../../usr/bin/python3")  # .. stops at the root
    (root / "loop").symlink_to("/loop")
    (root / "etc").write_text("")
    real = root / "usr" / "bin" / "python3.11"
    assert install.resolve_in_root(root, "/usr/bin/python3") == real
    assert install.resolve_in_root(root, "/bin/python3") == real
    assert install.resolve_in_root(root, "/up") == real
    assert install.resolve_in_root(root, "/usr/../usr/./bin/python3") == real
    assert install.resolve_in_root(root, "/loop") is None
    assert install.resolve_in_root(root, "/etc/python3") is None  # through a file
    assert install.resolve_in_root(root, "/usr/bin/python2") is None


def _interpreter(minor: int) -> str | None:
    """A CPython 3.<minor> on this machine (PATH or pyenv), if any."""
    candidates = [pathlib.Path(f"/usr/bin/python3.{minor}")]
    candidates += [pathlib.Path(f"/usr/local/bin/python3.{minor}")]
    # real pyenv builds, not its PATH shims (a bash script that picks a version)
    candidates += sorted(pathlib.Path("/root/.pyenv/versions").glob(f"3.{minor}.*/bin/python3"))
    return next((str(path) for path in candidates if path.is_file()), None)


def test_shim_min_python_is_true(
    short_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SHIM_MIN_PYTHON runs the shim and the minor version below it does not."""
    major, minor = (int(n) for n in install.SHIM_MIN_PYTHON.split("."))
    assert major == 3
    oldest, older = _interpreter(minor), _interpreter(minor - 1)
    if oldest is None or older is None:
        pytest.skip(f"no python3.{minor} and python3.{minor - 1} here to check the floor with")
    bin_dir, conf_dir = dirs(short_dir)
    argv = ("--host-root", "/", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir))
    assert run_cli(*argv, "--python", oldest) == 0
    assert version_answer(bin_dir / "genie") == VERSION_ANSWER
    (bin_dir / "genie").unlink()
    shutil.rmtree(conf_dir)
    capsys.readouterr()
    assert run_cli(*argv, "--python", older) == 2
    assert "TypeError" in host_root_error(capsys)
    assert_nothing_written(bin_dir, conf_dir)


INIT_CONTAINER = """
set -e
mount --rbind / "$HOST"
mount -o remount,bind,ro "$HOST"
mount --bind "$BIN" "$HOST$BIN"
mount --bind "$NETD" "$HOST$NETD"
exec setpriv --bounding-set "-all$CAPS" --inh-caps -all "$@"
"""


@needs_host_python
@pytest.mark.parametrize("caps", ["+sys_chroot", ""])
def test_host_root_as_the_init_container_runs_it(short_dir: pathlib.Path, caps: str) -> None:
    """As deploy/daemonset.yaml sets it up: the host's / read-only at /host with the two CNI
    dirs writable on top, and no capability but SYS_CHROOT (without it: a clear error)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a private mount namespace)")
    host, bin_dir, net_dir = short_dir / "host", short_dir / "bin", short_dir / "netd"
    for d in (host, bin_dir, net_dir):
        d.mkdir()
    env = {
        "HOST": str(host),
        "BIN": str(bin_dir),
        "NETD": str(net_dir),
        "CAPS": f",{caps}" if caps else "",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    genie = [sys.executable, "-m", "genie.cli", "install-cni", "--host-root", str(host)]
    genie += ["--bin-dir", f"{host}{bin_dir}", "--conf-dir", f"{host}{net_dir}"]
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            INIT_CONTAINER,
            "sh",
            *genie,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if caps:
        assert done.returncode == 0, done.stderr
        assert (bin_dir / "genie").read_text().startswith(f"#!{HOST_PYTHON} -IS\n")
        assert version_answer(bin_dir / "genie") == VERSION_ANSWER
        assert (net_dir / "00-genie.conflist").is_file()
    else:
        assert done.returncode == 2
        assert "cannot chroot into --host-root" in done.stderr
        assert "CAP_SYS_CHROOT" in done.stderr
        assert list(bin_dir.iterdir()) == list(net_dir.iterdir()) == []
