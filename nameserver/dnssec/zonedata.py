"""The signer's data model: a zone as compact RRsets keyed by canonical-order owner.

A zone of a million delegations does not fit comfortably in dnspython objects, so the
signer works on :class:`RRset` objects that keep each RDATA twice, compactly: its
presentation text (what the output file says) and, where it is needed, its canonical
wire form (RFC 4034 §6.2, what signatures and ZONEMD cover). Owner names are *keys*
whose byte order is the canonical name order (see :mod:`nameserver.dnssec.nsec3`);
they are written out in lowercase, their canonical form.

Records come in the zone reader's wire form (:mod:`nameserver.zone.fastread`) and are
turned into text and canonical wire exactly as dnspython's ``to_text()`` and
``to_digestable()`` would, without building dnspython objects for the usual types.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import dns.ipv4
import dns.ipv6
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from nameserver.dnssec.nsec3 import key_of, key_of_wire, key_to_text
from nameserver.wire import WireName, label_list
from nameserver.zone.fastread import WireRecord
from nameserver.zone.reader import ZoneSyntaxError
from nameserver.zone.tree import _rdata_parts

A = int(dns.rdatatype.A)
AAAA = int(dns.rdatatype.AAAA)
NS = int(dns.rdatatype.NS)
SOA = int(dns.rdatatype.SOA)
DS = int(dns.rdatatype.DS)
RRSIG = int(dns.rdatatype.RRSIG)
NSEC = int(dns.rdatatype.NSEC)
DNSKEY = int(dns.rdatatype.DNSKEY)
NSEC3 = int(dns.rdatatype.NSEC3)
NSEC3PARAM = int(dns.rdatatype.NSEC3PARAM)
CDS = int(dns.rdatatype.CDS)
CDNSKEY = int(dns.rdatatype.CDNSKEY)
ZONEMD = int(dns.rdatatype.ZONEMD)

_IN = int(dns.rdataclass.IN)
_RRSIG_HEAD = struct.Struct("!HBBIIIH")  # type covered .. key tag (RFC 4034 §3.1)
_RR_HEAD = struct.Struct("!HHI")  # type, class, TTL
_SOA_TAIL = struct.Struct("!IIIII")
_DS_HEAD = struct.Struct("!HBB")

# progress(phase, done, total), called as work proceeds.
Progress = Callable[[str, int, int], None]


class SignError(Exception):
    """The zone cannot be signed as asked; the message says why."""


class RRset:
    """One RRset in compact form.

    ``key`` is the owner's canonical-order key; ``rdatas`` are presentation-format RDATA
    (absolute names); ``canon`` the same RDATA in canonical wire form (RFC 4034 §6.2)
    in the same order, or None until something needs it (signing, ZONEMD). For RRSIG
    sets ``covers`` is the type covered. ``owner``, ``name``, ``rdataset()`` and
    ``records()`` are computed on demand. ``next`` links the RRsets of one owner (a
    list per name would cost more memory than the RRsets of a delegation). Memory is
    what limits a TLD-sized zone, so a single RDATA is stored without a tuple around
    it (``_rd``/``_cn``); ``rdatas`` and ``canon`` always give sequences.
    """

    __slots__ = ("key", "rdtype", "covers", "ttl", "_rd", "_cn", "next")

    def __init__(
        self,
        key: bytes,
        rdtype: int,
        covers: int,
        ttl: int,
        rdatas: Sequence[str],
        canon: Sequence[bytes] | None,
    ):
        self.key = key
        self.rdtype = rdtype
        self.covers = covers
        self.ttl = ttl
        self._rd = rdatas[0] if len(rdatas) == 1 else tuple(rdatas)
        self._cn = None if canon is None else canon[0] if len(canon) == 1 else tuple(canon)
        self.next: RRset | None = None

    @property
    def rdatas(self) -> Sequence[str]:
        rd = self._rd
        return (rd,) if type(rd) is str else rd  # type: ignore[return-value]

    @rdatas.setter
    def rdatas(self, value: Sequence[str]) -> None:
        self._rd = value[0] if len(value) == 1 else tuple(value)

    @property
    def canon(self) -> Sequence[bytes] | None:
        cn = self._cn
        return (cn,) if type(cn) is bytes else cn  # type: ignore[return-value]

    @canon.setter
    def canon(self, value: Sequence[bytes] | None) -> None:
        self._cn = None if value is None else value[0] if len(value) == 1 else tuple(value)

    def __repr__(self) -> str:
        kind = dns.rdatatype.to_text(self.rdtype)
        if self.rdtype == RRSIG:
            kind += f"({dns.rdatatype.to_text(self.covers)})"
        return f"<RRset {self.owner} {self.ttl} {kind} x{len(self)}>"

    def __len__(self) -> int:
        rd = self._rd
        return 1 if type(rd) is str else len(rd)

    @property
    def owner(self) -> str:
        return key_to_text(self.key)

    @property
    def name(self) -> dns.name.Name:
        return dns.name.from_text(self.owner)

    def rdataset(self) -> Any:
        """The RRset as a dnspython Rdataset (parsed from the text)."""
        import dns.rdataset

        rds = dns.rdataset.Rdataset(_IN, self.rdtype, self.covers)
        for text in self.rdatas:
            rds.add(dns.rdata.from_text(_IN, self.rdtype, text, dns.name.root), self.ttl)
        return rds

    def rrset(self) -> Any:
        """The RRset as a dnspython RRset."""
        import dns.rrset

        out = dns.rrset.RRset(self.name, _IN, self.rdtype, self.covers)
        out.update(self.rdataset())
        return out

    def records(self) -> list[tuple[dns.name.Name, int, int, dns.rdata.Rdata]]:
        name = self.name
        return [
            (name, self.ttl, self.rdtype, dns.rdata.from_text(_IN, self.rdtype, t, dns.name.root))
            for t in self.rdatas
        ]

    def lines(self) -> list[str]:
        prefix = f"{self.owner}\t{self.ttl}\tIN\t{_type_text(self.rdtype)}\t"
        return [prefix + text + "\n" for text in self.rdatas]


def _node(head: RRset | None) -> list[RRset]:
    """The RRsets linked from *head*."""
    out = []
    while head is not None:
        out.append(head)
        head = head.next
    return out


def _link(nodes: dict[bytes, RRset], key: bytes, rrsets: list[RRset]) -> None:
    """Make *rrsets* the RRsets of *key* (none: remove the name)."""
    if not rrsets:
        nodes.pop(key, None)
        return
    for rs, following in zip(rrsets, rrsets[1:], strict=False):
        rs.next = following
    rrsets[-1].next = None
    nodes[key] = rrsets[0]


def _push(nodes: dict[bytes, RRset], rs: RRset) -> None:
    """Add an RRset to its owner's (order does not matter: output is sorted)."""
    rs.next = nodes.get(rs.key)
    nodes[rs.key] = rs


_TYPE_TEXT: dict[int, str] = {}


def _type_text(rdtype: int) -> str:
    text = _TYPE_TEXT.get(rdtype)
    if text is None:
        text = _TYPE_TEXT[rdtype] = dns.rdatatype.to_text(rdtype)
    return text


def _canon_from_text(rdtype: int, text: str) -> bytes:
    if rdtype == A:
        return dns.ipv4.inet_aton(text)
    if rdtype == AAAA:
        return dns.ipv6.inet_aton(text)
    return dns.rdata.from_text(_IN, rdtype, text, dns.name.root).to_digestable()


def _fill_canon(rs: RRset) -> Sequence[bytes]:
    """The canonical RDATA, computed from the text if not known yet (then re-sorted)."""
    if rs.canon is None:
        rs.canon = tuple([_canon_from_text(rs.rdtype, t) for t in rs.rdatas])
        _normalize(rs)
    return rs.canon


def _sorted_unique(
    texts: Sequence[str], canons: Sequence[bytes] | None
) -> tuple[tuple[str, ...], tuple[bytes, ...] | None]:
    """RDATA in canonical order without duplicates (by text where no canon is known)."""
    if len(texts) < 2:
        return tuple(texts), None if canons is None else tuple(canons)
    if canons is not None:
        unique: dict[bytes, str] = {}
        for c, t in sorted(zip(canons, texts, strict=True)):
            unique.setdefault(c, t)
        return tuple(unique.values()), tuple(unique)
    return tuple(dict.fromkeys(sorted(texts))), None


def _normalize(rs: RRset) -> None:
    """Sort the RRset's RDATA (canonical order where known) and drop duplicates."""
    if type(rs._rd) is not str and len(rs._rd) > 1:
        rs.rdatas, rs.canon = _sorted_unique(rs.rdatas, rs.canon)


def _output_order(rs: RRset) -> tuple[int, int]:
    """Sort key of an owner's RRsets in the output: by type, each RRSIG after its type."""
    return (rs.covers, 1) if rs.rdtype == RRSIG else (rs.rdtype, 0)


# ---------------------------------------------------------------------------
# Zone data
# ---------------------------------------------------------------------------

# (key, rdtype, covers, ttl, RDATA text(s), canonical RDATA or None) of consecutive
# records of one RRset, sorted and unique: one text (str) and canonical form (bytes),
# or tuples of them (as RRset keeps them).
Group = tuple[bytes, int, int, int, Any, Any]
# Types whose presence means the zone was signed before (kept aside, regenerated).
_OLD_DNSSEC = frozenset({RRSIG, NSEC, NSEC3, NSEC3PARAM, ZONEMD})
_new = object.__new__


def _rrset(key: bytes, rdtype: int, covers: int, ttl: int, rd: Any, cn: Any) -> RRset:
    """An RRset from RDATA already in its stored form (see :class:`RRset`)."""
    rs = _new(RRset)
    rs.key, rs.rdtype, rs.covers, rs.ttl, rs._rd, rs._cn, rs.next = (
        key, rdtype, covers, ttl, rd, cn, None)
    return rs


class ZoneData:
    """The records of one zone, grouped into RRsets by owner key.

    ``nodes`` maps an owner key to the first of its RRsets (linked by ``next``; see
    ``node()``). :func:`sign_zone` takes this (and mutates it) or reader records.
    """

    __slots__ = ("origin", "origin_key", "nodes", "count", "special", "_intern_sets")

    def __init__(self, origin: dns.name.Name):
        self.origin = origin
        self.origin_key = key_of(origin)
        self.nodes: dict[bytes, RRset] = {}
        self.count = 0
        self.special: set[bytes] = set()  # owners of RRSIG/NSEC/NSEC3/NSEC3PARAM/ZONEMD
        self._intern_sets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(self, group: Group) -> None:
        """Add one group of an RRset, merging as needed."""
        key, rdtype, covers, ttl, rd, cn = group
        if type(rd) is str:
            self.count += 1
        else:
            self.count += len(rd)
            if rdtype == NS:
                # Delegations share name servers, often the very same set: one copy.
                rd = self._intern_sets.setdefault(rd, rd)
        if rdtype in _OLD_DNSSEC:
            self.special.add(key)
        rs = self.nodes.get(key)
        if rs is None:
            self.nodes[key] = _rrset(key, rdtype, covers, ttl, rd, cn)
            return
        while True:
            if rs.rdtype == rdtype and rs.covers == covers:
                more = _rrset(key, rdtype, covers, ttl, rd, cn)
                rs.rdatas = (*rs.rdatas, *more.rdatas)
                if rs.canon is not None and cn is not None:
                    rs.canon = (*rs.canon, *more.canon)  # type: ignore[misc]
                else:
                    rs.canon = None
                rs.ttl = min(rs.ttl, ttl)  # RFC 2181 §5.2: one TTL per RRset
                _normalize(rs)
                return
            if rs.next is None:
                rs.next = _rrset(key, rdtype, covers, ttl, rd, cn)
                return
            rs = rs.next

    def load(self, records: Iterable[WireRecord], *, canon_all: bool,
             skip_delegation_ns: bool, problems: list[str]) -> None:
        """Add records in the zone reader's wire form; the problems found go to
        *problems* (ZoneSyntaxError from *records* included).

        Canonical RDATA is kept for everything with *canon_all*, else for what may be
        signed and is not cheaper to derive later: not for NS below the apex (never
        signed) nor for A/AAAA (mostly glue; derived from the text when signed).
        """
        origin, origin_key, nodes, add = self.origin, self.origin_key, self.nodes, self.add
        intern = self._intern_sets.setdefault
        new = _new
        origin_wire = origin.to_wire().lower()
        below = len(origin_wire) + 1  # wire length of a name one label below, less the label
        # Names in NS RDATA by WireName (the reader gives one per name): one text each.
        name_texts: dict[Any, str] = {}
        a_text: dict[bytes, str] = {}
        forms = _rdata_forms
        prev_owner = None
        key = b""
        in_zone = apex = True
        count = 0
        # Consecutive records of one RRset are gathered (the first alone, then lists).
        cur_key: bytes | None = None
        cur_type = cur_covers = cur_ttl = 0
        cur_text: str = ""
        cur_canon: bytes | None = None
        more_texts: list[str] | None = None
        more_canons: list[bytes] | None = None
        try:
            for owner, ttl, rdtype, parts, _target, path, line in records:
                if owner is not prev_owner:
                    prev_owner = owner
                    wire = owner.key
                    n = wire[0]
                    if len(wire) == n + below and wire.endswith(origin_wire) and not (
                            b"\x00" in (label := wire[1 : n + 1]) or b"\x01" in label):
                        key = origin_key + label + b"\x00"  # the usual owner in a TLD
                        in_zone, apex = True, False
                    else:
                        key = key_of_wire(wire)
                        in_zone = key.startswith(origin_key)
                        apex = key == origin_key
                if not in_zone:
                    where = f"{path}:{line}: " if path is not None else ""
                    problems.append(f"{where}{owner.to_name()} is outside the zone {origin}")
                    continue
                covers = 0
                if rdtype == NS and not apex:
                    if skip_delegation_ns:
                        continue
                    name = parts[0]  # type: ignore[index]
                    text = name_texts.get(name)
                    if text is None:
                        if len(name_texts) >= _NAME_TEXTS_MAX:
                            name_texts.clear()
                        text = name_texts[name] = _wire_text(name.wire)
                    canon = name.key if canon_all else None
                elif rdtype == A and not canon_all:
                    text = a_text.get(parts)  # type: ignore[arg-type]
                    if text is None:
                        if len(a_text) >= 4096:
                            a_text.clear()
                        text = a_text[parts] = socket.inet_ntoa(parts[2:])  # type: ignore[index]
                    canon = None
                elif rdtype == AAAA and not canon_all:
                    text, canon = _aaaa_text(parts[2:]), None  # type: ignore[index]
                else:
                    text, canon = forms(rdtype, parts)
                    if rdtype == RRSIG:
                        covers = int.from_bytes(canon[:2], "big")
                if key is cur_key and rdtype == cur_type and covers == cur_covers:
                    if more_texts is None:
                        more_texts = [cur_text, text]
                        more_canons = None if canon is None else [cur_canon, canon]  # type: ignore[list-item]
                    else:
                        more_texts.append(text)
                        if more_canons is not None:
                            more_canons.append(canon)  # type: ignore[arg-type]
                    if ttl < cur_ttl:
                        cur_ttl = ttl
                    continue
                if cur_key is not None:
                    # The RRset of a new owner, not a DNSSEC type: the commonest case by
                    # far (a delegation's NS, its glue), done here.
                    if cur_key not in nodes and cur_type not in _OLD_DNSSEC:
                        rs = new(RRset)
                        rs.key = cur_key
                        rs.rdtype = cur_type
                        rs.covers = 0
                        rs.ttl = cur_ttl
                        rs.next = None
                        if more_texts is None:
                            rs._rd = cur_text
                            rs._cn = cur_canon
                            count += 1
                        elif more_canons is None and len(more_texts) == 2:
                            a, b = more_texts  # the usual pair of name servers
                            if a == b:
                                rs._rd = a
                                count += 1
                            else:
                                rs._rd = intern(pair := (a, b) if a < b else (b, a), pair) if (
                                    cur_type == NS) else ((a, b) if a < b else (b, a))
                                count += 2
                            rs._cn = None
                        else:
                            group = _group(cur_key, cur_type, 0, cur_ttl, more_texts,
                                           more_canons)
                            rd = group[4]
                            if type(rd) is tuple:
                                count += len(rd)
                                if cur_type == NS:  # delegations share the same NS sets
                                    rd = intern(rd, rd)
                            else:
                                count += 1
                            rs._rd = rd
                            rs._cn = group[5]
                        nodes[cur_key] = rs
                    elif more_texts is None:
                        add((cur_key, cur_type, cur_covers, cur_ttl, cur_text, cur_canon))
                    else:
                        add(_group(cur_key, cur_type, cur_covers, cur_ttl, more_texts,
                                   more_canons))
                cur_key = key
                cur_type = rdtype
                cur_covers = covers
                cur_ttl = ttl
                cur_text = text
                cur_canon = canon
                more_texts = more_canons = None
        except ZoneSyntaxError as e:
            problems.extend(e.problems)
        self.count += count
        if cur_key is not None:
            if more_texts is None:
                add((cur_key, cur_type, cur_covers, cur_ttl, cur_text, cur_canon))
            else:
                add(_group(cur_key, cur_type, cur_covers, cur_ttl, more_texts, more_canons))

    def node(self, key: bytes) -> list[RRset]:
        """The RRsets owned by *key* (empty if none)."""
        return _node(self.nodes.get(key))

    def rrsets(self) -> Iterator[RRset]:
        for head in self.nodes.values():
            rs: RRset | None = head
            while rs is not None:
                yield rs
                rs = rs.next

    def get(self, key: bytes, rdtype: int, covers: int = 0) -> RRset | None:
        rs = self.nodes.get(key)
        while rs is not None:
            if rs.rdtype == rdtype and rs.covers == covers:
                return rs
            rs = rs.next
        return None

    @classmethod
    def from_records(
        cls,
        records: Iterable[Any],
        origin: dns.name.Name,
        *,
        canon_all: bool = True,
        skip_delegation_ns: bool = False,
    ) -> ZoneData:
        """Group reader records (anything with name, ttl, rdtype, rdata) by RRset.

        Raises ZoneSyntaxError listing every record outside *origin* (and every
        syntax error, when *records* is a reader).
        """
        zone = cls(origin)
        problems: list[str] = []
        zone.load(_dnspython_records(records), canon_all=canon_all,
                  skip_delegation_ns=skip_delegation_ns, problems=problems)
        if problems:
            raise ZoneSyntaxError(problems)
        return zone


# Names in RDATA, by wire: their presentation text (bounded; most repeat).
_NAME_TEXT: dict[bytes, str] = {}
_NAME_TEXT_MAX = 1 << 16
_NAME_TEXTS_MAX = 1 << 22  # names in NS RDATA remembered by one read (then it restarts)
_PLAIN_NAME = re.compile(rb"[!#%&'*+,\-./0-9:<=>?A-Z\[\]^_`a-z{|}~]*")


def _name_text(wire: bytes) -> str:
    """An absolute name in wire form as dnspython prints it (cached)."""
    text = _NAME_TEXT.get(wire)
    if text is None:
        if len(_NAME_TEXT) >= _NAME_TEXT_MAX:
            _NAME_TEXT.clear()
        text = _NAME_TEXT[wire] = _wire_text(wire)
    return text


def _wire_text(wire: bytes) -> str:
    """An absolute name in wire form as dnspython prints it (case kept, escapes)."""
    labels = label_list(wire)
    if not labels:
        return "."
    text = b".".join(labels)
    # Labels of characters printed as they are (no dot among them: as many dots as
    # labels less one), else dnspython says how to escape them.
    if _PLAIN_NAME.fullmatch(text) is None or text.count(b".") != len(labels) - 1:
        return dns.name.from_wire(wire, 0)[0].to_text()  # type: ignore[no-any-return]
    return text.decode("ascii") + "."


def _aaaa_text(body: bytes) -> str:
    text = socket.inet_ntop(socket.AF_INET6, body)
    # dnspython and inet_ntop agree but for the forms with an IPv4 tail: let it decide.
    return dns.ipv6.inet_ntoa(body) if "." in text else text


def _chunked(text: str, size: int) -> str:
    if len(text) <= size:
        return text
    return " ".join([text[i : i + size] for i in range(0, len(text), size)])


def _name_end(wire: bytes, i: int) -> int:
    """The offset just past the uncompressed name that starts at *i*."""
    while n := wire[i]:
        i += n + 1
    return i + 1


def _rrsig_text(body: bytes) -> str:
    cov, alg, labels, ttl, exp, inc, tag = _RRSIG_HEAD.unpack_from(body)
    cut = _name_end(body, 18)
    signer = _name_text(body[18:cut])
    sig = _chunked(base64.b64encode(body[cut:]).decode("ascii"), 32)
    return (f"{_type_text(cov)} {alg} {labels} {ttl} {_sigtime(exp)} {_sigtime(inc)} {tag} "
            f"{signer} {sig}")


def _rdata_forms(rdtype: int, parts: Any) -> tuple[str, bytes]:
    """(presentation text, canonical wire) of RDATA in the zone reader's wire form
    (:data:`nameserver.zone.fastread.WireRecord`): what dnspython's ``to_text()`` and
    ``to_digestable()`` give for the same RDATA, without building it for the usual
    types."""
    if type(parts) is tuple:
        if len(parts) == 1:  # NS, CNAME, PTR
            name = parts[0]
            return _name_text(name.wire), name.key
        if len(parts) == 2:  # MX
            pref, name = parts
            return f"{int.from_bytes(pref, 'big')} {_name_text(name.wire)}", pref + name.key
        mname, rname, tail = parts  # SOA
        numbers = " ".join(map(str, _SOA_TAIL.unpack(tail)))
        text = f"{_name_text(mname.wire)} {_name_text(rname.wire)} {numbers}"
        return text, mname.key + rname.key + tail
    body = parts[2:]
    if rdtype == A:
        return socket.inet_ntoa(body), body
    if rdtype == AAAA:
        return _aaaa_text(body), body
    if rdtype == DS:
        tag, alg, digest_type = _DS_HEAD.unpack_from(body)
        digest = _chunked(body[4:].hex(), 128)
        return f"{tag} {alg} {digest_type} {digest}", body
    if rdtype == RRSIG:
        cut = _name_end(body, 18)  # the canonical form lowercases the signer name
        return _rrsig_text(body), body[:18] + body[18:cut].lower() + body[cut:]
    rdata = dns.rdata.from_wire(_IN, rdtype, body, 0, len(body))
    return rdata.to_text(), rdata.to_digestable()


def _group(key: bytes, rdtype: int, covers: int, ttl: int, texts: list[str],
           canons: list[bytes] | None) -> Group:
    """A group of several records: sorted, without duplicates (perhaps one left)."""
    if canons is None and len(texts) == 2:
        a, b = texts
        if a == b:
            return key, rdtype, covers, ttl, a, None
        return key, rdtype, covers, ttl, (a, b) if a < b else (b, a), None
    rd, cn = _sorted_unique(texts, canons)
    if len(rd) == 1:
        return key, rdtype, covers, ttl, rd[0], None if cn is None else cn[0]
    return key, rdtype, covers, ttl, rd, cn


def _dnspython_records(records: Iterable[Any]) -> Iterator[WireRecord]:
    """Reader records (name, ttl, rdtype, rdata[, where]) in the fast reader's form."""
    name = owner = None
    for rec in records:
        if rec.name is not name:
            name = rec.name
            owner = WireName.from_name(name)
        where = getattr(rec, "where", None)
        yield (owner, rec.ttl, rec.rdtype, _rdata_parts(rec.rdata),  # type: ignore[misc]
               None, None if where is None else where.file,
               0 if where is None else where.line)


def _sigtime(seconds: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of small acyclic objects: the cyclic GC would only burn time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
