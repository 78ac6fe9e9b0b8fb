#!/usr/bin/env python3
"""Checks a MISP feed as MISP's feed fetcher reads it, using PyMISP, MISP's own library.

The feed directory holds manifest.json, hashes.csv and one {uuid}.json per event, as served under
/misp/. Each event is loaded into pymisp.MISPEvent; the manifest entry and the md5 hashes PyMISP
computes from the event (what MISP's feed generator would write) must equal the feed's own.

Usage: misp_check.py FEED_DIR. Prints one JSON object: each event's attribute values.
"""
import csv
import json
import os
import sys

from pymisp import MISPEvent

# Seconds a manifest made by one request may be ahead of an event made by the next.
CLOCK_SLACK = 5


def fail(msg):
    sys.exit(msg)


def main():
    feed = sys.argv[1]
    with open(os.path.join(feed, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(feed, "hashes.csv"), encoding="utf-8", newline="") as f:
        hashes = sorted(tuple(row) for row in csv.reader(f) if row)
    expected_hashes = []
    values = {}
    for uuid, ours in manifest.items():
        event = MISPEvent()
        with open(os.path.join(feed, f"{uuid}.json"), encoding="utf-8") as f:
            event.load(f)
        if event.uuid != uuid:
            fail(f"{uuid}.json holds event {event.uuid}")
        theirs = event.manifest[uuid]
        # The manifest is made when it is asked for, the event when it is: the same second or
        # the manifest's a little later.
        delta = int(ours["timestamp"]) - int(theirs["timestamp"])
        if not 0 <= delta <= CLOCK_SLACK:
            fail(f"{uuid}: manifest timestamp {ours['timestamp']} vs event {theirs['timestamp']}")
        if ours["date"] != theirs["date"] and delta == 0:
            fail(f"{uuid}: manifest date {ours['date']} vs event {theirs['date']}")
        for key in ("timestamp", "date"):
            ours.pop(key)
            theirs.pop(key)
        # PyMISP fills in a tag's defaults (colour, local); MISP keys tags by name.
        for entry in (ours, theirs):
            entry["Tag"] = [t["name"] for t in entry["Tag"]]
        if ours != theirs:
            fail(f"{uuid}: manifest entry {json.dumps(ours)} but PyMISP makes {json.dumps(theirs)}")
        for a in event.attributes:
            for key in ("uuid", "type", "category", "value", "to_ids"):
                if getattr(a, key, None) in (None, ""):
                    fail(f"{uuid}: an attribute without {key}")
        expected_hashes += [(h, uuid) for h in event.attributes_hashes("md5")]
        values[uuid] = [
            {"type": a.type, "category": a.category, "value": a.value, "to_ids": a.to_ids}
            for a in event.attributes
        ]
    if hashes != sorted(expected_hashes):
        fail(f"hashes.csv {hashes} but PyMISP makes {sorted(expected_hashes)}")
    print(json.dumps({"events": values, "hashes": len(hashes)}))


if __name__ == "__main__":
    main()
