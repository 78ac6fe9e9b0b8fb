#!/usr/bin/env python3
"""An APIBAN v1 client as APIBAN's documentation describes one, pointed at a SentryPeer node.

A client asks GET {base}/banned/{ID}, starting at ID 100, adds each answer's "ipaddress" list to
its set, and asks again with the answer's "ID" until the server answers 400 with
{"ipaddress": ["no new bans"], "ID": "none"}. It keeps the last numeric ID for its next run.

Usage: apiban_client.py BASE_URL [ID]. Prints one JSON object: the addresses in the order
received, the ID to start from next time, and how many batches it took.
"""
import json
import sys
import urllib.error
import urllib.request

MAX_BATCHES = 10_000


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def main():
    base = sys.argv[1].rstrip("/")
    last_id = sys.argv[2] if len(sys.argv) > 2 else "100"
    addresses = []
    batches = 0
    for _ in range(MAX_BATCHES):
        status, body = get(f"{base}/banned/{last_id}")
        if status == 400 and body.get("ID") == "none":
            if body.get("ipaddress") != ["no new bans"]:
                sys.exit(f"a 400 without 'no new bans': {body}")
            break
        if status != 200:
            sys.exit(f"unexpected answer {status}: {body}")
        if not str(body.get("ID", "")).isdigit():
            sys.exit(f"an answer without a numeric ID: {body}")
        if int(body["ID"]) <= int(last_id):
            sys.exit(f"the ID went backwards: {last_id} then {body['ID']}")
        ips = body.get("ipaddress")
        if not isinstance(ips, list) or not ips or len(ips) > 250:
            sys.exit(f"a batch must hold 1 to 250 addresses: {body}")
        addresses.extend(ips)
        last_id = body["ID"]
        batches += 1
    else:
        sys.exit("the server never said 'no new bans'")
    print(json.dumps({"addresses": addresses, "id": last_id, "batches": batches}))


if __name__ == "__main__":
    main()
