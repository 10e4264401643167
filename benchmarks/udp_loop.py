"""Server-side CPU per query of the batched UDP path, without dnsperf: bursts of queries
are queued on a loopback socket, then the worker's reader (``mmsg.BatchedUDPReader``
and the engine) answers them; the CPU time of that drain, divided by the burst, is the
cost of receiving, answering and sending one query, kernel included. One process, no
generator on the other core: steadier than dnsperf for comparing two versions of the
code (run each in turn, a few times). Used for benchmarks/RESULTS.md.

    python benchmarks/udp_loop.py ZONE QUERY_FILE [--bursts N] [--null]

``--null`` answers every query with the same small prepared bytes: what is left is
the loop and the system calls.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import sys
import time
from pathlib import Path

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nameserver.engine.core import Engine  # noqa: E402
from nameserver.server import mmsg  # noqa: E402
from nameserver.server.udp import UDPStats, create_bound_socket  # noqa: E402
from nameserver.zone.load import load_zone  # noqa: E402

BURST = 3000  # queries queued per measurement (they fit the 4 MB receive buffer)
CLIENTS = 8  # sending sockets, as dnsperf -c 8


class _Null:
    """Answers everything with one small prepared response (the loop's own cost)."""

    answer = bytes.fromhex("8400000100000000000004636f6f700000060001")

    def handle(self, wire: bytes, over_tcp: bool) -> bytes:
        return wire[:2] + self.answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zone")
    ap.add_argument("queries", help="query file: NAME TYPE per line (genqueries.py)")
    ap.add_argument("--bursts", type=int, default=60, help="measured bursts (median shown)")
    ap.add_argument("--null", action="store_true", help="a fixed answer instead of the engine")
    args = ap.parse_args()
    engine = _Null() if args.null else Engine([load_zone(args.zone, "coop.").zone])
    wires = []
    with open(args.queries) as lines:
        for i, line in enumerate(lines):
            if i >= 400_000:
                break
            name, qtype = line.split()
            q = dns.message.make_query(name, qtype, want_dnssec=True, payload=4096)
            q.flags, q.id = 0, i & 0xFFFF
            wires.append(q.to_wire())
    server = create_bound_socket("127.0.0.1", 0, socket.SOCK_DGRAM, bufsize=4 << 20)
    address = server.getsockname()
    clients = []
    for _ in range(CLIENTS):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        c.bind(("127.0.0.1", 0))
        c.setblocking(False)
        clients.append(c)
    stats = UDPStats()
    reader = mmsg.BatchedUDPReader(server, lambda: engine, stats)
    sent = 0

    def burst() -> None:
        nonlocal sent
        for j in range(BURST):
            clients[j % CLIENTS].sendto(wires[sent % len(wires)], address)
            sent += 1

    def drain_answers() -> int:
        got = 0
        for c in clients:
            while True:
                try:
                    c.recv(65536)
                except BlockingIOError:
                    break
                got += 1
        return got

    for _ in range(len(wires) // BURST):  # warm-up: every query once, caches filled
        burst()
        for _ in range(4):
            reader.drain()
        drain_answers()
    gc.collect()
    gc.freeze()
    costs = []
    for _ in range(args.bursts):
        burst()
        began = time.process_time()
        for _ in range(4):  # 4 wake-ups x 16 batches x 64 datagrams > BURST
            reader.drain()
        costs.append((time.process_time() - began) / BURST * 1e6)
        if drain_answers() != BURST:
            sys.exit(f"lost answers (counters: {stats.as_dict()})")
    costs.sort()
    print(f"{'null answer' if args.null else Path(args.queries).name}: "
          f"median {statistics.median(costs):.2f} us/query, "
          f"quartiles {costs[len(costs) // 4]:.2f}-{costs[3 * len(costs) // 4]:.2f}, "
          f"{args.bursts} bursts of {BURST}")


if __name__ == "__main__":
    main()
