"""Reusable test kit: real network namespaces, delegate network configs, IPAM ground truth.

`netns` (create/enter/inspect/delete namespaces), `cniconf` (bridge/macvlan/ptp configs with
a test-owned host-local dataDir, `host_local_allocations`), `fixtures` (pytest fixtures).
"""
