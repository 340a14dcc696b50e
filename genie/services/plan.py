"""Turn a pod's network requests into the exact plugin configs the delegates will be run with.

The plan is recorded in AddRequested before anything runs, so DEL and crash recovery later
replay the very same configs. Pure: the only outside input is the network registry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from genie.cni import errors
from genie.domain import events as ev
from genie.networks import registry as reg
from genie.networks import selection

# (namespace, name) -> the network a NetworkAttachmentDefinition stands for
AttachmentDefinitions = Callable[[str, str], reg.NetworkConfig]


def plan_delegates(
    requests: Sequence[selection.NetworkRequest],
    *,
    registry: reg.NetworkRegistry,
    pod: str,
    pod_namespace: str = "default",
    attachment_definitions: AttachmentDefinitions | None = None,
) -> tuple[ev.PlannedDelegate, ...]:
    """One PlannedDelegate per request, in request order; CniError(7) for unknown networks.

    Multus-syntax requests resolve through `attachment_definitions` when Kubernetes is
    configured (the pod's namespace unless the request names one); everything else, and
    all of it without Kubernetes, comes from the net dir.
    """
    planned: list[ev.PlannedDelegate] = []
    for index, request in enumerate(requests):
        try:
            if request.attachment_definition and attachment_definitions is not None:
                network = attachment_definitions(request.namespace or pod_namespace, request.name)
            else:
                network = registry.get(request.name)
        except reg.UnknownNetworkError as exc:
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG,
                f"pod {pod}: network {request.name!r} (interface {request.ifname}): {exc}",
            ) from None
        plugins = tuple(
            build_plugin_config(plugin, network=network, request=request, pod=pod)
            for plugin in network.plugins
        )
        planned.append(
            ev.PlannedDelegate(
                index=index,
                network=network.name,
                ifname=request.ifname,
                cni_version=network.cni_version,
                plugins=plugins,
                cni_args=cni_args_for(request),
                parallel=network.parallel,
            )
        )
    return tuple(planned)


def build_plugin_config(
    plugin: Mapping[str, Any],
    *,
    network: reg.NetworkConfig,
    request: selection.NetworkRequest,
    pod: str,
) -> dict[str, Any]:
    """The plugin's stdin config (without prevResult): the file's, plus name/cniVersion/pinning."""
    conf: dict[str, Any] = copy.deepcopy(dict(plugin))
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    conf.pop("prevResult", None)
    if request.ips or request.mac:
        capabilities = conf.get("capabilities")
        caps = capabilities if isinstance(capabilities, Mapping) else {}
        runtime: dict[str, Any] = {}
        if request.ips and caps.get("ips") is True:
            runtime["ips"] = list(request.ips)
        if request.mac and caps.get("mac") is True:
            runtime["mac"] = request.mac
        if runtime:
            existing = _object(conf, "runtimeConfig", network=network, pod=pod)
            conf["runtimeConfig"] = {**existing, **runtime}
    cni: dict[str, Any] = {}
    if request.cni_args:
        cni.update(copy.deepcopy(dict(request.cni_args)))
    if request.ips:
        cni["ips"] = list(request.ips)
    if request.mac:
        cni["mac"] = request.mac
    if cni:
        args = _object(conf, "args", network=network, pod=pod)
        previous = args.get("cni")
        if previous is not None and not isinstance(previous, Mapping):
            raise errors.CniError(
                errors.INVALID_NETWORK_CONFIG,
                f"pod {pod}: network {network.name!r} ({network.source}): "
                "args.cni is not an object",
            )
        args["cni"] = {**(previous or {}), **cni}
        conf["args"] = args
    return conf


def cni_args_for(request: selection.NetworkRequest) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS pairs for IPAMs that read pinning from the environment (static, host-local).

    host-local parses `IP` as one address, so `IP` is only set for a single requested
    address; several addresses travel in `args.cni.ips` and `runtimeConfig.ips` only.
    """
    pairs: list[tuple[str, str]] = []
    if len(request.ips) == 1:
        pairs.append(("IP", request.ips[0]))
    if request.mac:
        pairs.append(("MAC", request.mac))
    if pairs:
        pairs.insert(0, ("IgnoreUnknown", "true"))
    return tuple(pairs)


def _object(
    conf: Mapping[str, Any], key: str, *, network: reg.NetworkConfig, pod: str
) -> dict[str, Any]:
    value = conf.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise errors.CniError(
            errors.INVALID_NETWORK_CONFIG,
            f"pod {pod}: network {network.name!r} ({network.source}): {key} is not an object",
        )
    return dict(value)
