"""The one guard every traffic-generating script shares: loopback targets only."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


def require_loopback(url: str, purpose: str) -> None:
    """Exit unless ``url`` points at 127.0.0.0/8, ::1 or localhost."""
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(
            f"refusing to {purpose} {host!r}: loopback addresses only (127.0.0.1, ::1, localhost)"
        )
