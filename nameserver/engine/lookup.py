"""The authoritative lookup of RFC 1034 §4.3.2, with RFC 4592 wildcards, RFC 6672
DNAME, RFC 2308 negative answers, RFC 8482 minimal ANY and, for DNSSEC-signed
zones queried with DO, the RRSIGs and denial proofs of RFC 4035 and RFC 5155.

``lookup`` walks the name tree of one zone and says *what* to answer, as lists of
prepared RRsets; :mod:`nameserver.engine.render` turns that into bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from nameserver.engine import denial
from nameserver.wire import WireName
from nameserver.zone.tree import AAAA, CNAME, DS, MX, NS, NSEC, RRSIG, SRV, A, Node, RRset, Zone

ANY = 255
NOERROR, NXDOMAIN, YXDOMAIN = 0, 3, 6
MAX_CHAIN = 16  # CNAME/DNAME links followed inside one answer
_ADDITIONAL_FOR = frozenset({NS, MX, SRV})


class Answer:
    """What to put in each section. ``required`` counts the leading additional RRsets
    that must fit or set TC (in-domain glue of a referral, RFC 9471).

    ``anchor`` is set for answers that depend on the question only through one of its
    ancestors (a referral: the zone cut; NXDOMAIN: the zone's origin): the renderer
    then compresses against the question from that name up only, so the bytes after
    the question are the same for every question of that length, and the engine
    can reuse them (see :meth:`nameserver.engine.core.Engine.handle`).
    """

    __slots__ = ("rcode", "aa", "answer", "authority", "additional", "required", "anchor")

    def __init__(self) -> None:
        self.rcode = NOERROR
        self.aa = True
        self.answer: list[RRset] = []
        self.authority: list[RRset] = []
        self.additional: list[RRset] = []
        self.required = 0
        self.anchor: bytes | None = None


def lookup(zone: Zone, qname: WireName, qtype: int, do: bool = False) -> Answer:
    """Answer ``qname``/``qtype`` (class IN) from ``zone``, which contains ``qname``.

    ``do`` is the DNSSEC OK bit: with it, in a signed zone, referrals carry the DS
    RRset (or the proof of its absence) and negative and wildcard answers carry their
    NSEC3 or NSEC proofs. An unsigned zone answers DO queries as it answers others.
    (RRSIGs are attached to every RRset; the renderer writes them when ``do``.)
    """
    return _Lookup(zone, qtype, do).run(qname)


class _Lookup:
    __slots__ = ("zone", "qtype", "do", "proofs", "ans")

    def __init__(self, zone: Zone, qtype: int, do: bool):
        self.zone = zone
        self.qtype = qtype
        self.do = do
        self.proofs = do and denial.is_signed(zone)
        self.ans = Answer()

    def run(self, qname: WireName) -> Answer:
        seen: set[bytes] = set()
        name: WireName | None = qname
        zone = self.zone
        while name is not None:
            seen.add(name.key)
            name = self.step(name)
            if name is not None and (
                name.key in seen or len(seen) >= MAX_CHAIN or not zone.contains(name.key)
            ):
                break  # loop, overlong chain, or target outside the zone: the resolver goes on
        return self.ans

    def step(self, name: WireName) -> WireName | None:
        """Process one name of a chain; return the next name to follow, if any."""
        zone = self.zone
        labels = zone.relative_labels(name.key)
        node = zone.apex
        last = len(labels) - 1
        if node.dname is not None and labels:
            return self.dname(node, name)
        for depth, label in enumerate(labels):
            child = zone.child(node, label)
            if child is None:
                return self.no_such_name(node, name)
            node = child
            if node.cut and not (depth == last and self.qtype == DS):
                self.referral(node)
                return None
            if node.dname is not None and depth < last:
                return self.dname(node, name)
        return self.at_node(node, name, None)

    def at_node(self, node: Node, name: WireName, encloser: Node | None) -> WireName | None:
        """Answer from the data at ``node``: the name itself, or (``encloser`` given) the
        wildcard child of the closest encloser that matched ``name``."""
        rrsets = node.rrsets
        ans = self.ans
        qtype = self.qtype
        if node.cut:  # only reached for DS, which the parent holds (RFC 4034 §5)
            ds = rrsets.get(DS)
            if ds is not None:
                ans.answer.append(ds)
            else:
                self.negative(NOERROR, denial.nodata, node.name.key)
            return None
        if qtype == RRSIG:
            # The signatures at the name, each set with the TTL of the RRset it covers
            # (RFC 4034 §3), CNAME or not: RRSIG may sit beside a CNAME (RFC 4035 §2.5).
            sigs = [r.sigs for t, r in rrsets.items() if r.sigs is not None and t != RRSIG]
            if sigs:
                for i, sig in enumerate(sigs):
                    self.positive(sig, name, encloser, prove=i == 0)
                return None
        cname = rrsets.get(CNAME)
        if cname is not None and qtype != CNAME and not (qtype == NSEC and NSEC in rrsets):
            self.positive(cname, name, encloser)
            # ANY is answered minimally (RFC 8482): the CNAME alone, its target not chased.
            return cname.targets[0] if qtype != ANY else None
        if qtype == ANY:
            # RFC 8482 §4.1: answer one RRset, the one of lowest type (as Knot does).
            types = [t for t in rrsets if t != RRSIG]  # signatures travel with their RRset
            rrset = rrsets[min(types)] if types else None
        else:
            rrset = rrsets.get(qtype)
        if rrset is not None:
            self.positive(rrset, name, encloser)
            self.additional(rrset)
        elif encloser is not None:
            self.negative(NOERROR, denial.wildcard_nodata, name.key, encloser.name.key)
        else:
            self.negative(NOERROR, denial.nodata, name.key)
        return None

    def positive(
        self, rrset: RRset, name: WireName, encloser: Node | None, prove: bool = True
    ) -> None:
        if encloser is None:
            self.ans.answer.append(rrset)
            return
        self.ans.answer.append(rrset.with_owner(name))  # RFC 4592 §3.3.1
        if self.proofs and prove:
            self.ans.authority.extend(
                denial.wildcard_answer(self.zone, name.key, encloser.name.key)
            )

    def no_such_name(self, encloser: Node, name: WireName) -> None:
        """``encloser`` is the closest encloser: synthesise from its wildcard or deny."""
        wildcard = encloser.wildcard
        if wildcard is not None:
            return self.at_node(wildcard, name, encloser)
        if not self.ans.answer:
            self.ans.anchor = self.zone.origin.key
        self.negative(NXDOMAIN, denial.nxdomain, name.key, encloser.name.key)
        return None

    def negative(self, rcode: int, proof: Callable[..., list[RRset]], *names: bytes) -> None:
        """NXDOMAIN or NODATA: the SOA at the negative TTL (RFC 2308 §3), and the proof."""
        ans = self.ans
        ans.rcode = rcode
        ans.authority.append(self.zone.negative_soa)
        if self.proofs:
            ans.authority.extend(proof(self.zone, *names))

    def referral(self, cut: Node) -> None:
        """Delegation: NS, then DS or the proof of its absence when DO (RFC 4035 §3.1.4),
        in authority; glue in additional; not authoritative."""
        ans = self.ans
        if not ans.answer:
            ans.aa = False
            ans.anchor = cut.name.key
        ns = cut.rrsets[NS]
        ans.authority.append(ns)
        if self.proofs:  # a signed zone and DO: the DS, or the proof there is none
            ds = cut.rrsets.get(DS)
            if ds is not None:
                ans.authority.append(ds)
            else:
                ans.authority.extend(denial.insecure_referral(self.zone, cut.name.key))
        required: list[RRset] = []
        optional: list[RRset] = []
        for target in ns.targets:
            in_domain = target.key.endswith(cut.name.key)
            for rrset in self.addresses(target):
                (required if in_domain else optional).append(rrset)
        ans.additional = required + optional + ans.additional
        ans.required = len(required)

    def additional(self, rrset: RRset) -> None:
        """RFC 1034 §3.7 additional processing: addresses of NS, MX and SRV targets."""
        if rrset.rdtype in _ADDITIONAL_FOR:
            for target in rrset.targets:
                self.ans.additional.extend(self.addresses(target))

    def addresses(self, target: WireName) -> list[RRset]:
        """A and AAAA RRsets of ``target`` if the zone holds it (glue included)."""
        node = self.zone.find(target.key)
        if node is None:
            return []
        return [r for t in (A, AAAA) if (r := node.rrsets.get(t)) is not None]

    def dname(self, node: Node, name: WireName) -> WireName | None:
        """RFC 6672 §2.2: answer the DNAME and a CNAME synthesised from it."""
        dname = node.dname
        assert dname is not None
        ans = self.ans
        ans.answer.append(dname)
        prefix = name.key[: len(name.key) - len(node.name.key)]
        target = prefix + dname.targets[0].wire
        if len(target) > 255:
            ans.rcode = YXDOMAIN
            return None
        target_name = WireName(target)
        ans.answer.append(RRset(name, CNAME, dname.ttl, ((target_name,),), (target_name,)))
        # A CNAME query is answered by the (synthesised) CNAME itself, as for a real one.
        return target_name if self.qtype != CNAME else None
