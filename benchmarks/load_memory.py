"""Load a zone in this process and print the time, what was packed, and the memory
(VmRSS, VmHWM); with ``--unpack N``, the mean cost of unpacking N random packed
delegations. Used for benchmarks/RESULTS.md.

    python benchmarks/load_memory.py ZONE [--origin coop.] [--unpack 3000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nameserver.zone.load import load_zone, unpack  # noqa: E402
from nameserver.zone.packed import data_at  # noqa: E402


def memory() -> str:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return " ".join(f"{k} {int(v.split()[0]) // 1024} MB" for k, v in fields.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("zone")
    parser.add_argument("--origin", default="coop.")
    parser.add_argument("--unpack", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    result = load_zone(args.zone, args.origin)
    zone = result.zone
    print(f"load {time.monotonic() - started:.1f} s; {len(zone.packed)} delegations packed "
          f"({len(zone.packed_blob) // 2**20} MB), {len(zone.apex.children)} children not; "
          f"{zone.record_count} records; {memory()}")
    if args.unpack and zone.packed:
        labels = random.Random(1).sample(list(zone.packed), min(args.unpack, len(zone.packed)))
        datas = [data_at(zone.packed_blob, zone.packed[label]) for label in labels]
        origin = zone.origin.to_name()
        started = time.perf_counter()
        for data in datas:
            unpack(origin, zone.source, data)
        print(f"unpack {(time.perf_counter() - started) / len(datas) * 1e6:.1f} µs each")


if __name__ == "__main__":
    main()
