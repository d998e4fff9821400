#!/usr/bin/env python3
"""Raw UDP on loopback for the spoofed-source tests (spoof_scenario.ts).

Runs ONLY inside a private network namespace: it refuses to start when the
namespace has any interface but `lo`, and refuses to send anything whose
source or destination is not in 127.0.0.0/8.

    python3 _raw_udp.py PORT

- Sniffs: every UDP datagram on `lo` to or from PORT is printed on stdout as
  one JSON line {"src": "IP:PORT", "dst": "IP:PORT", "data": BASE64}
  (packet socket; each datagram once, as it arrives).
- Spoofs: each stdin line {"src": "IP:PORT", "dst": "IP:PORT", "data":
  BASE64} is sent as an IPv4/UDP datagram with that source address (raw
  socket, IP_HDRINCL), whoever owns it.

The first stdout line is {"event": "ready"}, once the sniffer listens.
Needs CAP_NET_RAW (root in the namespace). Exits at the end of stdin.
"""

import base64
import ipaddress
import json
import socket
import struct
import sys
import threading

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

write_lock = threading.Lock()


def emit(obj):
    with write_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def split_address(text):
    host, _, port = text.rpartition(":")
    if ipaddress.ip_address(host) not in LOOPBACK:
        raise ValueError(f"refusing a non-loopback address: {text}")
    return host, int(port)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src, dst, payload, ident):
    (src_ip, src_port), (dst_ip, dst_port) = src, dst
    s, d = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_length = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_length)
    header = struct.pack("!HHHH", src_port, dst_port, udp_length, 0)
    udp_sum = checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src_port, dst_port, udp_length, udp_sum)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, ident, 0, 64,
        socket.IPPROTO_UDP, 0, s, d,
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + udp + payload


def sniff(sock, port):
    while True:
        packet, address = sock.recvfrom(70000)
        if address[2] == PACKET_OUTGOING or len(packet) < 28:
            continue
        if packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
            continue
        ihl = (packet[0] & 0x0F) * 4
        src_port, dst_port, length = struct.unpack("!HHH", packet[ihl:ihl + 6])
        if port not in (src_port, dst_port):
            continue
        src = socket.inet_ntoa(packet[12:16])
        dst = socket.inet_ntoa(packet[16:20])
        emit({
            "src": f"{src}:{src_port}",
            "dst": f"{dst}:{dst_port}",
            "data": base64.b64encode(packet[ihl + 8:ihl + length]).decode(),
        })


def main():
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        sys.exit(f"refusing to run: not a private network namespace ({names})")
    port = int(sys.argv[1])
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                            socket.htons(ETH_P_IP))
    sniffer.bind(("lo", ETH_P_IP))
    threading.Thread(target=sniff, args=(sniffer, port), daemon=True).start()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    emit({"event": "ready"})
    ident = 0
    for line in iter(sys.stdin.readline, ""):
        order = json.loads(line)
        src, dst = split_address(order["src"]), split_address(order["dst"])
        ident = (ident + 1) & 0xFFFF
        packet = ipv4_udp(src, dst, base64.b64decode(order["data"]), ident)
        raw.sendto(packet, (dst[0], 0))


if __name__ == "__main__":
    main()
