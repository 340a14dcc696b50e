"""The CNI spec versions genie speaks, and the comparisons that decide what a version allows."""

from __future__ import annotations

from typing import Final

from genie.cni import errors

# What genie accepts from the runtime and answers in (the VERSION command lists these).
SUPPORTED: Final = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST: Final = "1.1.0"
# Result versions a delegate may print: the supported ones plus the legacy ip4/ip6 form.
LEGACY: Final = ("0.1.0", "0.2.0")
KNOWN_RESULT_VERSIONS: Final = LEGACY + SUPPORTED


def parse(version: str) -> tuple[int, int, int]:
    """`"1.0.0"` -> (1, 0, 0); anything that is not three dot-separated decimals is an error."""
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        raise errors.CniError(
            errors.INCOMPATIBLE_VERSION, f"malformed CNI version {version!r}", "want N.N.N"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def require_supported(version: object) -> str:
    """Return `version` if genie speaks it, else raise an incompatible-version CniError."""
    if isinstance(version, str) and version in SUPPORTED:
        return version
    if version is None or version == "":
        raise errors.CniError(
            errors.INCOMPATIBLE_VERSION,
            "network configuration has no cniVersion",
            f"supported versions: {', '.join(SUPPORTED)}",
        )
    raise errors.CniError(
        errors.INCOMPATIBLE_VERSION,
        f"unsupported cniVersion {version!r}",
        f"supported versions: {', '.join(SUPPORTED)}",
    )


def at_least(version: str, minimum: str) -> bool:
    """True when `version` is `minimum` or newer (both must be well formed)."""
    return parse(version) >= parse(minimum)


def supports_check(version: str) -> bool:
    """CHECK (and prevResult on DEL) exist from spec 0.4.0 on."""
    return at_least(version, "0.4.0")


def supports_status_gc(version: str) -> bool:
    """STATUS and GC exist from spec 1.1.0 on."""
    return at_least(version, "1.1.0")


def is_legacy_result(version: str) -> bool:
    """Results of 0.1.0/0.2.0 use `ip4`/`ip6` blocks instead of `interfaces`/`ips`."""
    return version in LEGACY


def has_ip_version_field(version: str) -> bool:
    """0.3.x and 0.4.0 results carry `ips[].version`; 1.x results do not."""
    return parse(version) < (1, 0, 0) and not is_legacy_result(version)


def highest(versions: list[str] | tuple[str, ...]) -> str:
    """The newest of `versions` that genie supports; INCOMPATIBLE_VERSION if none is."""
    usable = [v for v in versions if isinstance(v, str) and v in SUPPORTED]
    if not usable:
        raise errors.CniError(
            errors.INCOMPATIBLE_VERSION,
            f"none of the versions {list(versions)!r} is supported",
            f"supported versions: {', '.join(SUPPORTED)}",
        )
    return max(usable, key=parse)
