"""Writing signed zones: one record per line, absolute names, canonical order."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
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

# A label (of a key: no NUL) that dnspython prints as it is, without escapes.
_PLAIN_LABEL = re.compile(rb"[!#%&'*+,\-/0-9:<=>?A-Z\[\]^_`a-z{|}~]+")


def write_zone(
    records: Iterable[RRset] | Iterable[Any],
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> int:
    """Write a master file: one record per line, absolute names, tab-separated fields.

    *records* are RRsets in canonical order, as :func:`sign_zone` returns them or
    :func:`sign_zone_iter` yields them (written as they come), or any reader-style
    records (name, ttl, rdtype, rdata), which are sorted into canonical order first.
    The file starts with ``$ORIGIN <apex>`` when the first name holds the SOA (names
    stay absolute; it only tells tools the zone's name). The file is replaced
    atomically. Returns the record count. Progress is reported for a list only.
    """
    path = Path(path)
    items: Iterator[Any] = iter(records)
    first = next(items, None)
    total = len(records) if isinstance(records, list) else 0
    if first is not None and not isinstance(first, RRset):
        ordered = _sorted_rrsets(itertools.chain((first,), items))
        total = len(ordered)
        items = iter(ordered)
        first = next(items, None)
    # The first owner's RRsets, to see whether it holds the SOA.
    head = [] if first is None else [first]
    for rs in items:
        head.append(rs)
        if rs.key != first.key:  # type: ignore[union-attr]
            break
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    count = done = 0
    # Owners one label below the first name (a TLD's delegations, NSEC3 owners) are
    # written without taking their key apart.
    base = b"" if first is None else first.key
    suffix = "." + key_to_text(base) if base else "."
    plain = _PLAIN_LABEL.fullmatch
    cut = len(base)
    tails: dict[int, str] = {}  # "\tTTL\tIN\tTYPE\t" by TTL and type
    stream = itertools.chain(head, items)
    last_key = None
    owner = ""
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            if first is not None and any(r.key == first.key and r.rdtype == SOA for r in head):
                f.write(f"$ORIGIN {key_to_text(first.key)}\n")
            while chunk := list(itertools.islice(stream, 2048)):
                lines: list[str] = []
                append = lines.append
                for rs in chunk:
                    key = rs.key
                    if key is not last_key:  # an owner's RRsets share their key
                        last_key = key
                        label = key[cut:-1]
                        if key.startswith(base) and plain(label) is not None:
                            owner = label.decode("ascii") + suffix
                        else:
                            owner = key_to_text(key)
                    tail = tails.get(kind := rs.ttl << 16 | rs.rdtype)
                    if tail is None:
                        tail = tails[kind] = f"\t{rs.ttl}\tIN\t{_type_text(rs.rdtype)}\t"
                    rd = rs._rd
                    if type(rd) is str:
                        append(f"{owner}{tail}{rd}\n")
                        count += 1
                    else:  # one string for the RRset's lines
                        prefix = owner + tail
                        append(prefix + f"\n{prefix}".join(rd) + "\n")
                        count += len(rd)
                f.write("".join(lines))
                done += len(chunk)
                if progress is not None and total:
                    progress("writing", done, total)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _sorted_rrsets(records: Iterable[Any]) -> list[RRset]:
    """Reader records as RRsets in canonical order."""
    zone = ZoneData.from_records(records, dns.name.root)
    out: list[RRset] = []
    for key in sorted(zone.nodes):
        node = sorted(zone.node(key), key=_output_order)
        for rs in node:
            _normalize(rs)
        out.extend(node)
    return out
