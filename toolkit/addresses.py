"""IP addresses as the toolkit accepts them wherever they reach ssh (inventories, shells' endpoints).

Below both halves of the toolkit: the inventory checks and the shells' untrusted annotations use
the same rule. An IPv6 zone id (`fe80::1%eth0`) is refused, because `ipaddress` takes any text
after the `%`, newlines and spaces included.
"""

from __future__ import annotations

import ipaddress


def is_ip_address(text: str) -> bool:
    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
