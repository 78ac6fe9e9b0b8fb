#!/usr/bin/env python3
"""Loads a STIX 2.1 bundle with the stix2 library, custom content refused, and checks each
indicator: its pattern validates, names one address, and valid_until (if any) is after
valid_from.

Usage: stix_check.py BUNDLE.json. Prints one JSON object: for each indicator its address,
valid_until (or null) and whether it is revoked.
"""
import ipaddress
import json
import re
import sys

import stix2
from stix2patterns.validator import run_validator

PATTERN = re.compile(r"^\[(ipv4-addr|ipv6-addr):value = '([^']+)'\]$")


def rfc3339(t):
    """As the node's other formats write times: UTC, milliseconds, Z."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    bundle = stix2.parse(text, allow_custom=False)
    if not isinstance(bundle, stix2.v21.Bundle):
        sys.exit(f"not a STIX 2.1 bundle: {type(bundle)}")
    identities = {o.id for o in bundle.objects if o.type == "identity"}
    out = []
    for o in bundle.objects:
        if o.type == "identity":
            continue
        if not isinstance(o, stix2.v21.Indicator):
            sys.exit(f"unexpected object {o.type}")
        # Re-create it from its own properties: the library checks every constraint again.
        again = stix2.v21.Indicator(**{k: o[k] for k in o.properties_populated()})
        errors = run_validator(again.pattern, stix_version="2.1")
        if errors:
            sys.exit(f"{o.id}: bad pattern {again.pattern}: {errors}")
        m = PATTERN.match(again.pattern)
        if not m:
            sys.exit(f"{o.id}: the pattern names no single address: {again.pattern}")
        ip = ipaddress.ip_address(m.group(2))
        if (m.group(1) == "ipv6-addr") != (ip.version == 6):
            sys.exit(f"{o.id}: {m.group(1)} for {ip}")
        revoked = bool(again.get("revoked", False))
        if not revoked and again.get("created_by_ref") not in identities:
            sys.exit(f"{o.id}: created_by_ref names no identity in the bundle")
        until = again.get("valid_until")
        if until is not None and until <= again.valid_from:
            sys.exit(f"{o.id}: valid_until is not after valid_from")
        out.append(
            {
                "address": str(ip),
                "valid_until": rfc3339(until) if until is not None else None,
                "revoked": revoked,
            }
        )
    print(json.dumps({"indicators": out}))


if __name__ == "__main__":
    main()
