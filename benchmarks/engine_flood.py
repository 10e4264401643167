"""In-process cost of the engine on a big zone: a random-name flood and the TLD mix,
answered by ``Engine.handle`` with no socket (CPU seconds per query, in slices of
100k queries, so the warm-up of the caches shows). Used for benchmarks/RESULTS.md.

    python benchmarks/engine_flood.py ZONE QUERY_FILE [--queries N] [--no-templates]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nameserver.engine.core import Engine  # noqa: E402
from nameserver.zone.load import load_zone  # noqa: E402


def query_wires(path: str, limit: int, do: bool = True) -> list[bytes]:
    """The first ``limit`` queries of a query file (NAME TYPE per line) as wire, RD
    clear, IDs counting up; with ``do``, EDNS (1232 bytes) with DO set, else no EDNS."""
    wires = []
    with open(path) as lines:
        for i, line in enumerate(lines):
            if i >= limit:
                break
            name, qtype = line.split()
            q = dns.message.make_query(
                name, qtype, want_dnssec=do, use_edns=0 if do else None, payload=1232
            )
            q.flags, q.id = 0, i & 0xFFFF
            wires.append(q.to_wire())
    return wires


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zone")
    ap.add_argument("queries", help="query file: NAME TYPE per line (genqueries.py)")
    ap.add_argument("--queries", dest="count", type=int, default=600_000)
    ap.add_argument("--no-templates", action="store_true",
                    help="no templates: past a half-full cache, shapes take the general path")
    args = ap.parse_args()
    zone = load_zone(args.zone, "coop.").zone
    wires = query_wires(args.queries, args.count)
    gc.collect()
    gc.freeze()
    engine = Engine([zone])
    if args.no_templates:
        engine._from_template = lambda *a: None  # type: ignore[method-assign]
    for start in range(0, len(wires), 100_000):
        part = wires[start : start + 100_000]
        began = time.process_time()
        for wire in part:
            engine.handle(wire, False)
        spent = time.process_time() - began
        print(f"queries {start:>7}-{start + len(part):<7} {spent / len(part) * 1e6:6.2f} us/query"
              f"  cache {len(engine.cache)} shapes {len(engine.shapes)}", flush=True)


if __name__ == "__main__":
    main()
