"""Writing signed zones: one record per line, absolute names, canonical order."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dns.name

from nameserver.dnssec.nsec3 import key_to_text
from nameserver.dnssec.zonedata import (
    SOA,
    Progress,
    RRset,
    ZoneData,
    _normalize,
    _output_order,
    _type_text,
)

__all__ = ["write_zone"]


def write_zone(
    records: Iterable[RRset] | Iterable[Any],
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> int:
    """Write a master file: one record per line, absolute names, tab-separated fields.

    *records* is :func:`sign_zone`'s result (written in its order, which is canonical)
    or any reader-style records (name, ttl, rdtype, rdata), which are sorted into
    canonical order first. The file starts with ``$ORIGIN <apex>`` when the first name
    holds the SOA (names stay absolute; it only tells tools the zone's name). The file
    is replaced atomically. Returns the record count.
    """
    path = Path(path)
    items = records if isinstance(records, list) else list(records)
    if items and not isinstance(items[0], RRset):
        zone = ZoneData.from_records(items, dns.name.root)
        items = []
        for key in sorted(zone.nodes):
            node = sorted(zone.node(key), key=_output_order)
            for rs in node:
                _normalize(rs)
            items.extend(node)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    count = 0
    total = len(items)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            buf: list[str] = []
            if items:
                first = items[0].key
                head = itertools.takewhile(lambda r: r.key == first, items)
                if any(r.rdtype == SOA for r in head):
                    buf.append(f"$ORIGIN {key_to_text(first)}\n")
            last_key = None
            owner = ""
            for n, rs in enumerate(items, 1):
                if rs.key != last_key:
                    last_key = rs.key
                    owner = key_to_text(rs.key)
                prefix = f"{owner}\t{rs.ttl}\tIN\t{_type_text(rs.rdtype)}\t"
                rd = rs._rd
                if type(rd) is str:
                    buf.append(prefix + rd + "\n")
                    count += 1
                else:
                    buf += [prefix + text + "\n" for text in rd]
                    count += len(rd)
                if len(buf) >= 16384:
                    f.write("".join(buf))
                    buf.clear()
                    if progress is not None:
                        progress("writing", n, total)
            f.write("".join(buf))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if progress is not None:
        progress("writing", total, total)
    return count
