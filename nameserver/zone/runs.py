"""Records gathered per owner in a flat form, and the label tree built from it.

Reading a zone is split in two halves that can run in two processes
(:mod:`nameserver.zone.forkread`): :func:`flat_batches` turns the records of the
reader into *runs*, one per stretch of records of one owner, made only of bytes,
ints, strings, tuples and None (cheap to hand over with :mod:`marshal`); the
:class:`Builder` gathers runs into the label tree of :class:`~nameserver.zone.tree.Node`
that will be served (:class:`~nameserver.zone.sets.Gathered`). A file read in one
process skips the runs: :func:`gather` takes the records straight into the tree,
with the same result.

A run is ``(owner wire, rdtype, ttl, file, line, rdatas, targets, rdtype, ...)``: six
fields per RRset of the stretch, in the order the file first states each type, with
the RRset's duplicates already dropped (:meth:`SetData.add`). In ``rdatas`` a name is
its wire bytes: the RDATA of NS, CNAME and PTR is the target's wire alone, MX is
``(preference, exchange)``, SOA ``(mname, rname, the five numbers)``; ``targets``
are the wires of :attr:`SetData.targets`.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable, Iterator

import dns.name
import dns.rdatatype

from nameserver.wire import WireName
from nameserver.zone.fastread import WireRecord
from nameserver.zone.packed import MAX_BYTES, MAX_RUNS, Grouper, Packed, place, runs_of
from nameserver.zone.sets import _NAMELESS, Gathered, SetData
from nameserver.zone.tree import Node

NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
PTR = dns.rdatatype.PTR
MX = dns.rdatatype.MX
SOA = dns.rdatatype.SOA
A = dns.rdatatype.A
_GLUE = frozenset({A, dns.rdatatype.AAAA})

# Types whose RDATA is a single name (a 1-tuple of the WireName once read).
_ONE_NAME = frozenset({NS, CNAME, PTR})
# Types whose flat RDATA the builder turns into what the tree holds (NS aside).
_NAMED = frozenset({CNAME, PTR, MX, SOA, A})
Run = tuple
RUNS_PER_BATCH = 2048


def flat_batches(
    records: Iterable[WireRecord], main_file: str, origin_key: bytes | None = None
) -> Iterator[list[Run]]:
    """The records as lists of runs (see the module docstring), the file None for
    ``main_file``; with ``origin_key`` (of the zone), the delegations that may be
    are packed (:class:`~nameserver.zone.packed.Grouper`)."""
    batch: list[Run] = []
    grouper = Grouper(origin_key) if origin_key is not None else None
    last: WireName | None = None
    # Per type: TTL, file and line of the first record, the RDATA and the targets.
    sets: dict[int, list] = {}
    for name, ttl, rdtype, parts, target, file, line in records:
        if name is not last:
            if last is not None:
                run = _flat(last, sets, main_file)
                if grouper is None:
                    batch.append(run)
                else:
                    grouper.add(last.key, run, batch)
                if len(batch) >= RUNS_PER_BATCH:
                    yield batch
                    batch = []
                sets = {}
            last = name
        s = sets.get(rdtype)
        if s is None:
            sets[rdtype] = [ttl, file, line, [parts], [target]]
        else:
            s[3].append(parts)
            s[4].append(target)
    if last is not None:
        run = _flat(last, sets, main_file)
        if grouper is None:
            batch.append(run)
        else:
            grouper.add(last.key, run, batch)
            grouper.close(batch)
    if batch:
        yield batch


def _flat(owner: WireName, sets: dict[int, list], main_file: str) -> Run:
    run: list = [owner.wire]
    for rdtype, (ttl, file, line, rdatas, targets) in sets.items():
        if file == main_file:
            file = None
        if len(rdatas) > 1 and _may_repeat(rdtype, rdatas):
            s = SetData(owner, rdtype, ttl, file, line, rdatas[0], targets[0])
            for i in range(1, len(rdatas)):
                s.add(rdatas[i], targets[i])
            rdatas, targets = s.rdatas, s.targets  # type: ignore[assignment]
        elif rdtype == NS or targets[0] is None:
            targets = ()  # type: ignore[assignment]
        if rdtype in _ONE_NAME:
            flat = tuple(p[0].wire for p in rdatas)
        elif rdtype == MX:
            flat = tuple((p[0], p[1].wire) for p in rdatas)
        elif rdtype == SOA:
            flat = tuple((p[0].wire, p[1].wire, p[2]) for p in rdatas)
        else:
            flat = tuple(rdatas)
        run += (int(rdtype), ttl, file, line, flat,  # int: no IntEnum for marshal
                tuple(t.wire for t in targets) if targets else ())
    return tuple(run)


def _may_repeat(rdtype: int, rdatas: list) -> bool:
    """Whether some records of a set may be the same (SetData.add decides), by a
    quick look: distinct bytes of a type without names, or distinct names of NS,
    CNAME or PTR (compared lowercased), are not."""
    if rdtype in _NAMELESS and type(rdatas[0]) is bytes:
        return len(set(rdatas)) != len(rdatas)
    if rdtype in _ONE_NAME:
        return len({p[0].key for p in rdatas}) != len(rdatas)
    return True


class Builder:
    """Gathers runs into the label tree, owners in the order the file first names
    them (the order every check reports problems in)."""

    def __init__(self, origin: dns.name.Name, path: str):
        self.zone = Gathered(origin, Node(WireName.from_name(origin)), path)
        self.path = path  # the file of runs that say None
        self.outside: dict[bytes, Node] = {}
        # One 1-tuple of a WireName per spelling of a name, for every RDATA and owner
        # that names it (glue owners are NS targets too).
        self.names: dict[bytes, tuple[WireName]] = {}
        # The RDATA of NS and A RRsets, shared by value: a TLD's delegations use the
        # same few name server sets over and over (and glue the same addresses).
        self.ns_sets: dict[tuple[bytes, ...], tuple] = {}
        self.a_sets: dict[tuple, tuple] = {}
        self.dropped: set[int] = set()  # id() of owners taken into packed delegations

    def add(self, batch: list[Run]) -> None:
        zone = self.zone
        owners = zone.owners
        names = self.names
        ns_sets = self.ns_sets
        packed = zone.packed
        path = self.path
        new = SetData.__new__
        count = 0
        for run in batch:
            wire = run[0]
            if wire is None:
                self._packed(run)
                continue
            hit = names.get(wire)
            name = hit[0] if hit is not None else WireName(wire)
            if packed:
                top = zone.top_label(name.key)
                if top is not None and top in packed:
                    self.unpack(top)  # a later stretch of a packed delegation
            node = owner_node(zone, name, self.outside)
            by_type: dict[int, SetData] = node.rrsets  # type: ignore[assignment]
            if not by_type:
                owners.append(node)
            for i in range(1, len(run), 6):
                rdtype = run[i]
                rdatas = run[i + 4]
                if rdtype == NS:
                    shared = ns_sets.get(rdatas)
                    rdatas = shared if shared is not None else self._ns(rdatas)
                elif rdtype in _NAMED:
                    rdatas = self._rdatas(rdtype, rdatas)
                targets = run[i + 5]
                if targets:
                    targets = tuple(self._name(t) for t in targets)
                s = by_type.get(rdtype)
                if s is None:
                    # A SetData of records gathered already, made inline (millions).
                    by_type[rdtype] = s = new(SetData)
                    s.owner = name
                    s.rdtype = rdtype
                    s.ttl = run[i + 1]
                    file = run[i + 2]
                    s.sigs = path if file is None else file
                    s.fixed = run[i + 3]  # the line
                    s.rdatas = rdatas
                    s.targets = targets
                    count += len(rdatas)
                else:
                    count += _merge(s, rdatas, targets)
        zone.count += count

    def _packed(self, item: Packed) -> None:
        """Keep a packed delegation as it is, and the facts the checks need of it."""
        _, label, data, count, expires, incepted, algorithms, elsewhere = item
        zone = self.zone
        if zone.whole():
            self.add(list(runs_of(data)))
            return
        if label in zone.packed:
            self.unpack(label)
        if label in zone.apex.children:  # read already, in another stretch
            folded = self._fold(label, data)
            if folded is None:
                self.add(list(runs_of(data)))
                return
            data, glue = folded
            elsewhere = tuple(key for key in elsewhere if key not in glue)
        if len(data) > MAX_BYTES:
            self.add(list(runs_of(data)))
            return
        zone.packed[label] = place(len(zone.blob), data)
        zone.blob += data
        zone.count += count
        if expires is not None:
            if zone.packed_expires is None or expires < zone.packed_expires:
                zone.packed_expires = expires
            if zone.packed_incepted is None or incepted > zone.packed_incepted:
                zone.packed_incepted = incepted
        if algorithms is not None:
            zone.packed_ds.append(label)
            zone.packed_algorithms.add(algorithms)
        for key in elsewhere:
            if key not in zone.packed_targets:
                zone.packed_targets[key] = (len(zone.owners), label)

    def _fold(self, label: bytes, data: bytes) -> tuple[bytes, set[bytes]] | None:
        """The packed delegation ``label`` with the glue read before it (BIND writes
        glue ahead of its cut) taken out of the tree into it, and the glue's names;
        None if what was read there is not glue of it alone."""
        zone = self.zone
        top = zone.apex.children[label]
        if top.rrsets:
            return None
        runs = runs_of(data)
        cut = runs[0]
        names = {w.lower() for i in range(1, len(cut), 6) if cut[i] == NS for w in cut[i + 4]}
        mine = {run[0].lower() for run in runs}
        glue: list[Node] = []
        stack = list(top.children.values())
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node.rrsets:
                key = node.name.key
                if not node.rrsets.keys() <= _GLUE or key not in names or key in mine:
                    return None
                glue.append(node)
        sets = [s for node in glue for s in node.rrsets.values()]
        if not glue or len(runs) + len(sets) > MAX_RUNS:
            return None
        sets.sort(key=lambda s: (s.sigs, s.fixed))  # type: ignore[attr-defined]
        path = self.path
        before = tuple(
            (s.name.wire, int(s.rdtype), s.ttl, None if s.sigs == path else s.sigs, s.fixed,  # type: ignore[attr-defined]
             tuple(s.rdatas), ())
            for s in sets
        )
        folded = marshal.dumps(before + runs, 4)
        if len(folded) > MAX_BYTES:
            return None
        del zone.apex.children[label]
        self.dropped.update(id(node) for node in glue)
        return folded, {node.name.key for node in glue}

    def finish(self) -> Gathered:
        """The zone gathered (the owners taken into packed delegations left out)."""
        zone = self.zone
        if self.dropped:
            dropped = self.dropped
            zone.owners = [node for node in zone.owners if id(node) not in dropped]
            self.dropped = set()
        return zone

    def unpack(self, label: bytes) -> None:
        """Take a packed delegation into the tree, as if it had never been packed."""
        runs = runs_of(self.zone.packed_data(label))
        del self.zone.packed[label]
        self.zone.count -= sum(len(run[i]) for run in runs for i in range(5, len(run), 6))
        self.add(list(runs))

    def _name(self, wire: bytes) -> WireName:
        return self._one_name(wire)[0]

    def _one_name(self, wire: bytes) -> tuple[WireName]:
        hit = self.names.get(wire)
        if hit is None:
            hit = self.names[wire] = (WireName(wire),)
        return hit

    def _ns(self, flat: tuple[bytes, ...]) -> tuple:
        shared = self.ns_sets[flat] = tuple(self._one_name(w) for w in flat)
        return shared

    def _rdatas(self, rdtype: int, flat: tuple) -> tuple:
        """The RDATA of a type with names in it (but NS), or A, as the tree holds it."""
        if rdtype == A:
            return self.a_sets.setdefault(flat, flat)
        if rdtype in _ONE_NAME:
            return tuple(self._one_name(w) for w in flat)
        if rdtype == MX:
            return tuple((p[0], self._name(p[1])) for p in flat)
        if rdtype == SOA:
            return tuple((self._name(p[0]), self._name(p[1]), p[2]) for p in flat)
        return flat


def _merge(s: SetData, rdatas: tuple, targets: tuple) -> int:
    """Add the records of a later stretch of the same owner; how many were new."""
    added = 0
    if len(targets) != len(rdatas):
        targets = (None,) * len(rdatas)
    for rdata, target in zip(rdatas, targets, strict=True):
        added += s.add(rdata, target)
    return added


def owner_node(zone: Gathered, name: WireName, outside: dict[bytes, Node]) -> Node:
    """The node of owner ``name``, made if new. Most owners of a TLD are children of
    the apex: one look-up."""
    key = name.key
    origin_key = zone.origin_key
    size = len(key) - len(origin_key)
    if size > 0 and key[0] + 1 == size and key.endswith(origin_key):
        label = key[1:size]
        apex = zone.apex
        node = apex.children.get(label)
        if node is None:
            # Named by the owner's label and the origin as load_zone has it.
            wire, origin_wire = name.wire, zone.origin_wire
            node = Node(name if wire.endswith(origin_wire) else WireName(wire[:size] + origin_wire))
            apex.add_child(label, node)
        return node
    if size == 0 and key == origin_key:
        return zone.apex
    return _node(zone, name, outside, zone.origin_wire)


def _node(zone: Gathered, name: WireName, outside: dict[bytes, Node], origin_wire: bytes
          ) -> Node:
    """The node of ``name``, made (with the empty non-terminals above it) if new."""
    key = name.key
    labels = zone.relative_labels(key)
    if labels is None:
        node = outside.get(key)
        if node is None:
            node = outside[key] = Node(name)
            zone.outside.add(id(node))
        return node
    wire = name.wire
    # A node is named by the labels of the first owner that needs it, and the origin
    # as load_zone was given it.
    rel = len(wire) - len(origin_wire)
    same_suffix = wire.endswith(origin_wire)
    node = zone.apex
    offsets = []
    i = 0
    while i < rel:
        offsets.append(i)
        i += wire[i] + 1
    for depth in range(len(labels)):
        label = labels[depth]
        child = node.children.get(label)
        if child is None:
            at = offsets[len(labels) - 1 - depth]
            if at == 0 and same_suffix:
                child_name = name
            elif same_suffix:
                child_name = WireName(wire[at:])
            else:
                child_name = WireName(wire[at:rel] + origin_wire)
            child = Node(child_name)
            node.add_child(label, child)
        node = child
    return node


def gather(records: Iterable[WireRecord], origin: dns.name.Name, path: str) -> Gathered:
    """The records gathered straight into the label tree, as :class:`Builder` gathers
    runs (for a file read in this process alone: no runs to make)."""
    zone = Gathered(origin, Node(WireName.from_name(origin)), path)
    owners = zone.owners
    outside: dict[bytes, Node] = {}
    # The RDATA of NS and A RRsets, shared by value: a TLD's delegations use the same
    # few name server sets over and over (and glue the same addresses).
    shared: dict[tuple, tuple] = {}
    last: WireName | None = None
    by_type: dict[int, SetData] = {}
    count = 0
    for name, ttl, rdtype, parts, target, file, line in records:
        if name is not last:
            # Done with the previous owner (most likely): share its RDATA now, so the
            # memory of the tuples let go is used again at once.
            for t in (NS, A):
                s = by_type.get(t)
                if s is not None and type(s.rdatas) is tuple:
                    s.rdatas = shared.setdefault(s.rdatas, s.rdatas)
            last = name
            node = owner_node(zone, name, outside)
            by_type = node.rrsets  # type: ignore[assignment]
            if not by_type:
                owners.append(node)
        s = by_type.get(rdtype)
        if s is None:
            by_type[rdtype] = SetData(name, rdtype, ttl, file, line, parts, target)
        elif not s.add(parts, target):
            continue
        count += 1
    for t in (NS, A):
        s = by_type.get(t)
        if s is not None and type(s.rdatas) is tuple:
            s.rdatas = shared.setdefault(s.rdatas, s.rdatas)
    zone.count = count
    return zone


def build(batches: Iterable[list[Run]], origin: dns.name.Name, path: str) -> Gathered:
    builder = Builder(origin, path)
    for batch in batches:
        builder.add(batch)
    return builder.finish()
