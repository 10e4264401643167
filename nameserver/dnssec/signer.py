"""Offline zone signer: DNSKEY, RRSIG, NSEC3 (or NSEC) and ZONEMD for a whole zone.

The serving engine never signs: it serves the records this module writes.

Data model
----------
A zone of a million delegations does not fit comfortably in dnspython objects, so the
signer works on :class:`RRset` objects that keep each RDATA twice, compactly: its
presentation text (what the output file says) and, where it is needed, its canonical
wire form (RFC 4034 §6.2, what signatures and ZONEMD cover). Owner names are *keys*
whose byte order is the canonical name order (see :mod:`nameserver.dnssec.nsec3`);
they are written out in lowercase, their canonical form.

Reading
-------
:func:`read_zone` reads a master file with the serving loader's fast reader
(:func:`nameserver.zone.fastread.read_wire_records`, dnspython for rare forms, errors
as ``file:line``) and turns its wire forms into text and canonical wire as dnspython's
``to_text()`` and ``to_digestable()`` would. With worker processes it can split the
file at record boundaries where the reader's state is known ($ORIGIN, $TTL), hand each
piece to a worker and merge the pieces in file order; files with ``$INCLUDE`` or bare
CR line ends are read in one piece.

Signing
-------
:func:`sign_zone` strips old DNSSEC records, adds the keys' DNSKEYs, finds zone cuts
(NS below the apex: the NS RRset and glue/occluded data below it stay unsigned, DS is
signed), builds the NSEC3 chain (opt-out by default) or an NSEC chain, and signs every
authoritative RRset: the KSKs sign DNSKEY/CDS/CDNSKEY, the ZSKs the rest (one key alone
signs everything). The signed data is assembled and signed in worker processes
(``fork``), keys handed over as PEM. Signatures from a previous run are kept while the
RRset is unchanged, the key still signs that RRset and they do not expire within
*refresh*; ZONEMD (RFC 8976) is computed last, over the final zone.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import gc
import hashlib
import heapq
import itertools
import logging
import mmap
import multiprocessing
import multiprocessing.pool
import os
import re
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dns.exception
import dns.ipv4
import dns.ipv6
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.ttl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from nameserver.dnssec.keys import SigningKey, private_key_pem
from nameserver.dnssec.nsec3 import (
    ChainEntry,
    key_is_wild,
    key_of,
    key_of_wire,
    key_parent,
    key_to_text,
    key_to_wire,
    nsec3_chain,
    nsec3param_rdata,
    nsec_chain,
)
from nameserver.wire import WireName
from nameserver.zone.fastread import WireRecord, read_wire_records
from nameserver.zone.reader import ZoneSyntaxError
from nameserver.zone.tree import _rdata_parts

__all__ = [
    "RRset",
    "SignError",
    "SignStats",
    "ZoneData",
    "read_zone",
    "sign_zone",
    "worker_pool",
    "write_zone",
]

log = logging.getLogger(__name__)

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

_STRIPPED = frozenset({RRSIG, NSEC, NSEC3, NSEC3PARAM})
_KSK_TYPES = frozenset({DNSKEY, CDS, CDNSKEY})
_IN = int(dns.rdataclass.IN)
_RRSIG_HEAD = struct.Struct("!HBBIIIH")  # type covered .. key tag (RFC 4034 §3.1)
_RR_HEAD = struct.Struct("!HHI")  # type, class, TTL
_SOA_TAIL = struct.Struct("!IIIII")
_DS_HEAD = struct.Struct("!HBB")
_DEFAULT_VALIDITY = timedelta(days=30)
_DEFAULT_INCEPTION_OFFSET = timedelta(hours=1)
_DEFAULT_DNSKEY_TTL = 3600
_PARALLEL_MIN_JOBS = 4000  # fewer signatures than this are made in-process
_BATCH = 1000  # signatures per worker task
_CHUNK_BYTES = 4 << 20  # zone-file piece per reading task

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


# ---------------------------------------------------------------------------
# Zone data and reading
# ---------------------------------------------------------------------------

# [key, rdtype, covers, ttl, rdata texts, canonical rdata or None]
Group = list[Any]
# Types whose presence means the zone was signed before (kept aside, regenerated).
_OLD_DNSSEC = frozenset({RRSIG, NSEC, NSEC3, NSEC3PARAM, ZONEMD})
_LAZY_CANON = frozenset({A, AAAA})


class ZoneData:
    """The records of one zone, grouped into RRsets by owner key.

    ``nodes`` maps an owner key to the first of its RRsets (linked by ``next``; see
    ``node()``). :func:`sign_zone` takes this (and mutates it) or reader records.
    """

    __slots__ = ("origin", "origin_key", "nodes", "count", "special", "_intern", "_intern_sets")

    def __init__(self, origin: dns.name.Name):
        self.origin = origin
        self.origin_key = key_of(origin)
        self.nodes: dict[bytes, RRset] = {}
        self.count = 0
        self.special: set[bytes] = set()  # owners of RRSIG/NSEC/NSEC3/NSEC3PARAM/ZONEMD
        self._intern: dict[str, str] = {}
        self._intern_sets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(self, group: Group) -> None:
        """Add one group (RDATA sorted and unique) of an RRset, merging as needed."""
        key, rdtype, covers, ttl, texts, canons = group
        self.count += len(texts)
        if rdtype == NS:
            # Delegations share name servers, often the very same set: one copy each.
            intern = self._intern
            texts = tuple([intern.setdefault(t, t) for t in texts])
            texts = self._intern_sets.setdefault(texts, texts)
        elif rdtype in _OLD_DNSSEC:
            self.special.add(key)
        rs = self.nodes.get(key)
        if rs is None:
            self.nodes[key] = RRset(key, rdtype, covers, ttl, texts, canons)
            return
        while True:
            if rs.rdtype == rdtype and rs.covers == covers:
                rs.rdatas = (*rs.rdatas, *texts)
                if rs.canon is not None and canons is not None:
                    rs.canon = (*rs.canon, *canons)
                else:
                    rs.canon = None
                rs.ttl = min(rs.ttl, ttl)  # RFC 2181 §5.2: one TTL per RRset
                _normalize(rs)
                return
            if rs.next is None:
                rs.next = RRset(key, rdtype, covers, ttl, texts, canons)
                return
            rs = rs.next

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
        for group in _compact(_dnspython_records(records), origin, canon_all,
                              skip_delegation_ns, problems):
            zone.add(group)
        if problems:
            raise ZoneSyntaxError(problems)
        return zone


# Names in RDATA, by wire: their presentation text (bounded; most repeat).
_NAME_TEXT: dict[bytes, str] = {}
_NAME_TEXT_MAX = 1 << 17
_PLAIN_LABEL = re.compile(rb"[!#%&'*+,\-/0-9:<=>?A-Z\[\]^_`a-z{|}~]+")
_GENERIC_MAX = 0xFFFF


def _name_text(wire: bytes) -> str:
    """An absolute name in wire form as dnspython prints it (case kept, escapes)."""
    text = _NAME_TEXT.get(wire)
    if text is None:
        labels = []
        i = 0
        plain = _PLAIN_LABEL.fullmatch
        while n := wire[i]:
            label = wire[i + 1 : i + 1 + n]
            if plain(label) is None:
                text = dns.name.from_wire(wire, 0)[0].to_text()
                break
            labels.append(label)
            i += n + 1
        else:
            text = b".".join(labels).decode("ascii") + "." if labels else "."
        if len(_NAME_TEXT) >= _NAME_TEXT_MAX:
            _NAME_TEXT.clear()
        _NAME_TEXT[wire] = text
    return text


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


def _compact(
    records: Iterable[WireRecord],
    origin: dns.name.Name,
    canon_all: bool,
    skip_delegation_ns: bool,
    problems: list[str],
) -> Iterator[Group]:
    """Records in the zone reader's wire form -> groups of consecutive records of one
    (owner, type), each sorted and without duplicates; the problems found are added to
    *problems* (ZoneSyntaxError from *records* included).

    Canonical RDATA is kept for everything with *canon_all*, else for what may be
    signed and is not cheaper to derive later: not for NS below the apex (never
    signed) nor for A/AAAA (mostly glue; derived from the text when signed).
    """
    origin_key = key_of(origin)
    origin_wire = origin.to_wire().lower()
    prev_owner = None
    key = b""
    in_zone = apex = True
    cur: Group | None = None
    forms = _rdata_forms
    names = _NAME_TEXT
    a_text: dict[bytes, str] = {}
    try:
        for owner, ttl, rdtype, parts, _target, path, line in records:
            if owner is not prev_owner:
                prev_owner = owner
                key = _owner_key(owner.key, origin_wire, origin_key)
                in_zone = key.startswith(origin_key)
                apex = key == origin_key
            if not in_zone:
                where = f"{path}:{line}: " if path is not None else ""
                problems.append(f"{where}{owner.to_name()} is outside the zone {origin}")
                continue
            if rdtype == NS and not apex:
                if skip_delegation_ns:
                    continue
                wire = parts[0].wire  # type: ignore[union-attr]
                text = names.get(wire) or _name_text(wire)
                canon = parts[0].key if canon_all else None  # type: ignore[union-attr]
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
            covers = int.from_bytes(canon[:2], "big") if rdtype == RRSIG else 0  # type: ignore[index]
            if cur is not None and cur[0] is key and cur[1] == rdtype and cur[2] == covers:
                cur[4].append(text)
                if cur[5] is not None:
                    cur[5].append(canon)
                if ttl < cur[3]:
                    cur[3] = ttl
                continue
            if cur is not None:
                cur[4], cur[5] = _sorted_unique(cur[4], cur[5])
                yield cur
            cur = [key, rdtype, covers, ttl, [text], None if canon is None else [canon]]
    except ZoneSyntaxError as e:
        problems.extend(e.problems)
    if cur is not None:
        cur[4], cur[5] = _sorted_unique(cur[4], cur[5])
        yield cur


def _owner_key(wire: bytes, origin_wire: bytes, origin_key: bytes) -> bytes:
    """The canonical-order key of a lowercased wire name (see nsec3.key_of)."""
    n = wire[0]
    if len(wire) == n + 1 + len(origin_wire) and wire.endswith(origin_wire):
        label = wire[1 : n + 1]  # one label below the origin, the usual owner in a TLD
        if b"\x00" not in label and b"\x01" not in label:
            return origin_key + label + b"\x00"
    return key_of_wire(wire)


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


_INCLUDE_RE = re.compile(rb"(?im)^[ \t]*\$include\b")
_BARE_CR_RE = re.compile(rb"\r(?!\n)")
_SPECIAL_RE = re.compile(rb'["();\\]')


def _paren_depth(raw: bytes, depth: int) -> int:
    """Parenthesis depth after one line, tokenized as the reader does (ValueError on a
    quote left open or a stray ')')."""
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x3B:  # ';' starts a comment
            break
        if c == 0x22:  # '"'
            j = i + 1
            while j < n and raw[j] != 0x22:
                j += 2 if raw[j] == 0x5C else 1
            if j >= n:
                raise ValueError("unterminated quoted string")
            i = j + 1
        elif c == 0x28:
            depth += 1
            i += 1
        elif c == 0x29:
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
            i += 1
        else:
            i += 2 if c == 0x5C else 1
    return depth


_QUIET_BLOCK = re.compile(rb'["()\\]|(?m:^[ \t]*\$)')
_LINE_WITH_OWNER = re.compile(rb"(?m)^[^ \t\r\n;]")


def _pieces(path: str, origin: dns.name.Name, target: int) -> Iterator[tuple[int, int, Any]]:
    """Split points of a master file: (start offset, first line, state) where the state
    is None at the start of the file, else ($ORIGIN text, $TTL) in force there.

    A piece starts only at a line that begins a record with an explicit owner, outside
    parentheses, with a $TTL in force, so the reader started there with that $ORIGIN
    and $TTL reads exactly what it would have read in one go. Blocks without quotes,
    parentheses, escapes or directives (nearly all of a big zone) are skipped at C
    speed; anything unusual stops the splitting (the rest is one piece, and the reader
    reports the problem).
    """
    yield 0, 1, None
    current = origin
    default_ttl: int | None = None
    depth = 0
    offset = 0  # file offset of the block
    lineno = 1  # line number at the start of the block
    next_split = target
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += f.readline()
            if depth == 0 and _QUIET_BLOCK.search(block) is None:
                pos = next_split - offset
                while default_ttl is not None and pos < len(block):
                    m = _LINE_WITH_OWNER.search(block, max(pos, 0))
                    if m is None:
                        break
                    at = m.start()
                    yield offset + at, lineno + block.count(b"\n", 0, at), (
                        current.to_text(), default_ttl)
                    next_split = offset + at + target
                    pos = next_split - offset
            else:
                line_start = 0
                line_no = lineno
                for raw in block.splitlines(keepends=True):
                    first = raw[:1]
                    try:
                        if depth == 0 and first and first not in b" \t\r\n;":
                            if first == b"$":
                                if _SPECIAL_RE.search(raw.split(b";", 1)[0]) is not None:
                                    return  # quotes or escapes in a directive: no more pieces
                                words = raw.split(b";", 1)[0].split()
                                word = words[0].upper()
                                if word in (b"$ORIGIN", b"$TTL") and len(words) != 2:
                                    return
                                if word == b"$ORIGIN":
                                    current = dns.name.from_text(words[1].decode(), current)
                                elif word == b"$TTL":
                                    default_ttl = dns.ttl.from_text(words[1].decode())
                                else:
                                    return  # $INCLUDE or unknown: the reader decides
                            elif offset + line_start >= next_split and default_ttl is not None:
                                yield offset + line_start, line_no, (current.to_text(),
                                                                     default_ttl)
                                next_split = offset + line_start + target
                        if _SPECIAL_RE.search(raw) is not None:
                            depth = _paren_depth(raw, depth)
                    except (ValueError, UnicodeDecodeError, dns.exception.DNSException):
                        return
                    line_start += len(raw)
                    line_no += 1
            offset += len(block)
            lineno += block.count(b"\n")


def _read_piece(task: tuple[Any, ...]) -> tuple[list[Group], list[str]]:
    """Worker: read bytes [start, end) of the file with the zone reader."""
    path, tmpdir, index, start, end, first_line, state, origin_text, canon_all, skip_ns = task
    zone_origin = dns.name.from_text(origin_text)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start if end is not None else -1)
    if state is None:
        preamble = b""
        reader_origin = zone_origin
    else:
        preamble = f"$ORIGIN {state[0]}\n$TTL {state[1]}\n".encode("ascii")
        reader_origin = dns.name.from_text(state[0])
    piece = os.path.join(tmpdir, f"piece-{index}.zone")
    with open(piece, "wb") as f:
        f.write(preamble)
        f.write(data)
    del data
    shift = first_line - 1 - preamble.count(b"\n")

    def records() -> Iterator[WireRecord]:
        for rec in read_wire_records(piece, reader_origin):
            yield (*rec[:5], path, rec[6] + shift)  # type: ignore[misc]

    problems: list[str] = []
    try:
        groups = list(_compact(records(), zone_origin, canon_all, skip_ns, problems))
    finally:
        os.unlink(piece)
    fixed = []
    for p in problems:
        if p.startswith(piece + ":"):
            number, sep, rest = p[len(piece) + 1 :].partition(":")
            if sep and number.isdigit():
                p = f"{path}:{int(number) + shift}:{rest}"
            else:
                p = path + p[len(piece) :]
        fixed.append(p.replace(piece, path))
    return groups, fixed


def read_zone(
    path: str | os.PathLike[str],
    origin: dns.name.Name | str,
    *,
    workers: int | None = None,
    pool: multiprocessing.pool.Pool | None = None,
    canon_all: bool = False,
    skip_delegation_ns: bool = False,
    progress: Progress | None = None,
) -> ZoneData:
    """Read a master file into :class:`ZoneData` with the project's zone reader.

    With a *pool* (or *workers* > 1) the file is read in pieces in parallel. Canonical
    wire RDATA is kept for everything that may be signed, or for every record with
    *canon_all* (needed for ZONEMD). Raises ZoneSyntaxError listing every problem.
    """
    origin = dns.name.from_text(origin) if isinstance(origin, str) else origin
    path = os.fspath(path)
    size = os.path.getsize(path)
    n = (os.cpu_count() or 1) if workers is None else workers
    if pool is None and (n <= 1 or size < 2 * _CHUNK_BYTES):
        return _read_whole(path, origin, canon_all, skip_delegation_ns, progress)
    with (
        open(path, "rb") as f,
        contextlib.closing(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) as mm,
    ):
        sequential = bool(_INCLUDE_RE.search(mm) or _BARE_CR_RE.search(mm))
    if sequential:
        return _read_whole(path, origin, canon_all, skip_delegation_ns, progress)
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(worker_pool(n))
            assert pool is not None
        tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nameserver-sign-"))
        starts = _pieces(path, origin, _CHUNK_BYTES)

        def tasks() -> Iterator[tuple[Any, ...]]:
            prev = next(starts)
            for index, nxt in enumerate(starts):
                yield (path, tmpdir, index, prev[0], nxt[0], prev[1], prev[2],
                       origin.to_text(), canon_all, skip_delegation_ns)
                prev = nxt
            yield (path, tmpdir, -1, prev[0], None, prev[1], prev[2], origin.to_text(),
                   canon_all, skip_delegation_ns)

        zone = ZoneData(origin)
        problems: list[str] = []
        # At most a few pieces in flight: results waiting to be merged cost memory.
        limit = 2 * max(1, getattr(pool, "_processes", 2))
        pending: collections.deque[tuple[Any, int]] = collections.deque()
        with _gc_paused():
            for task in tasks():
                pending.append((pool.apply_async(_read_piece, (task,)), task[3]))
                if len(pending) >= limit:
                    _merge_piece(zone, problems, pending, progress, size)
            while pending:
                _merge_piece(zone, problems, pending, progress, size)
    if problems:
        raise ZoneSyntaxError(problems)
    return zone


def _read_whole(path: str, origin: dns.name.Name, canon_all: bool, skip_ns: bool,
                progress: Progress | None) -> ZoneData:
    """Read the file in this process (progress by line)."""
    zone = ZoneData(origin)
    problems: list[str] = []
    add = zone.add
    records: Iterable[WireRecord] = read_wire_records(path, origin)
    if progress is not None:
        records = _line_progress(records, path, progress)
    with _gc_paused():
        for group in _compact(records, origin, canon_all, skip_ns, problems):
            add(group)
    if problems:
        raise ZoneSyntaxError(problems)
    _NAME_TEXT.clear()
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


def _merge_piece(
    zone: ZoneData,
    problems: list[str],
    pending: collections.deque[tuple[Any, int]],
    progress: Progress | None,
    size: int,
) -> None:
    result, start = pending.popleft()
    groups, found = result.get()
    problems.extend(found)
    add = zone.add
    for group in groups:
        add(group)
    if progress is not None:
        progress("reading", pending[0][1] if pending else size, size)


# ---------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------


def _worker_init() -> None:
    gc.disable()  # short-lived tasks, no reference cycles; the parent's heap stays shared


@contextlib.contextmanager
def worker_pool(workers: int | None = None) -> Iterator[multiprocessing.pool.Pool | None]:
    """A pool of *workers* forked processes for reading and signing (None if <= 1).

    Create it before loading a big zone so that the workers are forked small.
    """
    n = (os.cpu_count() or 1) if workers is None else workers
    if n <= 1:
        yield None
        return
    gc.collect()
    gc.freeze()  # what the parent holds now is never touched by the children's GC
    try:
        pool = multiprocessing.get_context("fork").Pool(n, initializer=_worker_init)
    finally:
        gc.unfreeze()
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


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


_PRIVATE_KEYS: dict[bytes, Any] = {}


def _private_key(pem: bytes) -> Any:
    key = _PRIVATE_KEYS.get(pem)
    if key is None:
        key = _PRIVATE_KEYS[pem] = serialization.load_pem_private_key(pem, password=None)
    return key


def _signer(algorithm: int, key: Any) -> Callable[[bytes], bytes]:
    if algorithm == 13:
        ecdsa = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

        def sign_ecdsa(data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign_ecdsa
    if algorithm == 15:
        return key.sign  # type: ignore[no-any-return]
    if algorithm == 8:
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return lambda data: key.sign(data, pkcs1, sha256)  # type: ignore[no-any-return]
    raise SignError(f"cannot sign with algorithm {algorithm}")


def _verifier(algorithm: int, key: Any) -> Callable[[bytes, bytes], bool]:
    public = key.public_key()

    def verify(data: bytes, sig: bytes) -> bool:
        try:
            if algorithm == 13:
                if len(sig) != 64:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
                )
                public.verify(der, data, ec.ECDSA(hashes.SHA256()))
            elif algorithm == 15:
                public.verify(sig, data)
            else:
                public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify


def _sigtime(seconds: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def _labels(key: bytes) -> int:
    count = key.count(b"\x00")
    return count - 1 if key_is_wild(key) else count


def _signed_rrs(key: bytes, rdtype: int, ttl: int, canons: Sequence[bytes]) -> bytes:
    prefix = key_to_wire(key) + _RR_HEAD.pack(rdtype, _IN, ttl)
    return b"".join(prefix + len(c).to_bytes(2, "big") + c for c in canons)


def _sign_batch(batch: tuple[Any, ...]) -> list[tuple[str, bytes]]:
    """Worker: RRSIGs for jobs (key, type, ttl, expiration, canonical RDATA sorted)."""
    pem, algorithm, tag, signer_wire, signer_text, inception, jobs = batch
    sign = _signer(algorithm, _private_key(pem))
    inception_text = _sigtime(inception)
    b64 = base64.b64encode
    out = []
    for key, rdtype, ttl, expiration, canons in jobs:
        labels = _labels(key)
        head = _RRSIG_HEAD.pack(rdtype, algorithm, labels, ttl, expiration, inception, tag)
        head += signer_wire
        sig = sign(head + _signed_rrs(key, rdtype, ttl, canons))
        text = (
            f"{_type_text(rdtype)} {algorithm} {labels} {ttl} {_sigtime(expiration)} "
            f"{inception_text} {tag} {signer_text} {b64(sig).decode('ascii')}"
        )
        out.append((text, head + sig))
    return out


def _verify_batch(batch: tuple[Any, ...]) -> list[bool]:
    """Worker: does each old RRSIG (canonical wire) verify over the current RRset?"""
    pem, algorithm, signer_len, jobs = batch
    verify = _verifier(algorithm, _private_key(pem))
    cut = 18 + signer_len
    return [
        verify(rrsig[:cut] + _signed_rrs(key, rdtype, ttl, canons), rrsig[cut:])
        for key, rdtype, ttl, rrsig, canons in jobs
    ]


# ---------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------


class SignStats:
    """What :func:`sign_zone` did (also logged)."""

    def __init__(self) -> None:
        self.names = 0
        self.delegations = 0
        self.secure_delegations = 0
        self.occluded = 0
        self.chain = 0
        self.new_signatures = 0
        self.kept_signatures = 0
        self.seconds = 0.0

    def __str__(self) -> str:
        return (
            f"{self.names} names, {self.delegations} delegations "
            f"({self.secure_delegations} with DS), {self.occluded} glue/occluded names, "
            f"{self.chain} chain records, {self.new_signatures} new and "
            f"{self.kept_signatures} kept signatures"
        )


def _epoch(value: datetime | float | int | None, default: float) -> int:
    if value is None:
        return int(default)
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


def _seconds(value: timedelta | float | int) -> int:
    return int(value.total_seconds()) if isinstance(value, timedelta) else int(value)


def _jitter(key: bytes, rdtype: int, spread: int) -> int:
    if spread <= 0:
        return 0
    digest = hashlib.blake2b(key + rdtype.to_bytes(2, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (spread + 1)


class _KeyInfo:
    __slots__ = ("key", "pem", "wire_len")

    def __init__(self, key: SigningKey, signer_len: int):
        self.key = key
        self.pem = private_key_pem(key)
        self.wire_len = signer_len


def _run(
    pool: multiprocessing.pool.Pool | None,
    func: Callable[[Any], list[Any]],
    batches: Iterable[Any],
) -> Iterator[list[Any]]:
    if pool is None:
        return map(func, batches)
    return pool.imap(func, batches)


def _as_zone(
    records: Iterable[Any] | ZoneData | None, origin: dns.name.Name, canon_all: bool,
    skip_ns: bool = False,
) -> ZoneData | None:
    if records is None or isinstance(records, ZoneData):
        return records
    return ZoneData.from_records(records, origin, canon_all=canon_all,
                                 skip_delegation_ns=skip_ns)


def _soa_fields(rs: RRset) -> tuple[int, int]:
    """(serial, minimum) of the SOA RRset."""
    canon = _fill_canon(rs)[0]
    # mname, rname (uncompressed names), then serial refresh retry expire minimum
    i = 0
    for _ in range(2):
        while canon[i]:
            i += canon[i] + 1
        i += 1
    serial, _r, _t, _e, minimum = struct.unpack_from("!IIIII", canon, i)
    return serial, minimum


def sign_zone(
    records: Iterable[Any] | ZoneData,
    origin: dns.name.Name | str,
    keys: Sequence[SigningKey],
    *,
    nsec3: bool = True,
    opt_out: bool = True,
    salt: bytes = b"",
    iterations: int = 0,
    inception: datetime | int | None = None,
    expiration: datetime | int | None = None,
    jitter: timedelta | int | None = None,
    zonemd: bool = False,
    previous: Iterable[Any] | ZoneData | None = None,
    refresh: timedelta | int = timedelta(days=7),
    workers: int | None = None,
    progress: Progress | None = None,
    now: datetime | int | None = None,
    dnskey_ttl: int | None = None,
    pool: multiprocessing.pool.Pool | None = None,
    stats: SignStats | None = None,
    standby: Sequence[SigningKey] = (),
) -> list[RRset]:
    """Sign a zone; return its RRsets in canonical order (each followed by its RRSIGs).

    *records*: reader records (name, ttl, rdtype, rdata) or a :class:`ZoneData` (which
    is consumed: its RRsets are reused in the result). *keys*: the zone's keys; KSKs
    sign DNSKEY/CDS/CDNSKEY and ZSKs the rest (one kind alone signs everything).

    Validity: *inception* (default now - 1 h) to *expiration* (default now + 30 days),
    seconds since the epoch or datetimes; each RRset's expiration is moved earlier by a
    deterministic per-RRset amount of up to *jitter* (default a quarter of the
    validity) so that re-signing spreads out. *iterations*/*salt* default to RFC 9276's
    0 and empty. *previous*: an earlier signed version of the zone; without it,
    RRSIGs in *records* are the previous signatures (each one verified before it is
    kept). A previous signature is kept if its RRset is unchanged, its key still signs
    that RRset and it expires more than *refresh* after *now*.

    *workers*: processes for signing (default: CPU count; a *pool* from
    :func:`worker_pool` is used if given). *progress(phase, done, total)* is called as
    work proceeds. DNSKEY TTL: *dnskey_ttl*, else that of the zone's DNSKEY RRset,
    else 3600. *standby* keys are published in the DNSKEY RRset but sign nothing
    (pre-publication and post-publication in a rollover).
    """
    started = time.monotonic()
    origin = dns.name.from_text(origin) if isinstance(origin, str) else origin
    stats = stats if stats is not None else SignStats()
    if not keys:
        raise SignError("no keys to sign with")
    for k in (*keys, *standby):
        if k.origin != origin:
            raise SignError(f"key {k.describe()} is for {k.origin}, not {origin}")
    now_s = _epoch(now, time.time())
    inception_s = _epoch(inception, now_s - _DEFAULT_INCEPTION_OFFSET.total_seconds())
    expiration_s = _epoch(expiration, now_s + _DEFAULT_VALIDITY.total_seconds())
    if expiration_s <= inception_s:
        raise SignError("signature expiration must come after the inception")
    if expiration_s <= now_s:
        raise SignError("signature expiration is in the past")
    validity = expiration_s - inception_s
    spread = validity // 4 if jitter is None else _seconds(jitter)
    spread = max(0, min(spread, validity // 2, (expiration_s - now_s) // 2))
    refresh_s = _seconds(refresh)
    n_workers = (os.cpu_count() or 1) if workers is None else workers

    with _gc_paused(), contextlib.ExitStack() as stack:
        zone = _as_zone(records, origin, zonemd)
        prev = _as_zone(previous, origin, False, skip_ns=True)
        assert zone is not None
        signer = _Signer(zone, origin, list(keys), stats, keep_sig_canon=zonemd)
        signer.standby = list(standby)
        signer.prepare(dnskey_ttl, zonemd)
        signer.build_chain(nsec3, opt_out, salt, iterations)
        plan = signer.plan(prev, now_s, refresh_s, expiration_s, spread)
        if pool is None and n_workers > 1 and plan.job_count() >= _PARALLEL_MIN_JOBS:
            pool = stack.enter_context(worker_pool(n_workers))
        signer.execute(plan, pool, inception_s, progress)
        del plan
        if zonemd:
            signer.add_zonemd(inception_s)
        out = signer.ordered()
    stats.seconds = time.monotonic() - started
    log.info("signed %s: %s in %.1f s", origin, stats, stats.seconds)
    return out


class _Plan:
    """Signatures to verify and to make, and those kept as they are."""

    def __init__(self) -> None:
        # (rrset, key index, expiration)
        self.sign: list[tuple[RRset, int, int]] = []
        # (rrset, key index, expiration, old text, old canonical rrsig) -> verify first
        self.verify: list[tuple[RRset, int, int, str, bytes]] = []

    def job_count(self) -> int:
        return len(self.sign) + len(self.verify)


class _Signer:
    def __init__(self, zone: ZoneData, origin: dns.name.Name, keys: list[SigningKey],
                 stats: SignStats, keep_sig_canon: bool):
        self.zone = zone
        self.nodes = zone.nodes
        self.origin = origin
        self.origin_text = origin.to_text()
        self.apex = key_of(origin)
        self.signer_wire = key_to_wire(self.apex)
        self.keys = keys
        self.info = [_KeyInfo(k, len(self.signer_wire)) for k in keys]
        # Per algorithm (RFC 4035 §2.2: every algorithm signs every RRset): its KSKs sign
        # DNSKEY/CDS/CDNSKEY and its ZSKs the rest; a key of one kind alone does both.
        self.ksk_indexes: list[int] = []
        self.zsk_indexes: list[int] = []
        for algorithm in sorted({k.algorithm for k in keys}):
            ksk = [i for i, k in enumerate(keys) if k.algorithm == algorithm and k.ksk]
            zsk = [i for i, k in enumerate(keys) if k.algorithm == algorithm and not k.ksk]
            self.ksk_indexes += ksk or zsk
            self.zsk_indexes += zsk or ksk
        self.standby: list[SigningKey] = []
        self.stats = stats
        self.keep_sig_canon = keep_sig_canon
        self.old_sigs: dict[tuple[bytes, int], RRset] = {}
        self.auth: list[bytes] = []
        self.cuts: list[bytes] = []
        self.secure: set[bytes] = set()
        self.chain_keys: list[bytes] = []
        self.chain: dict[bytes, RRset] = {}  # NSEC3 owners (kept out of the big dict)
        self.nsec3 = True
        self.chain_ttl = 0
        self.sorted_keys: list[bytes] = []
        self.all_keys: list[bytes] = []

    # -- step 1: strip, DNSKEY, classify -------------------------------------------

    def prepare(self, dnskey_ttl: int | None, zonemd: bool) -> None:
        nodes, apex = self.nodes, self.apex
        apex_node = _node(nodes.get(apex))
        soa = next((rs for rs in apex_node if rs.rdtype == SOA), None)
        if soa is None:
            raise SignError(f"the zone has no SOA record at its apex {self.origin}")
        if len(soa.rdatas) != 1:
            raise SignError(f"the zone has {len(soa.rdatas)} SOA records; it needs exactly one")
        if not any(rs.rdtype == NS for rs in apex_node):
            raise SignError(f"the zone has no NS records at its apex {self.origin}")
        self.serial, minimum = _soa_fields(soa)
        self.soa_ttl = soa.ttl
        self.chain_ttl = min(minimum, soa.ttl)  # RFC 9077

        # Old RRSIGs are kept aside (re-sign mode); NSEC/NSEC3/NSEC3PARAM and the apex
        # ZONEMD are regenerated.
        for key in self.zone.special:
            kept = []
            for rs in _node(nodes[key]):
                if rs.rdtype == RRSIG:
                    self.old_sigs[(key, rs.covers)] = rs
                elif rs.rdtype == ZONEMD and key == apex:
                    log.info("replacing the old ZONEMD of %s", self.origin)
                elif rs.rdtype not in _STRIPPED:
                    kept.append(rs)
            _link(nodes, key, kept)
        self.zone.special.clear()
        self.zone._intern.clear()  # merging is over; the strings stay where they are used
        self.zone._intern_sets.clear()
        apex_node = _node(nodes.get(apex))

        # DNSKEY: the zone's own only where they are loaded keys, plus every loaded key.
        old = next((rs for rs in apex_node if rs.rdtype == DNSKEY), None)
        wanted: dict[bytes, str] = {}
        for k in self.keys + self.standby:
            b64 = base64.b64encode(k.dnskey.key).decode("ascii")
            wanted[k.dnskey.to_digestable()] = (
                f"{k.dnskey.flags} {k.dnskey.protocol} {k.algorithm} {b64}"
            )
        ttl = dnskey_ttl
        if old is not None:
            for c, t in zip(_fill_canon(old), old.rdatas, strict=True):
                if c not in wanted:
                    log.warning("dropping DNSKEY %s: no private key for it was loaded", t)
            ttl = old.ttl if ttl is None else ttl
            apex_node.remove(old)
        ttl = _DEFAULT_DNSKEY_TTL if ttl is None else ttl
        texts, canons = _sorted_unique(list(wanted.values()), list(wanted))
        apex_node.append(RRset(apex, DNSKEY, 0, ttl, texts, canons))
        if zonemd:
            placeholder = f"{self.serial} 1 1 " + "00" * 48
            wire = struct.pack("!IBB", self.serial, 1, 1) + bytes(48)
            apex_node.append(RRset(apex, ZONEMD, 0, self.soa_ttl, (placeholder,), (wire,)))
        _link(nodes, apex, apex_node)

        # Zone cuts: NS below the apex. Below a cut everything is glue or occluded.
        self.sorted_keys = sorted(nodes)
        cut: bytes | None = None
        auth, cuts, secure = self.auth, self.cuts, self.secure
        occluded = 0
        for key in self.sorted_keys:
            if cut is not None and key.startswith(cut):
                occluded += 1
                continue
            cut = None
            has_ns = has_ds = False
            rs: RRset | None = nodes[key]
            while rs is not None:
                if rs.rdtype == NS:
                    has_ns = True
                elif rs.rdtype == DS:
                    has_ds = True
                rs = rs.next
            if has_ns and key != apex:
                cut = key
                cuts.append(key)
                if has_ds:
                    secure.add(key)
            else:
                auth.append(key)
        self.stats.names = len(self.sorted_keys)
        self.stats.delegations = len(cuts)
        self.stats.secure_delegations = len(secure)
        self.stats.occluded = occluded

    # -- step 2: NSEC3 or NSEC chain -----------------------------------------------

    def build_chain(self, nsec3: bool, opt_out: bool, salt: bytes, iterations: int) -> None:
        nodes, apex, secure = self.nodes, self.apex, self.secure
        ttl = self.chain_ttl
        self.nsec3 = nsec3
        if nsec3:
            entries: list[ChainEntry] = []
            members = set()
            for key in self.auth:
                types = [rs.rdtype for rs in _node(nodes[key])]
                types.append(RRSIG)
                if key == apex:
                    types.append(NSEC3PARAM)
                entries.append((key, types))
                members.add(key)
            for key in self.cuts:
                if key in secure:
                    entries.append((key, (NS, DS, RRSIG)))
                elif not opt_out:
                    entries.append((key, (NS,)))
                else:
                    continue  # opt-out: an unsigned delegation gets no NSEC3
                members.add(key)
            # Empty non-terminals above the names in the chain (RFC 5155 §7.1); with
            # opt-out, those above unsigned delegations only are left out with them.
            for key, _types in list(entries):
                parent = key_parent(key)
                while len(parent) > len(apex) and parent not in members and parent not in nodes:
                    members.add(parent)
                    entries.append((parent, ()))
                    parent = key_parent(parent)
            chain = nsec3_chain(entries, apex, salt=salt, iterations=iterations,
                                opt_out=opt_out)
            param_text, param_wire = nsec3param_rdata(salt, iterations)
            _push(nodes, RRset(apex, NSEC3PARAM, 0, ttl, (param_text,), (param_wire,)))
            for owner_key, text, wire in chain:
                if owner_key in nodes:
                    raise SignError(
                        f"the NSEC3 owner {key_to_text(owner_key)} is also a name in the zone"
                    )
                self.chain[owner_key] = RRset(owner_key, NSEC3, 0, ttl, (text,), (wire,))
                self.chain_keys.append(owner_key)
            self.chain_keys.sort()
            self.stats.chain = len(chain)
        else:
            cut_set = set(self.cuts)
            entries = []
            for key in heapq.merge(self.auth, self.cuts):
                if key in cut_set:
                    types: Sequence[int] = (NS, DS, RRSIG, NSEC) if key in secure else (
                        NS, RRSIG, NSEC)
                else:
                    types = [rs.rdtype for rs in _node(nodes[key])] + [RRSIG, NSEC]
                entries.append((key, types))
            for key, text, wire in nsec_chain(entries):
                _push(nodes, RRset(key, NSEC, 0, ttl, (text,), (wire,)))
            self.stats.chain = len(entries)

    # -- step 3: which signatures to keep, verify or make ------------------------------

    def _signing_keys(self, key: bytes, rdtype: int) -> list[int]:
        if key == self.apex and rdtype in _KSK_TYPES:
            return self.ksk_indexes
        return self.zsk_indexes

    def signed_rrsets(self) -> list[RRset]:
        nodes = self.nodes
        out = []
        for key in self.auth:
            out += [rs for rs in _node(nodes[key]) if rs.rdtype not in (ZONEMD, RRSIG)]
        cuts = sorted(self.secure) if self.nsec3 else self.cuts
        for key in cuts:
            rs: RRset | None = nodes[key]
            while rs is not None:
                if rs.rdtype == DS or rs.rdtype == NSEC:
                    out.append(rs)
                rs = rs.next
        out += [self.chain[key] for key in self.chain_keys]
        return out

    def plan(self, prev: ZoneData | None, now: int, refresh: int, expiration: int,
             spread: int) -> _Plan:
        """Decide, per RRset and signing key, to keep, verify-then-keep or make a
        signature. Old signatures: those of *prev*, else the RRSIGs of the input."""
        if prev is not None:
            self.prev_sigs = {(rs.key, rs.covers): rs for rs in prev.rrsets()
                              if rs.rdtype == RRSIG}
        else:
            self.prev_sigs = self.old_sigs
        self.old_sigs = {}
        self.prev = prev
        self.now, self.refresh, self.expiration, self.spread = now, refresh, expiration, spread
        plan = _Plan()
        for rs in self.signed_rrsets():
            self._plan_rrset(plan, rs)
        # Only the ZONEMD's old signatures may still be needed (it is signed last).
        zonemd = self.prev_sigs.get((self.apex, ZONEMD))
        self.prev_sigs = {} if zonemd is None else {(self.apex, ZONEMD): zonemd}
        return plan

    def _plan_rrset(self, plan: _Plan, rs: RRset) -> None:
        _fill_canon(rs)
        keys, prev = self.keys, self.prev
        exp = self.expiration - _jitter(rs.key, rs.rdtype, self.spread)
        indexes = self._signing_keys(rs.key, rs.rdtype)
        candidates: dict[int, tuple[str, bytes]] = {}
        old = self.prev_sigs.get((rs.key, rs.rdtype)) if self.prev_sigs else None
        if old is not None and (prev is None or _same_rrset(prev, rs)):
            labels = _labels(rs.key)
            signer_wire = self.signer_wire
            cut = 18 + len(signer_wire)
            for text, c in zip(old.rdatas, _fill_canon(old), strict=True):
                _cov, alg, lab, ottl, sig_exp, sig_inc, tag = _RRSIG_HEAD.unpack_from(c)
                if lab != labels or ottl != rs.ttl or c[18:cut] != signer_wire:
                    continue
                if sig_exp - self.now <= self.refresh or sig_inc > self.now:
                    continue
                for i in indexes:
                    if keys[i].algorithm == alg and keys[i].key_tag == tag:
                        candidates.setdefault(i, (text, c))
        for i in indexes:
            found = candidates.get(i)
            if found is None:
                plan.sign.append((rs, i, exp))
            elif prev is None:
                plan.verify.append((rs, i, exp, found[0], found[1]))
            else:
                self._attach(rs, self._kept_text(found[1]), found[1])
                self.stats.kept_signatures += 1

    def _kept_text(self, canon: bytes) -> str:
        """An old RRSIG written the way new ones are (so unchanged zones stay identical)."""
        cov, alg, labels, ttl, exp, inc, tag = _RRSIG_HEAD.unpack_from(canon)
        sig = base64.b64encode(canon[18 + len(self.signer_wire) :]).decode("ascii")
        return (f"{_type_text(cov)} {alg} {labels} {ttl} {_sigtime(exp)} {_sigtime(inc)} "
                f"{tag} {self.origin_text} {sig}")

    def _attach(self, rs: RRset, text: str, canon: bytes) -> None:
        nodes = self.chain if rs.rdtype == NSEC3 else self.nodes
        sig = nodes[rs.key]
        while sig is not None and (sig.rdtype != RRSIG or sig.covers != rs.rdtype):
            sig = sig.next
        keep = self.keep_sig_canon
        if sig is None:
            sig = RRset(rs.key, RRSIG, rs.rdtype, rs.ttl, (text,), (canon,) if keep else None)
            _push(nodes, sig)
            return
        sig.rdatas = (*sig.rdatas, text)
        if keep:
            sig.canon = (*(sig.canon or ()), canon)

    # -- step 4: run the jobs --------------------------------------------------------

    def execute(self, plan: _Plan, pool: multiprocessing.pool.Pool | None, inception: int,
                progress: Progress | None) -> None:
        if plan.verify:
            by_key: dict[int, list[tuple[RRset, int, int, str, bytes]]] = {}
            for item in plan.verify:
                by_key.setdefault(item[1], []).append(item)
            for i, items in sorted(by_key.items()):
                info = self.info[i]
                batches = (
                    (info.pem, info.key.algorithm, info.wire_len,
                     [(rs.key, rs.rdtype, rs.ttl, c, rs.canon) for rs, _i, _e, _t, c
                      in items[j : j + _BATCH]])
                    for j in range(0, len(items), _BATCH)
                )
                results = [ok for batch in _run(pool, _verify_batch, batches) for ok in batch]
                for (rs, idx, exp, _text, c), ok in zip(items, results, strict=True):
                    if ok:
                        self._attach(rs, self._kept_text(c), c)
                        self.stats.kept_signatures += 1
                    else:
                        plan.sign.append((rs, idx, exp))
        total = len(plan.sign)
        by_key2: dict[int, list[tuple[RRset, int, int]]] = {}
        for item in plan.sign:
            by_key2.setdefault(item[1], []).append(item)
        done = 0
        signer_text = self.origin_text
        for i, items in sorted(by_key2.items()):
            info = self.info[i]
            batches = (
                (info.pem, info.key.algorithm, info.key.key_tag, self.signer_wire,
                 signer_text, inception,
                 [(rs.key, rs.rdtype, rs.ttl, exp, rs.canon) for rs, _i, exp
                  in items[j : j + _BATCH]])
                for j in range(0, len(items), _BATCH)
            )
            at = 0
            for batch in _run(pool, _sign_batch, batches):
                for text, canon in batch:
                    self._attach(items[at][0], text, canon)
                    at += 1
                done += len(batch)
                if progress is not None:
                    progress("signing", done, total)
        self.stats.new_signatures += total

    # -- step 5: ZONEMD --------------------------------------------------------------

    def add_zonemd(self, inception: int) -> None:
        """RFC 8976 §3: the digest covers the signed zone except the apex ZONEMD RRset
        and its RRSIGs; then the ZONEMD RRset is signed."""
        nodes, apex = self.nodes, self.apex
        digest = hashlib.sha384()
        for key in self._all_keys():
            owner = key_to_wire(key)
            rrsets = _node(self._head(key))
            for rs in sorted(rrsets, key=lambda r: (r.rdtype, r.covers)):
                if key == apex and ZONEMD in (rs.rdtype, rs.covers):
                    continue
                _normalize(rs)
                fixed = owner + _RR_HEAD.pack(rs.rdtype, _IN, rs.ttl)
                for c in _fill_canon(rs):
                    digest.update(fixed + len(c).to_bytes(2, "big") + c)
        value = digest.digest()
        rs = next(r for r in _node(nodes[apex]) if r.rdtype == ZONEMD)
        rs.rdatas = (f"{self.serial} 1 1 {value.hex().upper()}",)
        rs.canon = (struct.pack("!IBB", self.serial, 1, 1) + value,)
        plan = _Plan()
        self._plan_rrset(plan, rs)  # an unchanged zone keeps its ZONEMD signature too
        self.execute(plan, None, inception, None)

    # -- step 6: output order ----------------------------------------------------------

    def _head(self, key: bytes) -> RRset:
        head = self.nodes.get(key)
        return self.chain[key] if head is None else head

    def _all_keys(self) -> list[bytes]:
        if self.chain_keys:
            if not self.all_keys:  # timsort merges the two sorted runs in linear time
                self.all_keys = sorted(self.sorted_keys + self.chain_keys)
            return self.all_keys
        return self.sorted_keys

    def ordered(self) -> list[RRset]:
        out: list[RRset] = []
        append = out.append
        nodes, chain = self.nodes, self.chain
        get = nodes.get
        for key in self._all_keys():
            head = get(key)
            if head is None:
                head = chain[key]
            if head.next is None:
                append(head)
                continue
            node = _node(head)
            node.sort(key=_output_order)
            for rs in node:
                if rs.rdtype == RRSIG:
                    _normalize(rs)
            _link(nodes if key in nodes else chain, key, node)
            out += node
        return out


def _output_order(rs: RRset) -> tuple[int, int]:
    return (rs.covers, 1) if rs.rdtype == RRSIG else (rs.rdtype, 0)


def _same_rrset(prev: ZoneData, rs: RRset) -> bool:
    old = prev.get(rs.key, rs.rdtype)
    if old is None or old.ttl != rs.ttl:
        return False
    _normalize(old)
    return tuple(_fill_canon(old)) == tuple(_fill_canon(rs))


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


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


def tty_progress(stream: Any = None) -> Progress | None:
    """A progress callback that redraws one line on *stream* (stderr) if it is a TTY."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return None
    last = [0.0, ""]

    def report(phase: str, done: int, total: int) -> None:
        t = time.monotonic()
        if phase == last[1] and done < total and t - last[0] < 0.2:
            return
        last[0], last[1] = t, phase
        pct = 100.0 * done / total if total else 100.0
        end = "\n" if done >= total else ""
        stream.write(f"\r{phase}: {done}/{total} ({pct:.0f}%)\033[K{end}")
        stream.flush()

    return report

