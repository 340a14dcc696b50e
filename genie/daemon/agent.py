"""Agent life cycle: start-up order, serving, and the SIGTERM drain.

Order: event log (replay) -> networks, pods, delegates -> socket -> ready. On SIGTERM /readyz
fails at once, new CNI requests get "try again later", in-flight ones finish (bounded by
shutdown_grace), the log is closed and the agent exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import anyio
from aiohttp import web

from genie.cni import wire
from genie.daemon import cluster, server
from genie.daemon import config as agent_config
from genie.daemon import metrics as agent_metrics
from genie.k8s import client as k8s_client
from genie.networks import registry as net_registry
from genie.pods import source as pod_source
from genie.pods import static_dir
from genie.services import context, delegates, dispatch, keyed_lock, recovery
from genie.store import recorder

log = logging.getLogger("genie.agent")


class Agent:
    """One node agent; `serve` runs it until SIGTERM/SIGINT (or `stop()`)."""

    def __init__(self, config: agent_config.AgentConfig) -> None:
        self.config = config
        self.metrics = agent_metrics.AgentMetrics()
        self._loaded = False
        self._draining = False
        self._stop = anyio.Event()
        self._limiter = anyio.CapacityLimiter(config.max_requests)
        self._in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self.services: context.Services | None = None

    def ready(self) -> bool:
        pods_ready = self.services.pods.ready() if self.services else False
        return self._loaded and pods_ready and not self._draining

    def draining(self) -> bool:
        return self._draining

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> int:
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            if cfg.metrics_addr:  # first: a taken port stops the agent before the log is opened
                await stack.enter_async_context(self._metrics_site(cfg.metrics_addr))
            networks = net_registry.NetworkRegistry(cfg.net_dir)
            kube = await self._cluster(stack, networks)
            store = await recorder.EventStore.open(cfg.db, snapshot_every=cfg.snapshot_every)
            stack.push_async_callback(store.close)
            self.metrics.watch_event_log(
                last_seq=lambda: store.state.last_seq, live_attachments=lambda: store.live_count
            )
            log.info(
                "event log %s loaded: %d live attachments, last seq %d",
                cfg.db,
                len(store.state.attachments),
                store.state.last_seq,
            )
            async with anyio.create_task_group() as tg:
                if kube is not None:
                    kube.start_watches(tg)
                self.services = context.Services(
                    store=store,
                    networks=networks,
                    pods=kube.pods if kube is not None else self._pod_source(),
                    runner=delegates.DelegateRunner(
                        cni_path=cfg.cni_path,
                        timeout=cfg.delegate_timeout,
                        max_concurrency=cfg.max_delegates,
                        on_failure=self.metrics.delegate_failed,
                    ),
                    locks=keyed_lock.KeyedLock(),
                    default_network=cfg.default_network,
                    ready=self.ready,
                    attachment_definitions=kube.attachment_definitions if kube else None,
                    observer=kube,
                    require_pod=kube is not None,
                )
                done, left = await recovery.recover(self.services)
                if done or left:
                    log.info("recovery: %d operations settled, %d left for DEL", done, left)
                if kube is not None:
                    kube.start_write_back(tg, self.services, pod_gone_grace=cfg.pod_gone_grace)
                self._loaded = True
                tg.start_soon(self._watch_signals)
                async with self._socket_site():
                    log.info("serving CNI on %s", cfg.socket)
                    await self._stop.wait()
                    await self._drain()
                tg.cancel_scope.cancel()
        log.info("stopped")
        return 0

    async def _cluster(
        self, stack: contextlib.AsyncExitStack, networks: net_registry.NetworkRegistry
    ) -> cluster.Cluster | None:
        """The Kubernetes side when a kubeconfig or in-cluster config is there, else None."""
        client = await k8s_client.connect(kubeconfig=self.config.kubeconfig)
        if client is None:
            return None
        stack.push_async_callback(client.close)
        if not self.config.node_name:
            raise agent_config.ConfigError("with Kubernetes, --node-name (or NODE_NAME) is needed")
        log.info("Kubernetes API %s, node %s", client.host, self.config.node_name)
        kube = cluster.Cluster(client, node_name=self.config.node_name, networks=networks)
        stack.callback(kube.events.close)  # its queue, also when its task never started
        kube.export(self.metrics)
        return kube

    def _pod_source(self) -> pod_source.PodSource:
        if self.config.pods_dir is not None:
            return static_dir.StaticPodsDir(self.config.pods_dir)
        return pod_source.NoPodSource()

    async def _handle(self, req: wire.CniRequest) -> dict[str, Any] | None:
        assert self.services is not None
        self._in_flight += 1
        self._idle = anyio.Event() if self._in_flight == 1 else self._idle
        try:
            async with self._limiter:
                return await dispatch.handle(self.services, req, metrics=self.metrics)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: draining", signal.Signals(signum).name)
                self._draining = True
                self._stop.set()
                return

    async def _drain(self) -> None:
        self._draining = True
        with anyio.move_on_after(self.config.shutdown_grace) as scope:
            await self._idle.wait()
        if scope.cancelled_caught:
            log.warning(
                "%d operations still running after %.0fs; recovery will finish them",
                self._in_flight,
                self.config.shutdown_grace,
            )

    @contextlib.asynccontextmanager
    async def _socket_site(self) -> AsyncIterator[None]:
        path = self.config.socket
        server.prepare_socket_dir(path)
        app = server.build_app(
            handle=self._handle,
            ready=self.ready,
            draining=self.draining,
            refused=self.metrics.request_done,
        )
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=server.IDLE_TIMEOUT
        )
        await runner.setup()
        old_umask = os.umask(0o177)
        try:
            await web.UnixSite(runner, str(path)).start()
        finally:
            os.umask(old_umask)
        path.chmod(0o600)
        try:
            yield
        finally:
            await runner.cleanup()
            path.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _metrics_site(self, addr: str) -> AsyncIterator[None]:
        try:
            host, port = agent_config.metrics_listen(addr)
        except ValueError as exc:  # config.load checked it already
            raise agent_config.ConfigError(f"metrics-addr {addr}: {exc}") from exc
        app = web.Application()

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(
                body=self.metrics.exposition(), content_type="text/plain", charset="utf-8"
            )

        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:  # in use, not a local address, a name that does not resolve
            await runner.cleanup()
            raise agent_config.ConfigError(
                f"metrics-addr {addr}: cannot listen: {exc.strerror or exc}"
            ) from exc
        log.info("metrics on http://%s/metrics", addr)
        try:
            yield
        finally:
            await runner.cleanup()
