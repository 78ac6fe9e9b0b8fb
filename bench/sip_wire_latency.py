#!/usr/bin/env python3
"""SIP answer latency on the wire, from a tcpdump capture of loopback.

    bench/sip_wire_latency.py CAPTURE.pcap CODE

For each Call-ID: the time from its first INVITE to the first response with status CODE, both
timestamped by the kernel as they crossed the interface (tcpdump -i lo). This is the time the
server takes as the client's network sees it: the client's own loop (when it got round to
reading the answer, and its logging) is not in it. Prints p50, p99 and max in milliseconds and
how many INVITEs were answered. Standard library only; IPv4 or IPv6 over UDP, Ethernet framing
(Linux loopback captures) or raw IP.
"""
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            return
        magic = struct.unpack("<I", head[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            endian = "<"
        else:
            endian = ">"
            magic = struct.unpack(">I", head[:4])[0]
        nano = magic == 0xA1B23C4D
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            ts = sec + frac / (1e9 if nano else 1e6)
            if linktype == 1:  # Ethernet
                ethertype = struct.unpack(">H", data[12:14])[0]
                ip = data[14:]
            elif linktype in (101, 12, 14):  # raw IP
                ip = data
                ethertype = 0x86DD if ip and ip[0] >> 4 == 6 else 0x0800
            else:
                continue
            if ethertype == 0x0800 and len(ip) > 20 and ip[9] == 17:
                payload = ip[(ip[0] & 0x0F) * 4 + 8:]
            elif ethertype == 0x86DD and len(ip) > 48 and ip[6] == 17:
                payload = ip[48:]
            else:
                continue
            yield ts, payload


def call_id(payload):
    for line in payload.split(b"\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip()
    return None


def main():
    path, code = sys.argv[1], sys.argv[2].encode()
    sent, answered = {}, {}
    for ts, payload in packets(path):
        first = payload.split(b"\r\n", 1)[0]
        cid = call_id(payload)
        if cid is None:
            continue
        if first.startswith(b"INVITE "):
            sent.setdefault(cid, ts)
        elif first.startswith(b"SIP/2.0 " + code) and cid in sent:
            answered.setdefault(cid, ts - sent[cid])
    lat = sorted(answered.values())
    if not lat:
        print(f"no {code.decode()} answers to {len(sent)} INVITEs in the capture")
        return

    def pct(p):
        return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000

    print(
        f"on the wire: p50 {pct(0.5):.3f} ms, p99 {pct(0.99):.3f} ms, max {lat[-1] * 1000:.3f} ms "
        f"({len(lat)} of {len(sent)} INVITEs answered {code.decode()} in the capture)"
    )


if __name__ == "__main__":
    main()
