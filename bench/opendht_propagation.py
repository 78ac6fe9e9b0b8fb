#!/usr/bin/python3
"""OpenDHT propagation: Debian's dhtnode as the bootstrap node, one sentrypeer node with
--opendht, and an upstream-style reader (python3-opendht, in this process) listening on
bad_actors. Sends COUNT probes at RATE/s to the node and reports the time from sending each probe
to the reader being handed its value, the value's size, and the bytes on the loopback interface
per event (everything: puts, the listener's notifications, DHT upkeep; the probes themselves
taken off). Run it in a network namespace of its own (bench/opendht.sh does) so that loopback
carries nothing else.

    bench/opendht_propagation.py SENTRYPEER_BINARY [COUNT=200] [RATE=20]
"""
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import opendht as dht


def lo_bytes():
    """Bytes sent on lo, from /proc/net/dev (this network namespace's; /sys shows the host's)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    raise RuntimeError("no lo in /proc/net/dev")


def probe(number, branch):
    return (f"OPTIONS sip:{number}@198.51.100.10 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-{branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"To: <sip:{number}@198.51.100.10>\r\n"
            f"From: <sip:{number}@198.51.100.10>;tag=6{branch}\r\n"
            "User-Agent: opendht-bench\r\n"
            f"Call-ID: {branch}-call\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def main():
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    work = tempfile.mkdtemp()

    node = subprocess.Popen(["dhtnode", "-p", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    port = None
    for line in node.stdout:
        m = re.search(r"running on port (\d+)", line)
        if m:
            port = int(m.group(1))
            break

    ours = subprocess.Popen(
        [binary, "-f", f"{work}/sentrypeer.db", "--udp-listen", "127.0.0.1:0", "--tcp-listen",
         "127.0.0.1:0", "-N", "--opendht", "--opendht-bootstrap", f"127.0.0.1:{port}",
         "--opendht-port", "0", "--p2p-allow-private"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    udp = None
    for line in ours.stderr:
        m = re.search(r"transport=UDP addr=([0-9.]+):(\d+)", line)
        if m:
            udp = (m.group(1), int(m.group(2)))
        if "Ready." in line:
            break
    threading.Thread(target=lambda: [None for _ in ours.stderr], daemon=True).start()

    arrived, sizes = {}, []
    lock = threading.Lock()

    def on_value(value, expired):
        if expired:
            return True
        now = time.time()
        data = bytes(value.data)
        try:
            number = json.loads(data)["called_number"]
        except (ValueError, KeyError):
            return True
        with lock:
            if number not in arrived:
                arrived[number] = now
                sizes.append(len(data))
        return True

    reader = dht.DhtRunner()
    reader.run(port=0)
    reader.bootstrap("127.0.0.1", str(port))
    reader.listen(dht.InfoHash.get("bad_actors"), on_value)
    time.sleep(3)

    before = lo_bytes()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, probe_bytes = {}, 0
    start = time.time()
    for i in range(count):
        number = f"77{i:06d}"
        msg = probe(number, 1000 + i)
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        sent[number] = time.time()
        sock.sendto(msg, udp)
        probe_bytes += len(msg) + 14 + 20 + 8  # Ethernet, IPv4 and UDP headers on lo
    deadline = time.time() + 30
    while time.time() < deadline:
        with lock:
            if len(arrived) >= count:
                break
        time.sleep(0.05)
    time.sleep(1)
    after = lo_bytes()

    with lock:
        lat = sorted((arrived[n] - sent[n]) * 1000 for n in sent if n in arrived)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
    print(json.dumps({
        "events": count, "rate_per_sec": rate, "delivered": len(lat),
        "p50_ms": round(q(0.50), 1), "p95_ms": round(q(0.95), 1), "p99_ms": round(q(0.99), 1),
        "max_ms": round(lat[-1], 1) if lat else None,
        "value_bytes_mean": round(statistics.mean(sizes)) if sizes else None,
        "loopback_bytes_per_event": round((after - before - probe_bytes) / count),
    }))
    ours.terminate()
    ours.wait(10)
    node.kill()
    reader.shutdown()


if __name__ == "__main__":
    main()
