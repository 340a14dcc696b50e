"""The agent's Kubernetes API client: from --kubeconfig, else in-cluster, else none.

`connect()` returns a `Client` (kubernetes-asyncio ApiClient plus the API groups genie
uses) or None when there is no Kubernetes to talk to, in which case the agent uses the
static pods dir. kubernetes_asyncio is imported inside `connect()`: it costs about a second,
and nothing outside the agent's cluster mode should pay for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

if TYPE_CHECKING:
    from kubernetes_asyncio import client as k8s_client

log = logging.getLogger("genie.k8s")

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# one agent per node: a handful of concurrent requests (watch streams, patches, events)
CONNECTION_POOL: Final = 16
TLS_CLOSE_GRACE: Final = 0.25  # seconds; aiohttp's documented shutdown advice


class ConfigError(Exception):
    """A kubeconfig or in-cluster service account is configured but unusable."""


@dataclasses.dataclass(slots=True)
class Client:
    """An open API client; `close()` it (the agent does at shutdown)."""

    api: k8s_client.ApiClient
    core: k8s_client.CoreV1Api
    custom: k8s_client.CustomObjectsApi
    origin: str  # "kubeconfig /path" or "in-cluster": for logs

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    async def close(self) -> None:
        await close_api(self.api)


async def close_api(api: k8s_client.ApiClient) -> None:
    """Close the client's pool, then let its TLS transports finish closing: aiohttp drops
    them without waiting for connection_lost (aio-libs/aiohttp#1925), and one still shutting
    down when the loop ends is reported as an unclosed transport."""
    await api.close()
    await anyio.sleep(TLS_CLOSE_GRACE)


def in_cluster(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the process runs in a pod with a service account (cheap: no client import)."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and bool(env.get("KUBERNETES_SERVICE_PORT"))


def configured(
    *,
    kubeconfig: Path | None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> bool:
    """Whether connect() would return a client (no client import, no network)."""
    return kubeconfig is not None or (
        in_cluster(environ) and (service_account_dir / "token").is_file()
    )


async def connect(
    *,
    kubeconfig: Path | None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Client | None:
    """A client from the kubeconfig, else the in-cluster service account, else None.

    Raises ConfigError when a kubeconfig is given but unusable, or when the in-cluster
    environment is set but its token or CA file is not. Makes no request.
    """
    if not configured(
        kubeconfig=kubeconfig, environ=environ, service_account_dir=service_account_dir
    ):
        if in_cluster(environ):
            raise ConfigError(
                f"KUBERNETES_SERVICE_HOST is set but {service_account_dir}/token is not a file"
            )
        return None
    from kubernetes_asyncio import client as k8s_client
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio.config import config_exception

    configuration = k8s_client.Configuration()
    try:
        if kubeconfig is not None:
            await k8s_config.load_kube_config(
                config_file=str(kubeconfig),
                client_configuration=configuration,
                persist_config=False,
            )
            origin = f"kubeconfig {kubeconfig}"
        else:
            env: Any = dict(os.environ if environ is None else environ)
            k8s_config.incluster_config.InClusterConfigLoader(
                token_filename=str(service_account_dir / "token"),
                cert_filename=str(service_account_dir / "ca.crt"),
                try_refresh_token=True,  # bound tokens rotate: re-read the file every minute
                environ=env,
            ).load_and_set(configuration)
            origin = "in-cluster"
    except (config_exception.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        where = kubeconfig if kubeconfig is not None else service_account_dir
        raise ConfigError(f"cannot load Kubernetes config from {where}: {exc}") from exc
    configuration.connection_pool_maxsize = CONNECTION_POOL
    api = k8s_client.ApiClient(configuration)
    api.user_agent = "genie-agent"
    log.info("Kubernetes API %s (%s)", configuration.host, origin)
    return Client(
        api=api,
        core=k8s_client.CoreV1Api(api),
        custom=k8s_client.CustomObjectsApi(api),
        origin=origin,
    )
