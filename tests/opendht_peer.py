#!/usr/bin/python3
"""An upstream-style OpenDHT peer for the tests, with Debian's python3-opendht.

    opendht_peer.py put BOOTSTRAP_PORT VALUE                     put VALUE under bad_actors, as upstream does
    opendht_peer.py get BOOTSTRAP_PORT UUID SECS                 poll get() until a value with that event_uuid
    opendht_peer.py listen BOOTSTRAP_PORT                        print every value as it arrives

Bootstraps from 127.0.0.1 only. Values print one JSON line each: user_type, data, size, and
arrival time (time.time()).
"""
import json
import sys
import threading
import time

import opendht as dht


def out(value):
    data = bytes(value.data)
    print(json.dumps({"user_type": value.user_type, "data": data.decode("utf-8", "replace"),
                      "size": len(data), "t": time.time()}), flush=True)


def main():
    cmd, port = sys.argv[1], sys.argv[2]
    runner = dht.DhtRunner()
    runner.run(port=0)
    runner.bootstrap("127.0.0.1", port)
    key = dht.InfoHash.get("bad_actors")
    if cmd == "put":
        value = dht.Value(sys.argv[3].encode())
        value.user_type = "text/plain"
        done = threading.Event()
        result = {}

        def on_done(ok, _nodes):
            result["ok"] = ok
            done.set()

        runner.put(key, value, on_done)
        done.wait(30)
        print("stored" if result.get("ok") else "failed", flush=True)
        # Stay a moment so that listeners are told before this node leaves.
        time.sleep(1)
    elif cmd == "get":
        uuid, deadline = sys.argv[3], time.time() + float(sys.argv[4])
        while time.time() < deadline:
            for value in runner.get(key):
                try:
                    if json.loads(bytes(value.data)).get("event_uuid") == uuid:
                        out(value)
                        runner.join()
                        return
                except ValueError:
                    pass
            time.sleep(0.2)
        print("not found", flush=True)
    elif cmd == "listen":
        def on_value(value, expired):
            if not expired:
                out(value)
            return True

        # Ready first: every value, stored before or put after, follows it.
        print(json.dumps({"ready": True}), flush=True)
        runner.listen(key, on_value)
        # Until the test closes stdin.
        sys.stdin.read()
    runner.join()


if __name__ == "__main__":
    main()
