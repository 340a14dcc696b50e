"""A TCP relay from a node namespace's loopback to the host's: how an agent inside a test
node netns reaches the test apiserver, with traffic on the two loopbacks only.

A socket belongs to the namespace it was created in: the listening socket is made while the
thread is inside the node netns, each outgoing one in the host netns. Plain threads, so it
keeps relaying while a test blocks on a shim call.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from genie.demo import netns
from tests.k8s import apiserver


class _Pair:
    """Both directions of one relayed connection; the sockets close when both are done."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self._sockets = (a, b)
        self._left = 2
        self._lock = threading.Lock()

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with self._lock:
            self._left -= 1
            if self._left == 0:
                for sock in self._sockets:
                    sock.close()


def _serve(listener: socket.socket, target_port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            inbound, _ = listener.accept()
        except OSError:
            return
        try:
            outbound = socket.create_connection(("127.0.0.1", target_port), timeout=5)
        except OSError:
            inbound.close()
            continue
        outbound.settimeout(None)
        for sock in (inbound, outbound):  # relay each write at once: no delayed-ACK stalls
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(inbound, outbound)
        for a, b in ((inbound, outbound), (outbound, inbound)):
            threading.Thread(target=pair.pump, args=(a, b), daemon=True).start()


@contextlib.contextmanager
def loopback_relay(node: str, target_port: int) -> Iterator[int]:
    """Listen on 127.0.0.1:<port> inside netns `node`, forward to the host's target_port."""
    with netns.enter(node):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, target_port, stop), daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


@contextlib.contextmanager
def agent_kubeconfig(node: str, target_port: int, path: Path, *, token: str) -> Iterator[Path]:
    """A kubeconfig for an agent in netns `node`: the apiserver through a relay there."""
    with loopback_relay(node, target_port) as port:
        yield apiserver.write_kubeconfig(
            path, server=f"https://127.0.0.1:{port}", token=token, user="genie"
        )
