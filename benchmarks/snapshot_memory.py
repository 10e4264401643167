"""What a loaded zone's snapshot is made of: bytes by kind of object, as
``sys.getsizeof`` counts them (without the 16-byte header of each object the cyclic
collector tracks), each object once. Used for benchmarks/RESULTS.md.

    python benchmarks/snapshot_memory.py ZONE [ORIGIN]
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nameserver.zone.load import load_zone  # noqa: E402
from nameserver.zone.tree import Node, RRset  # noqa: E402


class Tally:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.size: collections.Counter[str] = collections.Counter()
        self.count: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, obj: object) -> bool:
        """Count ``obj`` under ``kind`` unless counted already; True if new."""
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        self.size[kind] += sys.getsizeof(obj)
        self.count[kind] += 1
        return True

    def rrset(self, kind: str, rrset: RRset | None) -> None:
        if rrset is None or not self.add(f"{kind} RRset", rrset):
            return
        if self.add("WireName (RRset owner)", rrset.owner):
            self.add("name bytes", rrset.owner.wire)
            self.add("name bytes", rrset.owner.key)
        if self.add(f"{kind} rdatas tuple", rrset.rdatas):
            for part in rrset.rdatas:
                self.add(f"{kind} rdata", part)
        self.add(f"{kind} targets tuple", rrset.targets)
        self.rrset("RRSIG", rrset.sigs)

    def node(self, node: Node) -> list[Node]:
        self.add("Node", node)
        if self.add("WireName (node)", node.name):
            self.add("name bytes", node.name.wire)
            self.add("name bytes", node.name.key)
        if self.add("children dict", node.children):
            for label in node.children:
                self.add("label bytes", label)
        self.add("rrsets dict", node.rrsets)
        for rdtype, rrset in node.rrsets.items():
            self.rrset(dns.rdatatype.to_text(rdtype), rrset)
        return list(node.children.values())


def main() -> None:
    zone_path = sys.argv[1]
    origin = sys.argv[2] if len(sys.argv) > 2 else "coop."
    began = time.monotonic()
    zone = load_zone(zone_path, origin).zone
    status = Path("/proc/self/status").read_text()
    rss = int(status.split("VmRSS:")[1].split()[0]) // 1024
    print(f"loaded in {time.monotonic() - began:.1f} s; RSS {rss} MB")
    tally = Tally()
    stack = [zone.apex]
    nodes = 0
    while stack:
        stack.extend(tally.node(stack.pop()))
        nodes += 1
    chain = zone.nsec3
    if chain is not None:
        for kind, obj in (("NSEC3 index", chain.hashes), ("NSEC3 index", chain.rrsets),
                          ("NSEC3 index", chain.by_hash)):
            tally.add(kind, obj)
        for digest in chain.hashes:
            tally.add("NSEC3 hash bytes", digest)
        for rrset in chain.rrsets:
            tally.rrset("NSEC3", rrset)
    total = sum(tally.size.values())
    print(f"{nodes} nodes; counted {total / 1e6:.0f} MB "
          f"(+ ~16 bytes per tracked object: Node, dict, RRset, WireName, tuple)")
    print(f"{'kind':32s} {'MB':>8s} {'objects':>10s} {'bytes each':>10s}")
    for kind, size in tally.size.most_common(25):
        n = tally.count[kind]
        print(f"{kind:32s} {size / 1e6:8.1f} {n:10d} {size / n:10.0f}")


if __name__ == "__main__":
    main()
