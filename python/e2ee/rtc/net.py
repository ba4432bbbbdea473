"""Which local addresses WebRTC offers as ICE host candidates.

aiortc's ICE agent (aioice) offers every non-loopback address of every interface.  A
server that should only be reachable on some addresses, and every test (which must keep
its traffic on loopback), restricts that list here.  The setting is process-wide, as
aioice's address discovery is.

Set ``E2EE_ICE_ADDRESSES=127.0.0.1`` (comma-separated) in the environment, or call
:func:`restrict_ice_addresses`; :mod:`e2ee.transform.protect`, :mod:`e2ee.sfu.router` and the server
apply the environment variable when they are imported.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence

__all__ = [
    "ENV_VAR",
    "apply_environment",
    "configure_media_addresses",
    "default_media_addresses",
    "restrict_ice_addresses",
]

log = logging.getLogger(__name__)

ENV_VAR = "E2EE_ICE_ADDRESSES"


def restrict_ice_addresses(addresses: Sequence[str]) -> None:
    """Offer only ``addresses`` (IPv4 or IPv6 literals) as ICE host candidates."""
    import aioice.ice

    allowed = [str(ipaddress.ip_address(a)) for a in addresses]
    if not allowed:
        raise ValueError("at least one ICE address is needed")

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in allowed
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = host_addresses
    log.info("ICE host candidates restricted to %s", ", ".join(allowed))


def apply_environment() -> None:
    """Applies ``E2EE_ICE_ADDRESSES`` if it is set."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        restrict_ice_addresses([a.strip() for a in value.split(",") if a.strip()])


def default_media_addresses(host: str) -> list[str]:
    """The media addresses of a server bound to ``host``: that address when it is a
    specific IP literal, ``127.0.0.1`` for ``localhost``, none (no restriction) for an
    unspecified address (``0.0.0.0``, ``::``) or another host name."""
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return []
    return [] if address.is_unspecified else [str(address)]


def configure_media_addresses(addresses: Sequence[str] | None, host: str) -> list[str]:
    """Restricts ICE host candidates for a server bound to ``host``: to ``addresses`` if
    given, else to ``E2EE_ICE_ADDRESSES`` if set, else to
    :func:`default_media_addresses`.  Returns the addresses applied (empty: all)."""
    chosen = [a.strip() for a in addresses or [] if a.strip()]
    if not chosen:
        value = os.environ.get(ENV_VAR, "").strip()
        chosen = [a.strip() for a in value.split(",") if a.strip()]
    if not chosen:
        chosen = default_media_addresses(host)
    if chosen:
        restrict_ice_addresses(chosen)
    return chosen
