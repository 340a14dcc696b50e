"""The sandbox ("pause") image for the runtime tests, made here: no registry is reachable.

A static C binary that sleeps until SIGTERM/SIGINT (reaping children meanwhile) is compiled
with `gcc -static`, put in a single uncompressed layer, and written as an OCI image layout
tarball (oci-layout, index.json, blobs/sha256/...) that `ctr images import` accepts. Every
blob is addressed by its sha256 and the tar entries have fixed metadata, so the same binary
always gives the same image digests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Final

NAME: Final = "genie.test/pause:1"
MEDIA_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"

PAUSE_C: Final = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""

_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """An image tarball on disk and what containerd will call it."""

    tarball: Path
    name: str
    manifest_digest: str
    binary: Path


def build_pause(workdir: Path) -> Path:
    """Compile the pause binary into `workdir` (static, stripped); its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "pause.c"
    source.write_text(PAUSE_C)
    binary = workdir / "pause"
    proc = subprocess.run(
        ["gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"gcc -static failed: {proc.stderr.strip()}")
    return binary


def _digest(blob: bytes) -> str:
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


def _descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob), **extra}


def _tar_entry(tar: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _layer(binary: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_entry(tar, "pause", binary.read_bytes(), mode=0o755)
    return buf.getvalue()


def write_oci_archive(binary: Path, tarball: Path, *, name: str = NAME) -> Image:
    """An OCI image layout tarball holding one image: `binary` as /pause, its entrypoint."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    layer = _layer(binary)
    config = _json(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},  # uncompressed layer
            "history": [{"created_by": "tests/runtime/image.py"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config),
            "layers": [_descriptor(MEDIA_LAYER, layer)],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                _descriptor(
                    MEDIA_MANIFEST,
                    manifest,
                    platform={"architecture": arch, "os": "linux"},
                    annotations={
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                )
            ],
        }
    )
    with tarfile.open(tarball, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_entry(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _tar_entry(tar, "index.json", index)
        for blob in (layer, config, manifest):
            _tar_entry(tar, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
    return Image(tarball=tarball, name=name, manifest_digest=_digest(manifest), binary=binary)


def build(workdir: Path, *, name: str = NAME) -> Image:
    """Compile the pause binary and package it: the image tarball in `workdir`."""
    binary = build_pause(workdir)
    return write_oci_archive(binary, workdir / "pause-oci.tar", name=name)
