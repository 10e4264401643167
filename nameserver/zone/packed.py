"""Delegations kept packed: one bytes object per delegation from the apex instead of a
subtree of Python objects.

A TLD is almost nothing but delegations: a million children of the apex, each an NS
RRset, perhaps a signed DS RRset and a few glue addresses below it. As a subtree of
:class:`~nameserver.zone.tree.Node`, dicts, RRsets and names, one costs ~1 KB of
containers, and every query that reads it writes the reference counts of ~10
objects, so each process forked from the loaded snapshot ends up with its own copy
of every page it read. Packed, it is one :mod:`marshal` string of its runs
(:mod:`nameserver.zone.runs`: plain tuples of bytes and ints) in
:attr:`~nameserver.zone.tree.Zone.packed`, made by the reader as it streams and
never turned into objects while loading; the server unpacks one into a short-lived
subtree when the general path needs it (:func:`nameserver.zone.load.unpack`), and
the fast path answers referrals by the name of the cut alone.

Only delegations the checks have nothing to say about are packed (:class:`Grouper`),
so that loading still reports every problem with its line: a cut with NS (and DS
and RRSIG) alone, glue with A and AAAA alone and named by the cut's own NS RRset.
What the checks need of the packed ones is put beside each (:data:`Packed`): the
name servers named elsewhere in the zone, and for DNSSEC a summary; the loader
reads the file again without packing if that summary shows a problem, or if the
zone needs every name (a ZONEMD, a DNAME at the apex).
"""

from __future__ import annotations

import marshal
import struct

import dns.rdatatype

from nameserver.wire import label_boundary

NS = dns.rdatatype.NS
DS = dns.rdatatype.DS
RRSIG = dns.rdatatype.RRSIG
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA

# A delegation is packed when its group has at most this many runs (the cut and its
# glue owners): unpacking costs a few microseconds per name.
MAX_RUNS = 16
_AT_CUT = frozenset({NS, DS, RRSIG})
_GLUE = frozenset({A, AAAA})
_TIMES = struct.Struct("!II")  # RRSIG expiration, inception (after length, 8 bytes)
_MARSHAL_VERSION = 4
# Packed delegations are kept end to end in one bytes object, each found by its
# place: offset << 16 | length (see :func:`place`). Bigger ones stay unpacked.
MAX_BYTES = 0xFFFF

# A packed delegation in a batch of runs, told from a run by its None:
# (None, label, marshal of the group's runs, records, earliest RRSIG expiration,
#  latest RRSIG inception, algorithms of the RRSIGs over DS, keys of the name
#  servers named in the zone but not below the cut) with None for the times if it
# has no RRSIG and for the algorithms if it has no DS.
Packed = tuple


class Grouper:
    """Takes the runs of a zone in file order and puts out each delegation from the
    apex whose runs come together (a signed file is in canonical order: the cut,
    then its glue) as one :data:`Packed` item when it may be packed, the runs as
    they came otherwise."""

    def __init__(self, origin_key: bytes):
        self.origin_key = origin_key
        self.olen = len(origin_key)
        self.runs: list[tuple] = []  # of the group being gathered, the cut first
        self.cut_key = b""
        self.glue: list[bytes] = []  # owner keys of the runs below the cut
        self.simple = False

    def add(self, key: bytes, run: tuple, out: list) -> None:
        """Take the run of the owner ``key`` (lowercased wire); put into ``out`` what
        is done with."""
        rest = len(key) - self.olen
        runs = self.runs
        if rest > 0 and key.endswith(self.origin_key):
            first = key[0] + 1
            if first == rest:  # a child of the apex: a new group
                if runs:
                    self.close(out)
                self.runs = [run]
                self.cut_key = key
                self.glue = []
                self.simple = key[1:first] != b"*" and _cut_only(run)
                return
            cut_key = self.cut_key
            if runs and key.endswith(cut_key) and label_boundary(key, len(key) - len(cut_key)):
                runs.append(run)
                if self.simple:
                    self.glue.append(key)
                    self.simple = len(runs) <= MAX_RUNS and _glue_only(run)
                return
        if runs:
            self.close(out)
        out.append(run)

    def close(self, out: list) -> None:
        """Put out the group gathered so far."""
        runs = self.runs
        self.runs = []
        if runs:
            packed = self._packed(runs) if self.simple else None
            if packed is None:
                out.extend(runs)
            else:
                out.append(packed)

    def _packed(self, runs: list[tuple]) -> Packed | None:
        cut = runs[0]
        names: set[bytes] = set()
        sigs: tuple = ()
        has_ds = False
        count = 0
        for i in range(1, len(cut), 6):
            rdtype = cut[i]
            if rdtype == NS:
                names = {w.lower() for w in cut[i + 4]}
            elif rdtype == RRSIG:
                sigs = cut[i + 4]
            else:
                has_ds = True
            count += len(cut[i + 4])
        glue = set(self.glue)
        if len(glue) != len(self.glue) or not glue <= names:
            return None  # an owner twice, or an address that is not glue
        origin_key = self.origin_key
        olen = self.olen
        # The name servers elsewhere in the zone, for the whole-zone check of glue.
        elsewhere = tuple(
            key for key in names - glue
            if key.endswith(origin_key) and label_boundary(key, len(key) - olen)
        )
        for run in runs[1:]:
            for i in range(5, len(run), 6):
                count += len(run[i])
        expires = incepted = None
        algorithms: set[int] | None = set() if has_ds else None
        for rd in sigs:
            expiration, inception = _TIMES.unpack_from(rd, 10)
            if expires is None or expiration < expires:
                expires = expiration
            if incepted is None or inception > incepted:
                incepted = inception
            if algorithms is not None and rd[2] << 8 | rd[3] == DS:
                algorithms.add(rd[4])
        return (
            None,
            self.cut_key[1 : self.cut_key[0] + 1],
            marshal.dumps(tuple(runs), _MARSHAL_VERSION),
            count,
            expires,
            incepted,
            None if algorithms is None else tuple(sorted(algorithms)),
            elsewhere,
        )


def _cut_only(run: tuple) -> bool:
    types = run[1::6]
    return NS in types and all(t in _AT_CUT for t in types)


def _glue_only(run: tuple) -> bool:
    return all(t in _GLUE for t in run[1::6])


def runs_of(data: bytes) -> tuple:
    """The runs of a packed delegation."""
    return marshal.loads(data)


def place(offset: int, data: bytes) -> int:
    """Where ``data``, put at ``offset`` of the table's bytes, is to be found."""
    return offset << 16 | len(data)


def data_at(blob: bytes | bytearray, where: int) -> bytes:
    """The packed delegation at ``where`` (:func:`place`) in ``blob``."""
    offset = where >> 16
    return bytes(blob[offset : offset + (where & 0xFFFF)])
