"""The zone as gathered by the loader, before it is checked and compiled.

Records are gathered straight into the label tree of :class:`~nameserver.zone.tree.Node`
that will be served: while loading, each node's ``rrsets`` maps a type to a
:class:`SetData` (the RDATA in prepared wire form plus where the RRset was first
stated), and :class:`Gathered` lists the owners in the order the file first names
them, which is the order every check reports problems in. The checks
(:mod:`nameserver.zone.load`, :mod:`nameserver.dnssec.verify`,
:mod:`nameserver.dnssec.zonemd`) read this; compiling turns each ``SetData`` into a
:class:`~nameserver.zone.tree.RRset` in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from nameserver.wire import WireName
from nameserver.zone.packed import data_at, runs_of
from nameserver.zone.reader import Where
from nameserver.zone.tree import Node, RdataParts, RRset, fixed_header

IN = dns.rdataclass.IN
NS = dns.rdatatype.NS
RRSIG = dns.rdatatype.RRSIG
DNAME = dns.rdatatype.DNAME
ZONEMD = dns.rdatatype.ZONEMD

# Types whose DNSSEC canonical RDATA (RFC 4034 §6.2, as dnspython's to_digestable) is
# their wire form: no domain names inside.
_NAMELESS = frozenset(
    {
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
        dns.rdatatype.DS,
        dns.rdatatype.CDS,
        dns.rdatatype.DNSKEY,
        dns.rdatatype.CDNSKEY,
        dns.rdatatype.NSEC3,
        dns.rdatatype.NSEC3PARAM,
        dns.rdatatype.TXT,
        dns.rdatatype.CAA,
        dns.rdatatype.ZONEMD,
    }
)


class SetData(RRset):
    """The records of one (owner, type) gathered while reading.

    Made to become the served :class:`RRset` in place (:meth:`finish`), so that a
    zone of millions of RRsets is not held twice while it is compiled. Until then
    some slots hold what reading needs: ``owner`` the owner as the set's first record
    spells it (also :attr:`name`), ``fixed`` and ``sigs`` the line and the file of
    that record (:attr:`where`). ``rdatas`` is a tuple (a list once large) and
    ``targets`` holds the names the RDATA points at, except for NS (the names are
    the RDATA: see :meth:`target_names`).
    """

    __slots__ = ()

    def __init__(self, name: WireName, rdtype: int, ttl: int, file: str, line: int,
                 rdata: RdataParts, target: WireName | None):
        self.owner = name
        self.rdtype = rdtype
        self.ttl = ttl  # RFC 2181 §5.2: one TTL per RRset; like BIND, the first wins
        self.fixed = line  # type: ignore[assignment]
        self.sigs = file  # type: ignore[assignment]
        self.rdatas = (rdata,)
        self.targets = () if target is None or rdtype == NS else (target,)

    @property
    def name(self) -> WireName:
        return self.owner

    @property
    def where(self) -> Where:
        return Where(self.sigs, self.fixed)  # type: ignore[arg-type]

    def add(self, rdata: RdataParts, target: WireName | None) -> bool:
        """Add a record unless the set has it already (RFC 2181 §5: no duplicates,
        compared in canonical form as dnspython does); True if added."""
        rdatas = self.rdatas
        rdtype = self.rdtype
        if type(rdata) is bytes and rdtype in _NAMELESS:
            if rdata in rdatas:
                return False
        elif len(rdata) == 1 and type(rdata) is tuple:  # NS, CNAME, PTR: one name
            key = rdata[0].key  # type: ignore[union-attr]
            for other in rdatas:
                if other is rdata or other[0].key == key:  # type: ignore[index,union-attr]
                    return False
        else:
            mine = canonical(rdtype, rdata)
            for other in rdatas:
                if canonical(rdtype, other) == mine:
                    return False
        if type(rdatas) is tuple:
            # Most RRsets have a few records: grow the tuple, a list past that.
            self.rdatas = rdatas + (rdata,) if len(rdatas) < 16 else [*rdatas, rdata]  # type: ignore[assignment]
        else:
            rdatas.append(rdata)  # type: ignore[attr-defined]
        if target is not None and rdtype != NS:
            targets = self.targets
            if type(targets) is tuple:
                self.targets = targets + (target,) if len(targets) < 16 else [*targets, target]  # type: ignore[assignment]
            else:
                targets.append(target)  # type: ignore[attr-defined]
        return True

    def target_names(self) -> tuple[WireName, ...]:
        if self.rdtype == NS:
            return tuple(p[0] for p in self.rdatas)  # type: ignore[misc]
        return tuple(self.targets)

    def to_rdatas(self) -> list[dns.rdata.Rdata]:
        """The records as dnspython objects (for the few RRsets validated)."""
        return [to_rdata(self.rdtype, p) for p in self.rdatas]

    def finish(self, owner: WireName, targets: tuple[WireName, ...] | None = None) -> RRset:
        """Become the served RRset of ``owner`` (this very object, now an RRset)."""
        self.owner = owner
        self.fixed = fixed_header(self.rdtype, self.ttl)
        self.sigs = None
        if type(self.rdatas) is not tuple:
            self.rdatas = tuple(self.rdatas)
        self.targets = targets if targets is not None else tuple(self.target_names())
        self.__class__ = RRset  # type: ignore[assignment]
        return self

    def __repr__(self) -> str:
        t = dns.rdatatype.to_text(self.rdtype)
        return f"SetData({self.name.to_name()} {t} x{len(self.rdatas)} at {self.where})"


def rdata_wire(parts: RdataParts) -> bytes:
    """The RDATA alone (no length), names uncompressed as spelled."""
    if type(parts) is bytes:
        return parts[2:]
    return b"".join(p if type(p) is bytes else p.wire for p in parts)  # type: ignore[union-attr]


def to_rdata(rdtype: int, parts: RdataParts) -> dns.rdata.Rdata:
    wire = rdata_wire(parts)
    return dns.rdata.from_wire(IN, rdtype, wire, 0, len(wire))


def _name_end(wire: bytes, at: int) -> int:
    while wire[at]:
        at += wire[at] + 1
    return at + 1


def canonical(rdtype: int, parts: RdataParts) -> bytes:
    """The DNSSEC canonical form of one RDATA (RFC 4034 §6.2): dnspython's
    ``to_digestable``, without building the object for the common types."""
    if type(parts) is not bytes:
        # NS, CNAME, PTR, MX, SOA: every name lowercased.
        return b"".join(p if type(p) is bytes else p.key for p in parts)  # type: ignore[union-attr]
    if rdtype in _NAMELESS:
        return parts[2:]
    if rdtype == RRSIG:
        end = _name_end(parts, 20)
        return parts[2:20] + parts[20:end].lower() + parts[end:]
    return to_rdata(rdtype, parts).to_digestable()


class Gathered:
    """The owners of a zone being loaded, in the order the file first names them."""

    def __init__(self, origin: dns.name.Name, apex: Node, path: str):
        self.origin = origin
        self.origin_wire = apex.name.wire
        self.origin_key = apex.name.key
        self.apex = apex
        self.path = path
        self.owners: list[Node] = []  # each node's rrsets: {type: SetData}
        self.outside: set[int] = set()  # id() of owners outside the zone (not in the tree)
        self.count = 0  # records, duplicates not counted
        # Delegations from the apex kept packed (nameserver.zone.packed), by label: not
        # in the tree nor among the owners. What the DNSSEC checks need of them:
        self.packed: dict[bytes, int] = {}  # their places in ``blob`` (packed.place)
        self.blob = bytearray()
        self.packed_ds: list[bytes] = []  # the labels of those with DS
        self.packed_algorithms: set[tuple[int, ...]] = set()  # of the RRSIGs over DS
        self.packed_expires: int | None = None  # the earliest RRSIG expiration
        self.packed_incepted: int | None = None  # the latest RRSIG inception
        # Name servers in the zone named by them (below another cut): the key, where
        # the first packed delegation to name it came among the owners, its label.
        self.packed_targets: dict[bytes, tuple[int, bytes]] = {}

    def __iter__(self) -> Iterator[Node]:
        return iter(self.owners)

    def in_zone(self, node: Node) -> bool:
        return id(node) not in self.outside

    def relative_labels(self, key: bytes) -> list[bytes] | None:
        """Labels of ``key`` below the origin, nearest the origin first; None outside."""
        origin_key = self.origin_key
        end = len(key) - len(origin_key)
        if end < 0 or not key.endswith(origin_key):
            return None
        labels = []
        i = 0
        while i < end:
            n = key[i]
            labels.append(key[i + 1 : i + 1 + n])
            i += n + 1
        if i != end:
            return None
        labels.reverse()
        return labels

    def find(self, key: bytes) -> Node | None:
        """The node named ``key``; below a packed delegation, a copy unpacked."""
        rest = len(key) - len(self.origin_key)
        if rest > 0 and key.endswith(self.origin_key):
            # Children and grandchildren of the apex without a list of labels.
            first = key[0] + 1
            if first == rest:
                node = self.apex.children.get(key[1:first])
                if node is not None or not self.packed:
                    return node
            elif first < rest and first + key[first] + 1 == rest:
                parent = self.apex.children.get(key[first + 1 : rest])
                if parent is not None:
                    return parent.children.get(key[1:first])
                if not self.packed:
                    return None
        labels = self.relative_labels(key)
        if labels is None:
            return None
        node: Node | None = self.apex
        for depth, label in enumerate(labels):
            node = node.children.get(label)  # type: ignore[union-attr]
            if node is None:
                if depth or label not in self.packed:
                    return None
                node = self.unpacked(label)
        return node

    def whole(self) -> bool:
        """Whether the zone needs every name as a node to be checked (ZONEMD) or
        served (a DNAME at the apex occludes all): nothing is to be packed."""
        apex = self.apex.rrsets
        return ZONEMD in apex or DNAME in apex

    def top_label(self, key: bytes) -> bytes | None:
        """The label of the child of the apex at or above ``key``, if in the zone."""
        end = len(key) - len(self.origin_key)
        if end <= 0 or not key.endswith(self.origin_key):
            return None
        i = 0
        while True:
            n = key[i] + 1
            if i + n >= end:
                return key[i + 1 : i + n] if i + n == end else None
            i += n

    def unpacked(self, label: bytes) -> Node:
        """The subtree of a packed delegation as gathered (the checks' view of it: a
        copy, not in the tree)."""
        from nameserver.zone.runs import Builder

        builder = Builder(self.origin, self.path)
        builder.add(list(runs_of(self.packed_data(label))))
        return builder.zone.apex.children[label]

    def packed_addresses(self, key: bytes) -> bool | None:
        """Whether the name ``key`` below a packed delegation has addresses (None if it
        is not below one)."""
        top = self.top_label(key)
        if top is None or top not in self.packed:
            return None
        # Packed, every name below the cut is glue with addresses alone.
        runs = runs_of(self.packed_data(top))
        return any(run[0].lower() == key and NS not in run[1::6] for run in runs)

    def packed_data(self, label: bytes) -> bytes:
        return data_at(self.blob, self.packed[label])

    def ancestors(self, node: Node) -> list[Node]:
        """The nodes above ``node`` (in the zone), the apex first; [] for the apex."""
        key = node.name.key
        rest = len(key) - len(self.origin_key)
        if rest > 0:
            # Children and grandchildren of the apex (glue) without a list of labels.
            first = key[0] + 1
            if first == rest:
                return [self.apex]
            if first < rest and first + key[first] + 1 == rest:
                parent = self.apex.children.get(key[first + 1 : rest])
                if parent is not None:
                    return [self.apex, parent]
        labels = self.relative_labels(key)
        path = []
        here = self.apex
        for label in (labels or [])[:-1]:
            path.append(here)
            here = here.children[label]
        if labels:
            path.append(here)
        return path

    def owner_name(self, node: Node) -> WireName:
        """The owner as its first record spells it."""
        return next(iter(node.rrsets.values())).name  # type: ignore[attr-defined]
