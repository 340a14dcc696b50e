"""Reusable test kit: real network namespaces, delegate network configs, IPAM ground truth.

Modules:
    netns     create/enter/inspect/delete namespaces: `temporary_netns()`, `in_netns(name)`
              (moves the current thread), `links(ns)`, `addresses(ns, ifname)`, `routes(ns)`,
              `ping(ns, address)`, `veth_pair(ns)` (a macvlan master), `netns_path(name)`.
    cniconf   `NetworkFactory(net_dir, data_dir)`: `.bridge()`, `.macvlan(master=)`, `.ptp()`,
              `.write()` conf/conflist files with a test-owned host-local dataDir;
              `host_local_allocations(data_dir)` -> {network: [ip, ...]} (`{}` = nothing leaked).
    plugins   `#!/bin/sh` stand-in plugins (hang, crash, garbage, CNI error) and a recording
              plugin whose env and stdin a test reads back with `recorded()`.
    fixtures  pytest fixtures (loaded by tests/conftest.py): node_netns, in_node_netns,
              pod_netns, make_pod_netns, net_dir, ipam_dir, networks, cni_bin_dir.

Typical test (the test thread sits in the node netns, so the plugins it spawns do too):

    @pytest.mark.anyio
    async def test_x(in_node_netns, pod_netns, networks, cni_bin_dir):
        networks.bridge("tenant-a")               # first network: gets the default route
        ...run genie / DelegateRunner with CNI_NETNS=netns.netns_path(pod_netns)...
        assert netns.addresses(pod_netns, "eth0") == [result_address]
        assert cniconf.host_local_allocations(networks.data_dir) == {}   # after DEL

Caveat: threads started while the test thread is inside a netns (anyio/asyncio worker
threads, for instance) start in that netns too and stay there; keep that in mind when a
thread pool outlives the test.
"""
