"""Write delegate network configs into a test net dir, and read host-local's IPAM state back.

Each network gets its own /24 (10.213.<n>.0/24), its own bridge name, and host-local with a
test-owned `dataDir`, so the files there are the ground truth for "no IP leaked". Every route
has an explicit `gw` (bridge CHECK fails without one) and only the first network of a
factory gets a default route (a second `0.0.0.0/0` in one pod fails with "file exists").
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_VERSION = "1.0.0"


class NetworkFactory:
    """Creates bridge / macvlan / ptp networks as .conf or .conflist files in `net_dir`."""

    def __init__(self, net_dir: Path, data_dir: Path, *, first_octets: str = "10.213") -> None:
        self.net_dir = net_dir
        self.data_dir = data_dir
        self._first = first_octets
        self._count = 0
        self._default_route_taken = False
        net_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)

    def _next_subnet(self) -> ipaddress.IPv4Network:
        self._count += 1
        if self._count > 250:
            raise RuntimeError("NetworkFactory: out of test subnets")
        return ipaddress.IPv4Network(f"{self._first}.{self._count}.0/24")

    def ipam(
        self,
        subnet: ipaddress.IPv4Network,
        *,
        default_route: bool | None,
        subnet_route: bool = True,
    ) -> dict[str, Any]:
        """host-local over `subnet` with gateway .1, the test dataDir and explicit gateways.

        `subnet_route` adds a route to the subnet via the gateway (ptp adds that one itself,
        and a second copy fails with "file exists").
        """
        gw = str(subnet.network_address + 1)
        routes: list[dict[str, str]] = [{"dst": str(subnet), "gw": gw}] if subnet_route else []
        if default_route is None:
            default_route = not self._default_route_taken
        if default_route:
            self._default_route_taken = True
            routes.insert(0, {"dst": "0.0.0.0/0", "gw": gw})
        return {
            "type": "host-local",
            "dataDir": str(self.data_dir),
            "ranges": [[{"subnet": str(subnet), "gateway": gw}]],
            "routes": routes,
        }

    def write(
        self,
        name: str,
        plugins: Sequence[Mapping[str, Any]],
        *,
        conflist: bool = False,
        filename: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a network: a `.conf` for one plugin unless `conflist` (or a chain) is asked."""
        if conflist or len(plugins) != 1:
            doc: dict[str, Any] = {
                "cniVersion": CNI_VERSION,
                "name": name,
                "plugins": [dict(p) for p in plugins],
            }
            suffix = ".conflist"
        else:
            doc = {"cniVersion": CNI_VERSION, "name": name, **plugins[0]}
            suffix = ".conf"
        doc.update(extra or {})
        path = self.net_dir / (filename or f"{name}{suffix}")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(path)
        return path

    def bridge(
        self,
        name: str,
        *,
        default_route: bool | None = None,
        chain: Sequence[Mapping[str, Any]] = (),
        capabilities: Mapping[str, bool] | None = None,
        conflist: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """A bridge network (bridge `gbr-<hex>`, gateway on the bridge) plus optional chain."""
        subnet = self._next_subnet()
        plugin: dict[str, Any] = {
            "type": "bridge",
            "bridge": f"gbr-{secrets.token_hex(3)}",
            "isGateway": True,
            "ipam": self.ipam(subnet, default_route=default_route),
        }
        if capabilities:
            plugin["capabilities"] = dict(capabilities)
        return self.write(name, [plugin, *chain], conflist=conflist, extra=extra)

    def macvlan(
        self,
        name: str,
        *,
        master: str,
        default_route: bool | None = None,
        conflist: bool = False,
    ) -> Path:
        """A macvlan (bridge mode) network on `master` (a link in the node netns)."""
        subnet = self._next_subnet()
        plugin = {
            "type": "macvlan",
            "master": master,
            "mode": "bridge",
            "ipam": self.ipam(subnet, default_route=default_route),
        }
        return self.write(name, [plugin], conflist=conflist)

    def ptp(self, name: str, *, default_route: bool | None = None, conflist: bool = False) -> Path:
        """A point-to-point (veth, host routes) network."""
        subnet = self._next_subnet()
        ipam = self.ipam(subnet, default_route=default_route, subnet_route=False)
        plugin = {"type": "ptp", "ipMasq": False, "ipam": ipam}
        return self.write(name, [plugin], conflist=conflist)


def host_local_allocations(data_dir: Path) -> dict[str, list[str]]:
    """{network: sorted IPs host-local holds} from `<dataDir>/<network>/<ip>` files.

    The `lock` and `last_reserved_ip.*` files are not allocations. Networks holding nothing
    are left out, so `== {}` means "no address leaked".
    """
    out: dict[str, list[str]] = {}
    if not data_dir.is_dir():
        return out
    for network_dir in sorted(data_dir.iterdir()):
        if not network_dir.is_dir():
            continue
        held: list[str] = []
        for entry in network_dir.iterdir():
            try:
                ipaddress.ip_address(entry.name)
            except ValueError:
                continue
            held.append(entry.name)
        if held:
            out[network_dir.name] = sorted(held, key=ipaddress.ip_address)
    return out
