"""Several query mixes on one engine in interleaved rounds, as ``run.py`` puts them to
one server: does one mix's cost grow once the others have filled the caches? CPU
seconds per query of ``Engine.handle``, no socket. Used for benchmarks/RESULTS.md.

    python benchmarks/engine_mix.py ZONE TLD_QUERIES RANDOM_QUERIES [--rounds 3]
        [--per 1200000] [--entries N]

Mixes: tld-do, random-do, tld (no EDNS) and tld-do-tcp, each ``--per`` queries a
round from its file, continuing where the previous round stopped (dnsperf's cycle).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine_flood import query_wires  # noqa: E402  (this script's directory is on sys.path)

from nameserver.engine.core import DEFAULT_CACHE_ENTRIES, Engine  # noqa: E402
from nameserver.zone.load import load_zone  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zone")
    ap.add_argument("tld", help="TLD mix query file (genqueries.py)")
    ap.add_argument("random", help="random-subdomain query file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per", type=int, default=1_200_000, help="queries per mix and round")
    ap.add_argument("--entries", type=int, default=DEFAULT_CACHE_ENTRIES)
    args = ap.parse_args()
    zone = load_zone(args.zone, "coop.").zone
    tld_do = query_wires(args.tld, 1_000_000)
    mixes = {
        "tld-do": (tld_do, False),
        "random-do": (query_wires(args.random, 1_000_000), False),
        "tld": (query_wires(args.tld, 1_000_000, do=False), False),
        "tld-do-tcp": (tld_do, True),
    }
    gc.collect()
    gc.freeze()
    engine = Engine([zone], cache_entries=args.entries)
    where = dict.fromkeys(mixes, 0)
    for r in range(args.rounds):
        costs = []
        for mix, (queries, over_tcp) in mixes.items():
            n, at, handle = len(queries), where[mix], engine.handle
            began = time.process_time()
            for j in range(args.per):
                handle(queries[(at + j) % n], over_tcp)
            spent = time.process_time() - began
            where[mix] = (at + args.per) % n
            costs.append(f"{mix} {spent / args.per * 1e6:.2f}")
        print(f"round {r + 1} (us/query): " + "  ".join(costs)
              + f" | entries: question {len(engine.cache)} shapes {len(engine.shapes)}"
              f" raw {len(engine.raw_udp)}/{len(engine.raw_tcp)}", flush=True)


if __name__ == "__main__":
    main()
