"""Realistic attachment events, and big logs written straight to SQLite for the benchmarks.

`python -m bench.eventgen DB N` writes N events (interleaved lifecycles of ~200 live pods, two
bridge networks each) with executemany of codec-encoded rows, plus a snapshot every 10,000
events exactly as the recorder would write them: a fixture, not a measurement.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genie.domain import codec
from genie.domain import events as ev
from genie.domain import state as st
from genie.store import migrations, replay

NETWORKS = (("tenant-a", "gbr-a", 211), ("tenant-b", "gbr-b", 212))
SNAPSHOT_EVERY = 10_000


def _mac(rng: random.Random) -> str:
    return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))


def plugin_config(network: str, bridge: str, octet: int, pod: ev.PodRef) -> dict[str, Any]:
    subnet = f"10.{octet}.0.0/16"
    gateway = f"10.{octet}.0.1"
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "dataDir": "/var/lib/cni/networks",
            "ranges": [[{"subnet": subnet, "gateway": gateway}]],
            "routes": [{"dst": f"10.{octet}.0.0/16", "gw": gateway}],
        },
        "args": {"cni": {"K8S_POD_NAMESPACE": pod.namespace, "K8S_POD_NAME": pod.name}},
    }


def add_requested(pod: ev.PodRef, container: str) -> ev.AddRequested:
    return ev.AddRequested(
        pod=pod,
        netns=f"/var/run/netns/cni-{container[:8]}-{container[8:12]}",
        runtime_cni_version="1.0.0",
        delegates=tuple(
            ev.PlannedDelegate(
                index=i,
                network=name,
                ifname=f"eth{i}",
                cni_version="1.0.0",
                plugins=(plugin_config(name, bridge, octet, pod),),
                cni_args=(
                    ("K8S_POD_NAMESPACE", pod.namespace),
                    ("K8S_POD_NAME", pod.name),
                    ("K8S_POD_INFRA_CONTAINER_ID", container),
                    ("K8S_POD_UID", pod.uid),
                ),
            )
            for i, (name, bridge, octet) in enumerate(NETWORKS)
        ),
    )


def delegate_result(index: int, host: int, rng: random.Random, netns: str) -> dict[str, Any]:
    _, bridge, octet = NETWORKS[index]
    return {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": bridge, "mac": _mac(rng)},
            {"name": f"veth{rng.getrandbits(32):08x}", "mac": _mac(rng)},
            {"name": f"eth{index}", "mac": _mac(rng), "sandbox": netns},
        ],
        "ips": [
            {
                "address": f"10.{octet}.{host >> 8}.{host & 255}/16",
                "gateway": f"10.{octet}.0.1",
                "interface": 2,
            }
        ],
        "routes": [{"dst": f"10.{octet}.0.0/16", "gw": f"10.{octet}.0.1"}],
        "dns": {},
    }


def lifecycle(serial: int, rng: random.Random) -> list[ev.Event]:
    """One pod sandbox from ADD to DEL: 10 events, as the agent writes them."""
    container = f"{rng.getrandbits(128):032x}{rng.getrandbits(128):032x}"
    pod = ev.PodRef("tenant-ns", f"web-{serial}", uid=f"{rng.getrandbits(128):032x}")
    add = add_requested(pod, container)
    host = serial % 65000 + 2
    results = [delegate_result(i, host, rng, add.netns) for i in range(len(NETWORKS))]
    merged = {
        "cniVersion": "1.0.0",
        "interfaces": [i for r in results for i in r["interfaces"]],
        "ips": [ip for r in results for ip in r["ips"]],
        "routes": [r for res in results for r in res["routes"]],
        "dns": {},
    }
    ips = [ip["address"].split("/")[0] for ip in merged["ips"]]
    annotations = {
        "multi-ip-preferences": '{"multi_entry": 2, "ips": {'
        + ", ".join(
            f'"ip{n + 1}": {{"ip": "{ip}", "interface": "eth{n}"}}' for n, ip in enumerate(ips)
        )
        + "}}",
        "k8s.v1.cni.cncf.io/network-status": "["
        + ", ".join(
            f'{{"name": "{NETWORKS[n][0]}", "interface": "eth{n}", "ips": ["{ip}"]}}'
            for n, ip in enumerate(ips)
        )
        + "]",
    }
    return [
        add,
        ev.DelegateAdded(index=0, result=results[0]),
        ev.DelegateAdded(index=1, result=results[1]),
        ev.AddCompleted(result=merged),
        ev.AnnotationPublished(annotations=annotations),
        ev.DelRequested(initiator=ev.INITIATOR_RUNTIME),
        ev.DelegateDeleted(index=0),
        ev.DelegateDeleted(index=1),
        ev.DelCompleted(),
    ]


def interleaved(total: int, *, live: int = 200, seed: int = 1) -> Iterator[tuple[str, ev.Event]]:
    """`total` (stream, event) pairs from `live` pods at a time, in random order."""
    rng = random.Random(seed)
    active: list[tuple[str, list[ev.Event]]] = []
    serial = 0
    for _ in range(total):
        while len(active) < live:
            events = lifecycle(serial, rng)
            active.append((f"{rng.getrandbits(128):032x}{serial:032x}", events[::-1]))
            serial += 1
        slot = rng.randrange(len(active))
        stream, pending = active[slot]
        yield stream, pending.pop()
        if not pending:
            active[slot] = active[-1]
            active.pop()


def write_log(db: Path, total: int) -> None:
    """A migrated log of `total` events plus snapshots, written in big transactions."""
    migrations.migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    attachments: dict[str, st.Attachment] = {}
    versions: dict[str, int] = {}
    rows: list[tuple[int, str, int, str, float, str]] = []
    now = time.time() - total / 1000
    conn.execute("BEGIN")
    for seq, (stream, event) in enumerate(interleaved(total), start=1):
        version = versions[stream] = versions.get(stream, 0) + 1
        at = now + seq / 1000
        rec = ev.Recorded(seq, stream, version, at, event)
        att = st.evolve(attachments.get(stream), rec)
        if att is None:
            attachments.pop(stream, None)
            versions.pop(stream)  # streams never restart here
        else:
            attachments[stream] = att
        rows.append((seq, stream, version, event.kind, at, codec.encode_event(event).decode()))
        if seq % SNAPSHOT_EVERY == 0:
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            rows.clear()
            snapshot = st.NodeState(attachments=dict(attachments), last_seq=seq)
            conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?)",
                (seq, replay.FOLD_VERSION, at, codec.encode_state(snapshot)),
            )
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


if __name__ == "__main__":
    write_log(Path(sys.argv[1]), int(sys.argv[2]))
