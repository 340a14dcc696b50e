"""The Kubernetes fixtures of tests/k8s/conftest.py, shared with the runtime tests (not copied).

A conftest's fixtures reach only its own directory: these assignments register the same
fixture functions here. Run together with tests/k8s in one session, the session-scoped
`cluster` is then started once per directory (two etcd + kube-apiserver pairs).
"""

from __future__ import annotations

from tests.k8s import conftest as k8s_fixtures

k8s_apiserver_binary = k8s_fixtures.k8s_apiserver_binary
cluster = k8s_fixtures.cluster
agent_kubeconfig = k8s_fixtures.agent_kubeconfig
kube = k8s_fixtures.kube
namespace = k8s_fixtures.namespace
node_name = k8s_fixtures.node_name
