"""The immutable zone snapshot: a tree of labels holding RRsets prepared in wire form.

A snapshot is built once by :mod:`nameserver.zone.load` and never changed; a reload
builds a new one beside it. Everything the query path needs is precomputed here:
owner names and RDATA as wire bytes, the names that RDATA refers to (for
additional-section processing and CNAME chains), and the flags of each node (zone
cut, DNAME, wildcard child).
"""

from __future__ import annotations

import struct
from types import MappingProxyType
from typing import TYPE_CHECKING

import dns.name
import dns.rdata
import dns.rdatatype

from nameserver.wire import WireName, label_boundary
from nameserver.zone.packed import data_at

if TYPE_CHECKING:
    from nameserver.zone.denial import Nsec3Chain, NsecChain

NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
SOA = dns.rdatatype.SOA
MX = dns.rdatatype.MX
PTR = dns.rdatatype.PTR
DNAME = dns.rdatatype.DNAME
SRV = dns.rdatatype.SRV
DS = dns.rdatatype.DS
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
RRSIG = dns.rdatatype.RRSIG
NSEC = dns.rdatatype.NSEC
NSEC3 = dns.rdatatype.NSEC3
NSEC3PARAM = dns.rdatatype.NSEC3PARAM

_RR_FIXED = struct.Struct("!HHI")  # type, class, ttl
IN = 1

# The fixed header bytes of every (type, TTL) seen: one bytes object shared by all the
# RRsets of a kind (a TLD has millions of NS RRsets and a handful of TTLs).
_FIXED: dict[int, bytes] = {}


def fixed_header(rdtype: int, ttl: int) -> bytes:
    """TYPE, CLASS (IN) and TTL of a resource record, packed (shared objects)."""
    k = rdtype << 32 | ttl
    fixed = _FIXED.get(k)
    if fixed is None:
        fixed = _FIXED[k] = _RR_FIXED.pack(rdtype, IN, ttl)
    return fixed


# The children of a leaf: one shared, read-only empty mapping (most nodes of a TLD
# are leaves). The loader gives a node its own dict when it adds the first child.
NO_CHILDREN: MappingProxyType[bytes, Node] = MappingProxyType({})

# RDATA is one piece of bytes, or a tuple of bytes and names that may be compressed
# (RFC 3597 §4: only the RFC 1035 types NS, CNAME, SOA, MX and PTR).
RdataParts = bytes | tuple[bytes | WireName, ...]


def _rdata_parts(rdata: dns.rdata.Rdata) -> RdataParts:
    t = rdata.rdtype
    if t in (NS, CNAME, PTR):
        return (WireName.from_name(rdata.target),)  # type: ignore[attr-defined]
    if t == MX:
        pref = rdata.preference.to_bytes(2, "big")  # type: ignore[attr-defined]
        return (pref, WireName.from_name(rdata.exchange))  # type: ignore[attr-defined]
    if t == SOA:
        tail = struct.pack(
            "!IIIII",
            rdata.serial,
            rdata.refresh,
            rdata.retry,
            rdata.expire,
            rdata.minimum,  # type: ignore[attr-defined]
        )
        return (
            WireName.from_name(rdata.mname),  # type: ignore[attr-defined]
            WireName.from_name(rdata.rname),  # type: ignore[attr-defined]
            tail,
        )
    wire = rdata.to_wire()
    return len(wire).to_bytes(2, "big") + wire


def _target(rdata: dns.rdata.Rdata) -> dns.name.Name | None:
    t = rdata.rdtype
    if t in (NS, CNAME, DNAME, PTR):
        return rdata.target  # type: ignore[attr-defined]
    if t == MX:
        return rdata.exchange  # type: ignore[attr-defined]
    if t == SRV:
        return rdata.target  # type: ignore[attr-defined]
    return None


class RRset:
    """An RRset ready to render: owner, fixed header bytes and RDATA in wire form."""

    __slots__ = ("owner", "rdtype", "ttl", "fixed", "rdatas", "targets", "sigs")

    def __init__(
        self,
        owner: WireName,
        rdtype: int,
        ttl: int,
        rdatas: tuple[RdataParts, ...],
        targets: tuple[WireName, ...] = (),
        sigs: RRset | None = None,
    ):
        self.owner = owner
        self.rdtype = rdtype
        self.ttl = ttl
        self.fixed = fixed_header(rdtype, ttl)
        self.rdatas = rdatas
        self.targets = targets
        self.sigs = sigs

    @classmethod
    def from_rdatas(
        cls, owner: WireName, rdtype: int, ttl: int, rdatas: list[dns.rdata.Rdata]
    ) -> RRset:
        targets = []
        for rd in rdatas:
            target = _target(rd)
            if target is not None:
                targets.append(WireName.from_name(target))
        return cls(owner, rdtype, ttl, tuple(_rdata_parts(rd) for rd in rdatas), tuple(targets))

    def with_owner(self, owner: WireName) -> RRset:
        """The same data under another owner (wildcard synthesis, RFC 4592 §3.3.1)."""
        sigs = self.sigs.with_owner(owner) if self.sigs is not None else None
        return RRset(owner, self.rdtype, self.ttl, self.rdatas, self.targets, sigs)

    def with_ttl(self, ttl: int) -> RRset:
        """The same RRset served with another TTL, its signatures too (RFC 4035 §3.1.3)."""
        sigs = self.sigs.with_ttl(ttl) if self.sigs is not None else None
        return RRset(self.owner, self.rdtype, ttl, self.rdatas, self.targets, sigs)

    def __len__(self) -> int:
        return len(self.rdatas)

    def __repr__(self) -> str:
        return f"RRset({self.owner.to_name()} {dns.rdatatype.to_text(self.rdtype)} x{len(self)})"


class Node:
    """One owner name in the tree. ``children`` is keyed by lowercased label; a leaf
    shares the read-only :data:`NO_CHILDREN` (use :meth:`add_child` to add one)."""

    __slots__ = ("name", "children", "rrsets", "cut", "dname", "wildcard")

    def __init__(self, name: WireName):
        self.name = name
        self.children: dict[bytes, Node] = NO_CHILDREN  # type: ignore[assignment]
        self.rrsets: dict[int, RRset] = {}
        self.cut = False  # a delegation point (NS below the apex)
        self.dname: RRset | None = None
        self.wildcard: Node | None = None  # the child labelled '*', if any

    def add_child(self, label: bytes, child: Node) -> None:
        """Make ``child`` the child labelled ``label`` (lowercased)."""
        if self.children is NO_CHILDREN:
            self.children = {}
        self.children[label] = child
        if label == b"*":
            self.wildcard = child

    def __repr__(self) -> str:
        return f"Node({self.name.to_name()})"


class Zone:
    """An immutable snapshot of one zone, as served."""

    __slots__ = (
        "origin",
        "apex",
        "soa",
        "negative_soa",
        "serial",
        "source",
        "record_count",
        "nsec3",
        "nsec",
        "earliest_expiry",
        "packed",
        "packed_blob",
        "_unpacked",
        "_origin_name",
    )

    def __init__(self, origin: WireName, apex: Node, source: str, record_count: int):
        self.origin = origin
        self.apex = apex
        self.soa: RRset = apex.rrsets[SOA]
        tail = self.soa.rdatas[0][2]  # serial, refresh, retry, expire, minimum
        assert isinstance(tail, bytes)
        self.serial: int = int.from_bytes(tail[0:4], "big")
        minimum = int.from_bytes(tail[16:20], "big")
        # RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its MINIMUM.
        self.negative_soa = self.soa.with_ttl(min(self.soa.ttl, minimum))
        self.source = source
        self.record_count = record_count
        # Denial-of-existence indexes of a signed zone (nameserver.zone.denial).
        self.nsec3: Nsec3Chain | None = None
        self.nsec: NsecChain | None = None
        # The soonest RRSIG expiration (POSIX seconds) of a signed zone, for monitoring.
        self.earliest_expiry: int | None = None
        # Children of the apex kept packed (nameserver.zone.packed): the delegations of
        # a TLD, end to end in ``packed_blob`` (one object: reading one writes no
        # reference count but the blob's), their places by label. Not in
        # ``apex.children``; :meth:`child` finds both.
        self.packed: dict[bytes, int] = {}
        self.packed_blob = b""
        # The subtrees unpacked lately, for the queries that come again.
        self._unpacked: dict[bytes, Node] = {}
        self._origin_name: dns.name.Name | None = None

    def relative_labels(self, key: bytes) -> list[bytes]:
        """Labels of ``key`` below the origin, nearest the origin first."""
        labels = []
        end = len(key) - len(self.origin.key)
        i = 0
        while i < end:
            n = key[i]
            labels.append(key[i + 1 : i + 1 + n])
            i += n + 1
        labels.reverse()
        return labels

    def find(self, key: bytes) -> Node | None:
        """The node named exactly ``key`` (lowercased wire), below cuts too, or None."""
        if not self.contains(key):
            return None
        node: Node | None = self.apex
        for label in self.relative_labels(key):
            node = self.child(node, label)  # type: ignore[arg-type]
            if node is None:
                return None
        return node

    def child(self, node: Node, label: bytes) -> Node | None:
        """The child of ``node`` labelled ``label`` (lowercased), packed or not."""
        child = node.children.get(label)
        if child is None and node is self.apex:
            where = self.packed.get(label)
            if where is not None:
                return self._unpack(label, where)
        return child

    def children(self, node: Node) -> list[tuple[bytes, Node]]:
        """Every child of ``node``, the packed ones unpacked (for tests and tools)."""
        items = list(node.children.items())
        if node is self.apex:
            items += [(label, self._unpack(label, where)) for label, where in self.packed.items()]
        return items

    def _unpack(self, label: bytes, where: int) -> Node:
        memo = self._unpacked
        node = memo.get(label)
        if node is None:
            from nameserver.zone.load import unpack

            if self._origin_name is None:
                self._origin_name = self.origin.to_name()
            if len(memo) >= UNPACKED_MEMO:
                memo.clear()
            data = data_at(self.packed_blob, where)
            node = memo[label] = unpack(self._origin_name, self.source, data)
        return node

    def contains(self, key: bytes) -> bool:
        prefix = len(key) - len(self.origin.key)
        return key.endswith(self.origin.key) and (prefix == 0 or label_boundary(key, prefix))


# Subtrees kept unpacked per zone and process (~1 KB each): the delegations asked
# about most, where the fast path cannot answer (DS queries, first referrals).
UNPACKED_MEMO = 16384
