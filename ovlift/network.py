"""Where a service listens: the one test of "this machine only" that the Dask cluster
(``ovlift.flows``) and the viewer (``ovlift view``) warn by."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is reachable from this machine only; a
    name other than ``localhost`` counts as beyond it, as do ``0.0.0.0`` and ``::`` (every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
