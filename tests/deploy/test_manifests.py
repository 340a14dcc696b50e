"""deploy/: manifests parse, match the Kubernetes schemas, pass a real 1.20 apiserver, and
agree with genie's own flags, config keys, RBAC names, documented host paths and Dockerfile.

The probes are run for real against a running agent: they are the only way kubelet learns the
agent's health, and they speak HTTP to a unix socket, which is easy to get subtly wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from genie import cli
from genie.cni import install
from genie.daemon import commands as agent_commands
from genie.daemon import config as agent_config
from tests.e2e import node as e2e_node
from tests.k8s import apiserver
from tests.k8s import conftest as k8s_fixtures

# the session apiserver fixtures of tests/k8s (etcd + kube-apiserver 1.20.2 from Debian's
# source); imported here they are separate fixtures, so a run of tests/k8s and tests/deploy
# together starts a second cluster (~5 s)
k8s_apiserver_binary = k8s_fixtures.k8s_apiserver_binary
cluster = k8s_fixtures.cluster

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
MANIFESTS: Final = ("rbac.yaml", "nad-crd.yaml", "configmap.yaml", "daemonset.yaml")
NAMESPACE: Final = "kube-system"
# kubernetes-validate ships schemas from 1.25 on: the oldest (closest to the 1.20 apiserver
# below), a middle one and the newest, all strict (unknown fields are errors).
SCHEMA_VERSIONS: Final = (
    kubernetes_validate.utils.all_versions()[0],
    "1.28.0",
    kubernetes_validate.utils.latest_version(),
)
PROBE_KINDS: Final = ("startupProbe", "livenessProbe", "readinessProbe")


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def all_docs() -> list[dict[str, Any]]:
    return [d for name in MANIFESTS for d in docs(name)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in all_docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in deploy/"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(name: str, *, init: bool = False) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    found: list[dict[str, Any]] = [c for c in pod_spec()[key] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def agent_argv() -> list[str]:
    agent = container("agent")
    return [*agent["command"], *agent.get("args", [])]


def host_mounts(c: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """mountPath -> (host path, the volumeMount) for a container's hostPath mounts."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    return {
        m["mountPath"]: (volumes[m["name"]]["hostPath"]["path"], m)
        for m in c["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


def agent_config_text() -> str:
    text: str = one("ConfigMap")["data"]["config.yaml"]
    return text


def loaded_config(tmp_path: Path) -> agent_config.AgentConfig:
    path = tmp_path / "config.yaml"
    path.write_text(agent_config_text())
    parser = argparse.ArgumentParser()
    agent_config.add_arguments(parser)
    return agent_config.load(parser.parse_args(["--config", str(path)]), environ={})


def _host(path: str) -> str:
    """/var/run is a symlink to /run on every current distribution."""
    return re.sub(r"^/var/run(?=/|$)", "/run", path.rstrip("/") or "/")


def covered(path: str, mounts: Mapping[str, tuple[str, Mapping[str, Any]]]) -> bool:
    """A host mount of the agent holds `path`, at the same path in the container."""
    want = _host(path)
    for mount_path, (host_path, _) in mounts.items():
        base = _host(host_path)
        if _host(mount_path) == base and (want == base or want.startswith(base + "/")):
            return True
    return False


# --- every file parses, the kustomization lists them all -------------------------------------


def test_every_manifest_parses() -> None:
    yamls = sorted(p.name for p in DEPLOY.glob("*.yaml"))
    assert yamls == sorted([*MANIFESTS, "kustomization.yaml"])
    for name in MANIFESTS:
        for doc in docs(name):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), name
            assert doc["metadata"]["name"], name


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = docs("kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == list(MANIFESTS)
    assert all((DEPLOY / name).is_file() for name in kustomization["resources"])


def test_namespaced_objects_name_their_namespace() -> None:
    """kubectl apply -k would put an object without a namespace into `default`."""
    for doc in all_docs():
        if doc["kind"] in ("ServiceAccount", "ConfigMap", "DaemonSet"):
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["kind"]


# --- Kubernetes schemas (offline) and the real apiserver -------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    for doc in all_docs():
        # strict: a misspelt or misplaced field is an error, not silently ignored
        got = kubernetes_validate.validate(doc, version, strict=True)
        assert got == kubernetes_validate.utils.major_minor(version)


def test_custom_resources_have_no_offline_schema() -> None:
    """The CRD itself validates strictly (above); its instances (NADs) have no schema in
    kubernetes-validate at all, so only the apiserver checks them (test_nad_schema_...)."""
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "x"},
        "spec": {"config": "{}"},
    }
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        kubernetes_validate.validate(nad, SCHEMA_VERSIONS[-1], strict=False)


def resource_url(c: apiserver.Cluster, doc: Mapping[str, Any]) -> str:
    """The object's URL, from the apiserver's own discovery of its kind."""
    api = doc["apiVersion"]
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    listing = c.call("GET", base)
    (res,) = [r for r in listing["resources"] if r["kind"] == doc["kind"] and "/" not in r["name"]]
    meta = doc["metadata"]
    prefix = f"{base}/namespaces/{meta['namespace']}" if res["namespaced"] else base
    return f"{prefix}/{res['name']}/{meta['name']}"


def dry_run_apply(c: apiserver.Cluster, doc: Mapping[str, Any]) -> tuple[int, Any]:
    """`kubectl apply --server-side --dry-run=server`: validation and admission, no change."""
    return c.request(
        "PATCH",
        resource_url(c, doc) + "?dryRun=All&fieldManager=genie-deploy-test&force=true",
        doc,
        content_type="application/apply-patch+yaml",
    )


def dropped(sent: Any, got: Any, path: str = "") -> list[str]:
    """Fields of `sent` missing or changed in `got`. An apiserver before 1.25 silently drops
    fields it does not know: a field newer than the server shows up here, not as an error."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in sent.items():
            if key in got:
                out += dropped(value, got[key], f"{path}.{key}")
            elif value not in (False, 0, "", None, [], {}):  # zero values are omitted
                out.append(f"{path}.{key}")
        return out
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(sent, got, strict=True))
            for p in dropped(a, b, f"{path}[{i}]")
        ]
    return [] if sent == got else [f"{path}: {sent!r} -> {got!r}"]


@pytest.mark.k8s
def test_apiserver_accepts_every_manifest(cluster: apiserver.Cluster) -> None:
    for doc in all_docs():
        status, got = dry_run_apply(cluster, doc)
        what = f"{doc['kind']} {doc['metadata']['name']}"
        assert status in (200, 201), f"{what}: HTTP {status}: {got}"
        assert dropped(doc, got) == [], f"{what}: fields the 1.20 apiserver does not keep"
    # dry run: nothing was created
    status, _ = cluster.request("GET", resource_url(cluster, one("DaemonSet")))
    assert status == 404


@pytest.mark.k8s
def test_dry_run_catches_invalid_and_too_new_fields(cluster: apiserver.Cluster) -> None:
    """The checks above have teeth: an invalid value is refused (422); a field the 1.20
    apiserver does not know (DaemonSet maxSurge is 1.21+) is refused by server-side apply,
    and a plain create, which silently drops it, is caught by `dropped`."""
    daemonset = json.loads(json.dumps(one("DaemonSet")))
    daemonset["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["type"] = "Folder"
    status, got = dry_run_apply(cluster, daemonset)
    assert status == 422, got
    daemonset = json.loads(json.dumps(one("DaemonSet")))
    daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] = 1
    status, got = dry_run_apply(cluster, daemonset)
    assert status >= 400, got
    assert "maxSurge: field not declared in schema" in got["message"]
    collection = resource_url(cluster, daemonset).rsplit("/", 1)[0]
    status, got = cluster.request("POST", collection + "?dryRun=All", daemonset)
    assert status == 201, got
    assert dropped(daemonset, got) == [".spec.updateStrategy.rollingUpdate.maxSurge"]


@pytest.mark.k8s
def test_nad_schema_is_enforced_by_the_apiserver(cluster: apiserver.Cluster) -> None:
    url = "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions?dryRun=All"
    nad: dict[str, Any] = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "tenant-a"},
        "spec": {"config": '{"cniVersion": "1.0.0", "type": "bridge"}'},
    }
    status, got = cluster.request("POST", url, nad)
    assert status == 201, got
    nad["spec"]["config"] = {"type": "bridge"}  # must be a JSON string, not an object
    status, got = cluster.request("POST", url, nad)
    assert status == 422, got
    assert "spec.config" in got["message"]


# --- the DaemonSet agrees with rbac.yaml, the docs, the agent's flags and config -------------


def test_daemonset_runs_as_the_rbac_service_account() -> None:
    daemonset = one("DaemonSet")
    account = one("ServiceAccount")
    binding = one("ClusterRoleBinding")
    role = one("ClusterRole")
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    assert daemonset["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": account["metadata"]["namespace"],
    }
    assert subject in binding["subjects"]
    assert pod_spec().get("automountServiceAccountToken", True)  # in-cluster config


def test_daemonset_shape() -> None:
    daemonset = one("DaemonSet")
    spec = pod_spec()
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    labels = daemonset["spec"]["selector"]["matchLabels"]
    assert labels.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is False
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]  # every taint, every effect
    agent = container("agent")
    assert agent["env"] == [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    assert agent["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }


def test_security_context_is_least_privilege() -> None:
    """Capabilities, not privileged: why each is needed is in the manifest and in
    docs/security.md; bridge/host-local/macvlan/ptp were run with exactly these."""
    agent = container("agent")["securityContext"]
    assert agent["privileged"] is False
    assert agent["readOnlyRootFilesystem"] is True
    assert agent["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}
    init = container("install-cni", init=True)["securityContext"]
    assert init["privileged"] is False
    assert init["readOnlyRootFilesystem"] is True
    assert init["capabilities"] == {"drop": ["ALL"], "add": ["SYS_CHROOT"]}
    for c in (*pod_spec()["initContainers"], *pod_spec()["containers"]):
        # with SYS_ADMIN it would be true anyway, and newer apiservers refuse false there
        assert "allowPrivilegeEscalation" not in c["securityContext"]


def documented_host_paths() -> list[str]:
    """The backticked paths of docs/security.md's "Host mounts:" sentence."""
    text = (REPO / "docs" / "security.md").read_text()
    sentence = text[text.index("Host mounts:") :].split("\n\n")[0]
    paths = re.findall(r"`(/[^`]+)`", sentence)
    assert paths, "docs/security.md lists no host paths after 'Host mounts:'"
    return paths


def test_every_documented_and_configured_host_path_is_mounted(tmp_path: Path) -> None:
    mounts = host_mounts(container("agent"))
    cfg = loaded_config(tmp_path)
    needed = {
        *documented_host_paths(),
        str(cfg.socket.parent),
        str(cfg.db.parent),
        str(cfg.net_dir),
        *(str(d) for d in cfg.cni_path),
    }
    assert needed >= {"/run/genie", "/var/lib/genie", "/etc/cni/net.d", "/opt/cni/bin"}
    missing = sorted(p for p in needed if not covered(p, mounts))
    assert missing == []
    # each host path is at the same path inside: paths travel between runtime, shim,
    # agent and plugins (conflist socket, CNI_NETNS, IPAM state)
    for mount_path, (host_path, _) in mounts.items():
        assert _host(mount_path) == _host(host_path)
    _, netns = mounts["/var/run/netns"]
    assert netns["mountPropagation"] == "HostToContainer"  # pod netns made after start
    writable = {p for p, (_, m) in mounts.items() if not m.get("readOnly")}
    assert writable == {
        "/run/genie",
        "/var/lib/genie",
        "/var/run/netns",
        "/var/lib/cni",
        "/run/xtables.lock",
    }
    assert "/host" not in mounts  # the host's / only for the init container
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for name in ("run-genie", "var-lib-genie"):
        assert volumes[name]["hostPath"]["type"] == "DirectoryOrCreate"


def test_agent_command_is_real_genie_agent_flags(tmp_path: Path) -> None:
    argv = agent_argv()
    assert argv[:2] == ["genie", "agent"]
    args = cli.build_parser().parse_args(argv[1:])  # the real `genie` command line
    assert args.func is agent_commands.run
    parser = argparse.ArgumentParser()
    agent_config.add_arguments(parser)
    parsed, unknown = parser.parse_known_args(argv[2:])
    assert unknown == []
    # --config is the ConfigMap's key, mounted
    config_map = one("ConfigMap")
    (mount,) = [m for m in container("agent")["volumeMounts"] if m["mountPath"] == "/etc/genie"]
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert parsed.config == Path(mount["mountPath"]) / "config.yaml"
    assert list(config_map["data"]) == ["config.yaml"]


def test_configmap_loads_as_agent_config(tmp_path: Path) -> None:
    cfg = loaded_config(tmp_path)  # unknown keys or bad values raise ConfigError
    keys = set(yaml.safe_load(agent_config_text()))
    assert keys, "the config sets nothing"
    assert keys <= {f.replace("_", "-") for f in agent_config.AgentConfig.__dataclass_fields__}
    assert cfg.socket == Path(install.DEFAULT_SOCKET)
    assert cfg.kubeconfig is None  # in-cluster
    assert cfg.node_name == ""  # from NODE_NAME
    assert cfg.cni_path == (Path("/opt/cni/bin"),)  # the host's plugins: the image has none
    assert cfg.metrics_addr is None  # no TCP listener unless asked for
    assert cfg.shutdown_grace < pod_spec()["terminationGracePeriodSeconds"]
    with_env = agent_config.load(
        argparse.Namespace(config=tmp_path / "config.yaml"), environ={"NODE_NAME": "node-1"}
    )
    assert with_env.node_name == "node-1"


def test_init_container_installs_onto_the_host(tmp_path: Path) -> None:
    init = container("install-cni", init=True)
    assert init["image"] == container("agent")["image"]
    args = cli.build_parser().parse_args(init["command"][1:])
    assert init["command"][:2] == ["genie", "install-cni"]
    assert args.func is install.run
    mounts = host_mounts(init)
    host_root, root_mount = mounts[args.host_root]
    assert host_root == "/"
    assert root_mount["readOnly"] is True
    cfg = loaded_config(tmp_path)
    # the dirs it writes are the host's CNI dirs, seen under --host-root, and writable
    (plugin_dir,) = cfg.cni_path
    for written, host_dir in ((args.bin_dir, plugin_dir), (args.conf_dir, cfg.net_dir)):
        assert written == args.host_root + str(host_dir)
        assert mounts[written][0] == str(host_dir)
        assert not mounts[written][1].get("readOnly")
    assert args.socket == str(cfg.socket)  # the conflist points the shim at the agent
    assert args.python == ""  # default: the host's /usr/bin/python3


# --- the probes, run for real -------------------------------------------------------------


def probe_commands() -> dict[str, list[str]]:
    agent = container("agent")
    return {kind: agent[kind]["exec"]["command"] for kind in PROBE_KINDS}


def test_probes_point_at_the_agent_socket(tmp_path: Path) -> None:
    cfg = loaded_config(tmp_path)
    for kind, command in probe_commands().items():
        assert command[:3] == ["python3", "-IS", "-c"], kind
        assert command[4] == str(cfg.socket), kind
        assert command[5] == ("/readyz" if kind == "readinessProbe" else "/healthz"), kind


def run_probe(command: list[str], sock: Path) -> int:
    python = shutil.which("python3") or install.SYSTEM_PYTHON
    argv = [python, *command[1:4], str(sock), *command[5:]]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode


@pytest.fixture
def agent_with_deploy_config(tmp_path: Path) -> Iterator[e2e_node.Node]:
    """A real agent (node netns, static pods) started with the ConfigMap's config file; the
    flags the test node passes (socket, db, net dir, plugins) override its host paths."""
    config = tmp_path / "config.yaml"
    config.write_text(agent_config_text())
    with e2e_node.running_node(tmp_path / "node", extra_args=("--config", str(config))) as n:
        yield n


@pytest.mark.netns
def test_probes_pass_against_a_running_agent(agent_with_deploy_config: e2e_node.Node) -> None:
    node = agent_with_deploy_config
    for kind, command in probe_commands().items():
        assert run_probe(command, node.socket) == 0, kind
    node.stop_agent()
    for kind, command in probe_commands().items():
        assert run_probe(command, node.socket) != 0, kind  # no agent: every probe fails


def test_probes_fail_on_a_non_200_answer(tmp_path: Path) -> None:
    """A draining or unsynced agent answers /readyz with 503: the probe must fail."""
    sock = tmp_path / "fake.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for kind, command in probe_commands().items():
            assert run_probe(command, sock) == 1, kind
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


# --- the Dockerfile -----------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def test_dockerfile_copies_what_exists_and_installs_genie() -> None:
    steps = dockerfile()
    (base,) = [args for word, args in steps if word == "FROM"]
    assert base == "python:3.11-slim-bookworm"  # pyproject: requires-python >= 3.11
    copied: list[str] = []
    for word, args in steps:
        if word in ("COPY", "ADD"):
            assert word == "COPY", "ADD fetches and unpacks: COPY only"
            parts = [p for p in args.split() if not p.startswith("--")]
            for source in parts[:-1]:
                assert (REPO / source).exists(), f"COPY source {source} not in the repository"
                copied.append(source)
    # what `pip install .` needs: the project, its readme, the package, the SQL behind the
    # genie/store/sql symlink
    sql_link = REPO / "genie" / "store" / "sql"
    target = sql_link.resolve().relative_to(REPO)
    assert {"pyproject.toml", "README.md", "genie", str(target)} <= set(copied)
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip install --no-cache-dir ." in runs
    assert "[test]" not in runs


def test_dockerfile_entrypoint_is_the_daemonset_command() -> None:
    steps = dict(dockerfile())
    entrypoint = json.loads(steps["ENTRYPOINT"])
    cmd = json.loads(steps["CMD"])
    agent = container("agent")
    assert entrypoint == agent["command"]
    assert cmd == agent["args"]
    assert container("install-cni", init=True)["command"][0] == entrypoint[0]
