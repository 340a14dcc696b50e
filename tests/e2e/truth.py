"""What a pod namespace really holds, keyed the way the runtime names it (a netns path)."""

from __future__ import annotations

from pathlib import Path

from tests.support import netns as kit


def ns_name(netns: str) -> str:
    return Path(netns).name


def links(netns: str) -> list[str]:
    return sorted(kit.link_names(ns_name(netns)))


def addresses(netns: str) -> dict[str, list[str]]:
    """Interface name -> IPv4 CIDRs, for every interface but loopback that has one."""
    name = ns_name(netns)
    found = {ifname: kit.addresses(name, ifname) for ifname in kit.link_names(name)}
    return {
        ifname: [a for a in cidrs if ":" not in a]
        for ifname, cidrs in found.items()
        if ifname != "lo" and cidrs
    }


def ping(netns: str, address: str) -> bool:
    return kit.ping(ns_name(netns), address)
