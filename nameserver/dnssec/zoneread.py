"""Reading master files into :class:`~nameserver.dnssec.zonedata.ZoneData`.

:func:`read_zone` reads with the serving loader's fast reader
(:func:`nameserver.zone.fastread.read_wire_records`: straight to wire form for the
usual types, dnspython for rare forms, every error as ``file:line: reason``), in this
process. Reading in worker processes was tried: on two cores the parent's share
(merging what the workers send back) made it slower than reading here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import dns.name

from nameserver.dnssec.zonedata import _NAME_TEXT, Progress, ZoneData, _gc_paused
from nameserver.zone.fastread import WireRecord, read_wire_records
from nameserver.zone.reader import ZoneSyntaxError

__all__ = ["read_zone"]


def read_zone(
    path: str | os.PathLike[str],
    origin: dns.name.Name | str,
    *,
    canon_all: bool = False,
    skip_delegation_ns: bool = False,
    progress: Progress | None = None,
) -> ZoneData:
    """Read a master file into :class:`ZoneData`.

    Canonical wire RDATA is kept for everything that may be signed, or for every
    record with *canon_all* (needed for ZONEMD); NS RRsets below the apex are left out
    with *skip_delegation_ns* (a previous version of the zone only lends its
    signatures). *progress* is called with ("reading", line, lines). Raises
    ZoneSyntaxError listing every problem.
    """
    origin = dns.name.from_text(origin) if isinstance(origin, str) else origin
    path = os.fspath(path)
    zone = ZoneData(origin)
    problems: list[str] = []
    records: Iterable[WireRecord] = read_wire_records(path, origin)
    if progress is not None:
        records = _line_progress(records, path, progress)
    with _gc_paused():
        zone.load(records, canon_all=canon_all, skip_delegation_ns=skip_delegation_ns,
                  problems=problems)
    _NAME_TEXT.clear()
    if problems:
        raise ZoneSyntaxError(problems)
    return zone


def _line_progress(records: Iterable[WireRecord], path: str, progress: Progress
                   ) -> Iterator[WireRecord]:
    with open(path, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    for n, rec in enumerate(records):
        if not n & 0xFFFF:
            progress("reading", rec[6], lines)
        yield rec
    progress("reading", lines, lines)
