"""A real etcd and kube-apiserver on loopback for the Kubernetes tests, stoppable and restartable.

`Cluster.start(binary=..., root=...)` runs Debian's etcd and the kube-apiserver built by
build-kube-apiserver.sh (RBAC mode, token auth, service-account tokens) on free 127.0.0.1
ports, waits for /readyz and writes an admin kubeconfig. `stop_apiserver()` and
`start_apiserver()` bounce the apiserver alone (etcd and its data stay, same port and certs);
`compact_etcd()` and the `etcd_*` helpers reach etcd directly through its v3 JSON gateway,
so tests can advance and compact the store behind the apiserver's back (410 Gone).

Everything here is synchronous (stdlib HTTP): it runs in session fixtures, outside any event
loop. Async tests talk to the cluster through kubernetes-asyncio (see kube.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import yaml

from tests.support import processes

HERE: Final = Path(__file__).resolve().parent
BUILD_SCRIPT: Final = HERE / "build-kube-apiserver.sh"
ADMIN_TOKEN: Final = "genie-test-admin-token"
ISSUER: Final = "https://kubernetes.default.svc"
_MAX_BODY: Final = 16 << 20


class HarnessError(RuntimeError):
    """etcd or the apiserver did not start, or a harness call to them failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_apiserver(*, timeout: float = 1800) -> Path:
    """Run build-kube-apiserver.sh (a no-op when cached); the binary's path or HarnessError."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise HarnessError(f"build-kube-apiserver.sh failed (exit {proc.returncode}):\n{tail}")
    return Path(lines[-1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def write_kubeconfig(path: Path, *, server: str, token: str, user: str) -> Path:
    """A kubeconfig with one bearer-token user; TLS not verified (the apiserver self-signs)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


# where a manifest's kind is created (the few kinds tests apply)
_ENDPOINTS: Final[Mapping[str, tuple[str, bool]]] = {
    "Namespace": ("/api/v1/namespaces", False),
    "ServiceAccount": ("/api/v1/namespaces/{ns}/serviceaccounts", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1/clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", False),
}


class Cluster:
    """etcd + kube-apiserver processes under `root`; call close() (the fixture does)."""

    def __init__(self, *, binary: Path, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.admin_token = ADMIN_TOKEN
        self.admin_kubeconfig = root / "admin.kubeconfig"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._ssl = ssl.create_default_context()
        self._ssl.check_hostname = False
        self._ssl.verify_mode = ssl.CERT_NONE

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def running(cls, *, binary: Path, root: Path) -> Iterator[Cluster]:
        cluster = cls(binary=binary, root=root)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "certs").mkdir(exist_ok=True)
        (self.root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
        key = self.root / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        self._start_etcd()
        self.start_apiserver()
        write_kubeconfig(self.admin_kubeconfig, server=self.url, token=ADMIN_TOKEN, user="admin")

    def close(self) -> None:
        processes.stop(self._apiserver)
        processes.stop(self._etcd)
        self._apiserver = self._etcd = None

    def _start_etcd(self) -> None:
        data = self.root / "etcd"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        log = (self.root / "etcd.log").open("wb")
        with log:
            self._etcd = subprocess.Popen(
                [
                    "etcd",
                    "--name=genie-test",
                    f"--data-dir={data}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=genie-test={peer}",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait(
            lambda: self._etcd_health(),
            what="etcd",
            proc=self._etcd,
            log=self.root / "etcd.log",
            timeout=30,
        )

    def _etcd_health(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                return bool(json.loads(resp.read(4096)).get("health") == "true")
        except (OSError, ValueError):
            return False

    def start_apiserver(self) -> None:
        """Start (or restart after stop_apiserver) the apiserver; returns once /readyz is ok."""
        if self._apiserver is not None and self._apiserver.poll() is None:
            raise HarnessError("apiserver already running")
        log = (self.root / "apiserver.log").open("ab")
        with log:
            self._apiserver = subprocess.Popen(
                [
                    str(self.binary),
                    f"--etcd-servers={self.etcd_url}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.port}",
                    "--insecure-port=0",
                    f"--cert-dir={self.root / 'certs'}",
                    f"--token-auth-file={self.root / 'tokens.csv'}",
                    f"--service-account-key-file={self.root / 'sa.key'}",
                    f"--service-account-signing-key-file={self.root / 'sa.key'}",
                    f"--service-account-issuer={ISSUER}",
                    f"--api-audiences={ISSUER}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--authorization-mode=RBAC",
                    "--endpoint-reconciler-type=none",
                    # no controller-manager makes the `default` service account of namespaces
                    "--disable-admission-plugins=ServiceAccount",
                    "--profiling=false",
                    "--v=0",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait(
            self._ready,
            what="kube-apiserver",
            proc=self._apiserver,
            log=self.root / "apiserver.log",
            timeout=90,
        )

    def stop_apiserver(self) -> None:
        """Stop the apiserver (SIGTERM, then SIGKILL); etcd and its data stay."""
        processes.stop(self._apiserver)
        self._apiserver = None

    @contextlib.asynccontextmanager
    async def apiserver_stopped(self) -> AsyncIterator[None]:
        """Async tests: the apiserver is down inside the block, up again after it (even on
        failure); start and stop run in a worker thread so the test's event loop keeps going."""
        await anyio.to_thread.run_sync(self.stop_apiserver)
        try:
            yield
        finally:
            if not self.apiserver_running():
                await anyio.to_thread.run_sync(self.start_apiserver)

    def apiserver_running(self) -> bool:
        return self._apiserver is not None and self._apiserver.poll() is None

    def _ready(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz", timeout=2)
        except (HarnessError, OSError):
            return False
        return status == 200

    def _wait(
        self,
        check: Any,
        *,
        what: str,
        proc: subprocess.Popen[bytes] | None,
        log: Path,
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise HarnessError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
            if check():
                return
            time.sleep(0.1)
        raise HarnessError(f"{what} not ready after {timeout} s:\n{_tail(log)}")

    # --- admin REST (sync) ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 15,
    ) -> tuple[int, Any]:
        """One request as admin (or `token`): (status, decoded JSON body or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
                status, raw = resp.status, resp.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(_MAX_BODY)
        except (urllib.error.URLError, OSError) as exc:
            raise HarnessError(f"{method} {path}: {exc}") from exc
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """request() that raises HarnessError unless the status is 2xx."""
        status, doc = self.request(method, path, body, **kwargs)
        if not 200 <= status < 300:
            raise HarnessError(f"{method} {path}: HTTP {status}: {doc}")
        return doc

    def apply(self, doc: Mapping[str, Any]) -> None:
        """Create one object of a kind in _ENDPOINTS, or replace it when it exists."""
        kind = doc["kind"]
        if kind not in _ENDPOINTS:
            raise HarnessError(f"the harness cannot apply kind {kind}")
        template, namespaced = _ENDPOINTS[kind]
        meta = doc["metadata"]
        collection = (
            template.format(ns=meta.get("namespace", "default")) if namespaced else template
        )
        status, got = self.request("POST", collection, dict(doc))
        if status == 409:
            current = self.call("GET", f"{collection}/{meta['name']}")
            updated = {
                **doc,
                "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            self.call("PUT", f"{collection}/{meta['name']}", updated)
        elif not 200 <= status < 300:
            raise HarnessError(f"apply {kind} {meta['name']}: HTTP {status}: {got}")

    def apply_file(self, path: Path) -> list[Mapping[str, Any]]:
        """Apply every document of a YAML manifest; the documents."""
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            self.apply(doc)
        return docs

    def ensure_namespace(self, name: str) -> None:
        status, doc = self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        if status not in (201, 409):
            raise HarnessError(f"create namespace {name}: HTTP {status}: {doc}")

    def service_account_token(
        self, *, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for a ServiceAccount through the TokenRequest API."""
        doc = self.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": [ISSUER], "expirationSeconds": expiration_seconds},
            },
        )
        return str(doc["status"]["token"])

    def wait_crd(self, name: str, *, timeout: float = 30) -> None:
        """Until the CRD `name` is Established (its API is served)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, doc = self.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            if status == 200:
                conds = doc.get("status", {}).get("conditions", [])
                if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                    return
            time.sleep(0.1)
        raise HarnessError(f"CRD {name} not established after {timeout} s")

    def agent_kubeconfig(
        self,
        path: Path,
        *,
        rbac: Path,
        namespace: str = "kube-system",
        service_account: str = "genie",
    ) -> Path:
        """Apply the RBAC manifest and write a kubeconfig with a token of its ServiceAccount."""
        self.ensure_namespace(namespace)
        self.apply_file(rbac)
        token = self.service_account_token(namespace=namespace, name=service_account)
        return write_kubeconfig(path, server=self.url, token=token, user=service_account)

    # --- etcd behind the apiserver's back -------------------------------------------------

    def _etcd_call(self, path: str, body: Mapping[str, Any]) -> Any:
        req = urllib.request.Request(
            f"{self.etcd_url}{path}", data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return json.loads(resp.read(_MAX_BODY))
        except (OSError, ValueError) as exc:
            raise HarnessError(f"etcd {path}: {exc}") from exc

    def etcd_revision(self) -> int:
        doc = self._etcd_call("/v3/kv/range", {"key": _b64("/genie-test/none")})
        return int(doc["header"]["revision"])

    def etcd_put(self, key: str, value: str) -> int:
        """Write a key straight into etcd (bumps the global revision); the new revision."""
        doc = self._etcd_call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(doc["header"]["revision"])

    def etcd_delete(self, key: str) -> int:
        """Delete a key straight from etcd; how many were deleted."""
        doc = self._etcd_call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(doc.get("deleted", 0))

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (older resourceVersions are gone); the revision."""
        revision = self.etcd_revision()
        self._etcd_call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def pod_key(namespace: str, name: str) -> str:
    """Where kube-apiserver keeps a pod in etcd (default --etcd-prefix)."""
    return f"/registry/pods/{namespace}/{name}"
