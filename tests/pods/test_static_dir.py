"""StaticPodsDir: pod manifests in a directory as a PodSource, reloaded when files change."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from genie.pods import source, static_dir

pytestmark = pytest.mark.anyio

MULTI = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  uid: 1111-2222
  annotations:
    cni: "tenant-a,tenant-b"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-pod
---
apiVersion: v1
kind: Pod
metadata:
  name: plain
"""


def _bump(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_multi_document_yaml(tmp_path: Path) -> None:
    (tmp_path / "pods.yaml").write_text(MULTI)
    pods = static_dir.StaticPodsDir(tmp_path)
    web = await pods.get(namespace="shop", name="web")
    assert web == source.Pod(
        namespace="shop", name="web", uid="1111-2222", annotations={"cni": "tenant-a,tenant-b"}
    )
    plain = await pods.get(namespace="default", name="plain", uid="any-uid")
    assert (plain.uid, dict(plain.annotations)) == ("", {})
    assert pods.ready() is True
    assert [(p.namespace, p.name) for p in pods.pods()] == [("default", "plain"), ("shop", "web")]
    with pytest.raises(source.PodNotFoundError):
        await pods.get(namespace="default", name="not-a-pod")


async def test_json_manifest(tmp_path: Path) -> None:
    doc = {"kind": "Pod", "metadata": {"name": "j", "annotations": {"k": "v"}}}
    (tmp_path / "j.json").write_text(json.dumps(doc))
    pod = await static_dir.StaticPodsDir(tmp_path).get(namespace="default", name="j")
    assert dict(pod.annotations) == {"k": "v"}


async def test_uid_mismatch_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "pods.yaml").write_text(MULTI)
    pods = static_dir.StaticPodsDir(tmp_path)
    assert (await pods.get(namespace="shop", name="web", uid="1111-2222")).name == "web"
    with pytest.raises(source.PodNotFoundError):
        await pods.get(namespace="shop", name="web", uid="other")
    with pytest.raises(source.PodNotFoundError):
        await pods.get(namespace="default", name="web")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("kind: Pod\nmetadata: {name: [unclosed", "not YAML/JSON"),
        ("- 1\n- 2\n", "not a mapping"),
        ("kind: Pod\n", "no metadata"),
        ("kind: Pod\nmetadata: {namespace: x}\n", "no metadata.name"),
        ("kind: Pod\nmetadata: {name: b, annotations: {cni: yes}}\n", "annotations"),
        ("kind: Pod\nmetadata: {name: b, uid: 5}\n", "uid"),
        ("kind: Pod\nmetadata: {name: b}\n#" + "x" * static_dir.MAX_MANIFEST_BYTES, "larger"),
    ],
)
async def test_bad_files_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, why: str
) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    (tmp_path / "good.yml").write_text("kind: Pod\nmetadata: {name: good}\n")
    pods = static_dir.StaticPodsDir(tmp_path)
    with caplog.at_level(logging.ERROR, logger="genie.pods"):
        assert (await pods.get(namespace="default", name="good")).name == "good"
        await pods.get(namespace="default", name="good")
        with pytest.raises(source.PodNotFoundError):
            await pods.get(namespace="default", name="b")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(tmp_path / "bad.yaml") in errors[0]
    assert why in errors[0]


async def test_reload_on_change(tmp_path: Path) -> None:
    pods = static_dir.StaticPodsDir(tmp_path)
    with pytest.raises(source.PodNotFoundError):
        await pods.get(namespace="default", name="p")

    path = tmp_path / "p.yaml"
    path.write_text("kind: Pod\nmetadata: {name: p, annotations: {cni: a}}\n")
    assert (await pods.get(namespace="default", name="p")).annotations["cni"] == "a"

    path.write_text("kind: Pod\nmetadata: {name: p, annotations: {cni: b}}\n")
    _bump(path)
    assert (await pods.get(namespace="default", name="p")).annotations["cni"] == "b"

    path.unlink()
    with pytest.raises(source.PodNotFoundError):
        await pods.get(namespace="default", name="p")


async def test_ignored_files_and_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".hidden.yaml").write_text("kind: Pod\nmetadata: {name: hidden}\n")
    (tmp_path / "notes.txt").write_text("kind: Pod\nmetadata: {name: txt}\n")
    (tmp_path / "a.yaml").write_text("kind: Pod\nmetadata: {name: d, annotations: {n: a}}\n")
    (tmp_path / "b.yaml").write_text("kind: Pod\nmetadata: {name: d, annotations: {n: b}}\n")
    pods = static_dir.StaticPodsDir(tmp_path)
    assert [p.name for p in pods.pods()] == ["d"]
    assert (await pods.get(namespace="default", name="d")).annotations["n"] == "a"
    assert "defined again" in caplog.text


async def test_missing_dir_is_empty(tmp_path: Path) -> None:
    pods = static_dir.StaticPodsDir(tmp_path / "absent")
    assert pods.pods() == ()
    with pytest.raises(source.PodNotFoundError):
        await pods.get(namespace="default", name="x")


def test_satisfies_the_protocol(tmp_path: Path) -> None:
    pod_source: source.PodSource = static_dir.StaticPodsDir(tmp_path)
    assert pod_source.ready()
