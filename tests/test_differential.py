"""Differential test: our server and Knot DNS give the same answers to generated queries.

The same zone files are served by our server (``python -m nameserver serve``, queried over
real UDP and TCP sockets) and by Knot DNS; NSD is consulted as a second opinion on the
queries where we and Knot differ (shown in failure reports, never asserted). Runs:

* ``zones/coop.zone`` (5,000 delegations, a sample of 200 queried, and the nic.coop
  corner cases), ``tests/data/engine.zone``, and ``tests/data/diff-corners.zone`` (what
  the other two lack: non-ASCII labels, a wildcard with a child and one owning NS,
  additional-section targets that are CNAMEs or glue, DNAME chains, a 20-link CNAME
  chain);
* ``identity``: engine.zone again, both servers configured with the same id.server /
  hostname.bind / version.bind / NSID values;
* signed zones, served as they are (Knot with ``dnssec-signing: off``): ``engine-nsec3``
  and ``engine-nsec``, engine.zone signed at test time by BIND's dnssec-signzone with NSEC3
  opt-out and with NSEC (``tests/bindsign.py``), and ``coop-signed``, the shipped
  ``zones/coop.signed.zone`` (our signer: NSEC3 opt-out, ZONEMD).

In the other runs neither server has an identity: Knot would answer ``id.server`` and
``hostname.bind`` with its host name, ``version.bind`` with its version and NSID with
its host name, so it gets ``identity: ""``, ``version: ""``, ``nsid: ""`` (answer REFUSED,
no NSID), which is our behaviour without ``identity`` configured; NSD gets
``hide-identity``/``hide-version``.

About 7,000 queries from a fixed seed: every owner name with 18 query types, delegations
and names below them, glue and occluded names, empty non-terminals, names 1 and 2 labels
under wildcards, below DNAMEs (up to YXDOMAIN), random non-existent names, names outside
the zone, mixed-case variants, big answers in every EDNS mode (none, 512, 1232, 4096 with
DO, payloads 0..65535) over UDP and TCP, AXFR/IXFR, meta and unknown types, CH and other
classes, EDNS versions 1..255, EDNS options, header flags, opcodes 1-6 and 15, and
malformed messages (QDCOUNT 0 and 2, truncated, trailing bytes, two OPT, ...). Then about
1,100-1,500 per signed zone (:meth:`Generator.generate_signed`), most with DO: every owner
name with 15 types (RRSIG, NSEC, NSEC3, DNSKEY, NSEC3PARAM, ANY among them), NXDOMAIN
(closest encloser, next closer and wildcard proofs), NODATA, empty non-terminals, wildcard
answers and wildcard NODATA, DS and referrals at signed and unsigned (opt-out)
delegations, CNAME and DNAME chains, NSEC3 owner names, and truncation of signed answers
at payloads 512..1400 over UDP and TCP.

Responses are normalised with dnspython and compared field by field: RCODE, opcode, every
header flag, the question (exactly: both echo the client's letter case), the OPT record
(version, payload size, flags, options), and the answer, authority and additional
sections as multisets of RRs with owner names and names inside RDATA compared
case-insensitively and TTLs compared. RRSIG, NSEC and NSEC3 records come from the same
zone file on both sides, so they are compared exactly like any other record (TTL, every
RDATA field). Ignored: the message ID, the order of RRs and RRsets inside a section, and
name compression (message size).

Every difference must be explained. :data:`DELIBERATE` lists the implementation choices
both readings of the RFCs allow, each with the reason and the exact shape both answers
must have. :data:`KNOWN_BUGS` lists where we are wrong: the main test compares our answer
with that bug patched out (Knot's answer on those fields), and ``test_known_bug`` (strict
xfail) checks the real answer, so it fails loudly once the bug is fixed.

``python tests/test_differential.py`` prints the difference classes and the unexplained
differences (with NSD's opinion) instead of asserting.
"""

from __future__ import annotations

import functools
import random
import socket
import string
import struct
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import refservers  # noqa: E402
from bindsign import sign_with_bind  # noqa: E402  (skips when BIND's tools are missing)

ORIGIN = "coop."
ZONES = {
    "coop": ROOT / "zones" / "coop.zone",
    "engine": ROOT / "tests" / "data" / "engine.zone",
    # Corner cases neither of those has (non-ASCII labels, wildcard with a child, additional
    # processing for odd targets, DNAME chains, a 20-link CNAME chain, ...).
    "corners": ROOT / "tests" / "data" / "diff-corners.zone",
}
# Signed runs (DO mostly set): engine.zone signed at test time by BIND's dnssec-signzone,
# with NSEC3 opt-out and with NSEC, and the shipped zone signed by our own signer (NSEC3
# opt-out, ZONEMD). Knot serves them as they are (refservers.start_knot: no signing).
BIND_SIGNED = {"engine-nsec3": "nsec3-optout", "engine-nsec": "nsec"}
PRESIGNED = {"coop-signed": ROOT / "zones" / "coop.signed.zone"}
SIGNED = frozenset(BIND_SIGNED) | frozenset(PRESIGNED)
NSEC_ZONES = frozenset(k for k, flavour in BIND_SIGNED.items() if flavour == "nsec")
SEED = 20261123
SAMPLED_DELEGATIONS = 200  # of the 5,000 in zones/coop.zone (the fixed test-* ones always)
UDP_TIMEOUT = 0.5  # seconds of silence before the missing UDP answers are resent / given up
TCP_TIMEOUT = 1.0  # seconds; only queries no server answers wait this long
MAX_EXAMPLES = 20

A, NS, CNAME, SOA, MX, TXT, AAAA, SRV, DNAME, OPT, DS = 1, 2, 5, 6, 15, 16, 28, 33, 39, 41, 43
RRSIG, NSEC, DNSKEY, NSEC3, NSEC3PARAM = 46, 47, 48, 50, 51
IXFR, AXFR, ANY = 251, 252, 255
IN, CH, HS, NONE, CLASS_ANY = 1, 3, 4, 254, 255

QTYPES_FULL = [
    "A",
    "AAAA",
    "NS",
    "DS",
    "SOA",
    "MX",
    "TXT",
    "CNAME",
    "DNAME",
    "SRV",
    "ANY",
    "CAA",
    "TYPE65000",
    "TYPE65534",
    "RRSIG",
    "NSEC",
    "NSEC3",
    "DNSKEY",
]
QTYPES_SHORT = ["A", "AAAA", "NS", "DS", "TXT", "ANY"]
# Record types whose RDATA holds domain names (compared case-insensitively).
NAME_TYPES = {NS, CNAME, SOA, MX, SRV, DNAME, 12}  # 12 = PTR

# EDNS modes: None = no OPT record, else (payload, DO).
EDNS_MODES: dict[str, tuple[int, bool] | None] = {
    "noedns": None,
    "e1232": (1232, False),
    "e1232do": (1232, True),
    "e512": (512, False),
    "e4096do": (4096, True),
}
EDNS_WEIGHTS = [30, 30, 20, 10, 10]
# For the signed zones: mostly DO=1, some without DO or without EDNS.
SIGNED_EDNS_MODES: dict[str, tuple[int, bool] | None] = {
    "e1232do": (1232, True),
    "e4096do": (4096, True),
    "e512do": (512, True),
    "noedns": None,
    "e1232": (1232, False),
}
SIGNED_EDNS_WEIGHTS = [45, 25, 5, 10, 15]
# Query types asked at every owner name of a signed zone.
QTYPES_SIGNED = [
    "A",
    "AAAA",
    "NS",
    "DS",
    "SOA",
    "MX",
    "TXT",
    "CNAME",
    "ANY",
    "RRSIG",
    "NSEC",
    "NSEC3",
    "DNSKEY",
    "NSEC3PARAM",
    "TYPE65534",
]


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    zone: str
    cat: str  # what the query exercises: "wildcard", "delegation", "malformed", ...
    desc: str  # human-readable query
    wire: bytes  # with ID 0; the sender patches the ID in
    tcp: bool = False
    qname: str = ""  # lowercased text, "" for queries without a usable question
    qtype: int = -1
    qclass: int = IN
    opcode: int = 0
    flags: int = 0  # header flags of the query
    edns: tuple[int, bool] | None = None  # (payload, DO) of a well-formed OPT record
    edns_version: int = 0
    # Where the zone data sends the name (see Generator.locate): "exact", "ent", "cut",
    # "below-cut", "dname", "wildcard", "nxdomain", "outside"; plus "cname" when the node
    # reached (exact or wildcard) holds a CNAME.
    tags: frozenset[str] = frozenset()

    @property
    def do(self) -> bool:
        return self.edns is not None and self.edns[1]


def _opt(
    payload: int, do: bool, version: int = 0, options: bytes = b"", owner: bytes = b"\0"
) -> bytes:
    flags = 0x8000 if do else 0
    return owner + struct.pack("!HHBBHH", OPT, payload, 0, version, flags, len(options)) + options


def _header(flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0, flags, qd, an, ns, ar)


def build_query(
    qname: str,
    qtype: int,
    qclass: int = IN,
    *,
    flags: int = 0,
    edns: tuple[int, bool] | None = None,
    version: int = 0,
    options: bytes = b"",
) -> bytes:
    name = dns.name.from_text(qname).to_wire()
    assert name is not None
    opt = _opt(edns[0], edns[1], version, options) if edns is not None else b""
    return (
        _header(flags, ar=1 if edns is not None else 0)
        + name
        + struct.pack("!HH", qtype, qclass)
        + opt
    )


def _type_text(qtype: int) -> str:
    return dns.rdatatype.to_text(qtype)


def _class_text(qclass: int) -> str:
    return dns.rdataclass.to_text(qclass)


def _flags_text(flags: int) -> str:
    out = []
    for bit, name in ((0x0100, "rd"), (0x0010, "cd"), (0x0020, "ad"), (0x0200, "tc")):
        if flags & bit:
            out.append("+" + name)
    return " ".join(out)


class Generator:
    """Deterministic query generator for one zone."""

    def __init__(self, key: str, path: Path, rng: random.Random):
        self.key = key
        self.rng = rng
        self.signed = key in SIGNED
        self.cases: list[Case] = []
        self.zone = load_zone(path)
        self.origin = self.zone.origin
        nodes = self.zone.nodes
        # NSEC3 owner names are not names of the zone (RFC 5155 §7.2.8: NXDOMAIN).
        self.nsec3_owners = sorted(
            n for n in nodes if {r.rdtype for r in nodes[n].rdatasets} == {NSEC3, RRSIG}
        )
        self.names = sorted(set(nodes) - set(self.nsec3_owners))
        self.name_set = set(self.names)
        self.cuts = {n for n in self.names if n != self.origin and nodes[n].get_rdataset(IN, NS)}
        self.below_cut = {
            n for n in self.names if any(a in self.cuts for a in _ancestors(n, self.origin)[1:])
        }
        self.wildcards = sorted(n for n in self.names if n.labels[0] == b"*")
        self.dnames = sorted(n for n in self.names if nodes[n].get_rdataset(IN, DNAME))
        self.cnames = sorted(n for n in self.names if nodes[n].get_rdataset(IN, CNAME))
        exists = set(self.names)
        ents: set[dns.name.Name] = set()
        for n in self.names:
            for a in _ancestors(n, self.origin)[1:]:
                if a not in exists:
                    ents.add(a)
        self.ents = sorted(ents)
        self.ent_set = ents
        self.dnames_set = set(self.dnames)

    # -- helpers ------------------------------------------------------------------------

    def rand_label(self) -> str:
        n = self.rng.randint(3, 12)
        first = self.rng.choice(string.ascii_lowercase)
        return (
            first
            + "".join(
                self.rng.choice(string.ascii_lowercase + string.digits + "-") for _ in range(n - 2)
            )
            + self.rng.choice(string.digits)
        )

    def mixcase(self, text: str) -> str:
        return "".join(c.upper() if self.rng.random() < 0.5 else c for c in text)

    def pick_edns(self) -> tuple[int, bool] | None:
        if self.signed:
            mode = self.rng.choices(list(SIGNED_EDNS_MODES), SIGNED_EDNS_WEIGHTS)[0]
            return SIGNED_EDNS_MODES[mode]
        return EDNS_MODES[self.rng.choices(list(EDNS_MODES), EDNS_WEIGHTS)[0]]

    def add(
        self,
        cat: str,
        qname: str | dns.name.Name,
        qtype: str | int,
        *,
        qclass: int = IN,
        edns: tuple[int, bool] | None | str = "random",
        tcp: bool | None = None,
        flags: int | None = None,
        mixcase: bool | None = None,
        version: int = 0,
        options: bytes = b"",
        note: str = "",
    ) -> None:
        text = qname.to_text() if isinstance(qname, dns.name.Name) else qname
        rdtype = dns.rdatatype.from_text(qtype) if isinstance(qtype, str) else qtype
        if edns == "random":
            edns = self.pick_edns()
        assert not isinstance(edns, str)
        if tcp is None:
            tcp = self.rng.random() < 0.1
        if flags is None:
            r = self.rng.random()
            flags = 0x0100 if r < 0.1 else 0x0010 if r < 0.15 else 0x0020 if r < 0.18 else 0
        if mixcase is None:
            mixcase = self.rng.random() < 0.15
        if mixcase:
            text = self.mixcase(text)
        wire = build_query(
            text, rdtype, qclass, flags=flags, edns=edns, version=version, options=options
        )
        parts = [text, _class_text(qclass), _type_text(rdtype)]
        if edns is None:
            parts.append("noedns")
        else:
            parts.append(f"edns{'v' + str(version) if version else ''}={edns[0]}")
            if edns[1]:
                parts.append("+do")
        if options:
            parts.append(f"opts={options.hex()}")
        if flags:
            parts.append(_flags_text(flags))
        parts.append("tcp" if tcp else "udp")
        if note:
            parts.append(f"({note})")
        self.cases.append(
            Case(
                self.key,
                cat,
                " ".join(parts),
                wire,
                tcp,
                text.lower(),
                rdtype,
                qclass,
                0,
                flags,
                edns,
                version,
                self.locate(text, rdtype) if qclass == IN else frozenset(),
            )
        )

    def add_raw(self, cat: str, desc: str, wire: bytes, tcp: bool = False, **kw: Any) -> None:
        kw.setdefault("flags", int.from_bytes(wire[2:4], "big") if len(wire) >= 4 else 0)
        if "qname" in kw and "qtype" in kw:
            kw.setdefault("tags", self.locate(kw["qname"], kw["qtype"]))
        self.cases.append(Case(self.key, cat, f"{desc} {'tcp' if tcp else 'udp'}", wire, tcp, **kw))

    def locate(self, text: str, qtype: int) -> frozenset[str]:
        """Where the zone data sends ``text`` (RFC 1034 §4.3.2 step 3, RFC 4592, RFC 6672)."""
        name = dns.name.from_text(text)
        o = self.origin
        if not name.is_subdomain(o):
            return frozenset({"outside"})
        nodes = self.zone.nodes
        for depth in range(len(o) + 1, len(name) + 1):
            prefix = name.split(depth)[1]
            if prefix in self.cuts and not (prefix == name and qtype == DS):
                return frozenset({"cut" if prefix == name else "below-cut"})
            if prefix in self.dnames_set and prefix != name:
                return frozenset({"dname"})
            if prefix not in self.name_set and prefix not in self.ent_set:
                wildcard = dns.name.from_text("*", prefix.parent())
                if wildcard in nodes:
                    tags = {"wildcard"}
                    if nodes[wildcard].get_rdataset(IN, CNAME):
                        tags.add("cname")
                    if nodes[wildcard].get_rdataset(IN, NS):
                        tags.add("wildcard-ns")
                    return frozenset(tags)
                return frozenset({"nxdomain"})
        if name in self.ent_set:
            return frozenset({"ent"})
        tags = {"exact"}
        if nodes[name].get_rdataset(IN, CNAME):
            tags.add("cname")
        return frozenset(tags)

    def category(self, name: dns.name.Name) -> str:
        nodes = self.zone.nodes
        if name == self.origin:
            return "apex"
        if name in self.below_cut:
            return "glue-or-occluded"
        if name in self.cuts:
            return "delegation"
        if name.labels[0] == b"*":
            return "wildcard-owner"
        node = nodes[name]
        if node.get_rdataset(IN, CNAME):
            return "cname"
        if node.get_rdataset(IN, DNAME):
            return "dname-owner"
        return "owner"

    # -- the query mix ------------------------------------------------------------------

    def generate(self, protocol: bool = True) -> list[Case]:
        o = self.origin
        full_names = [n for n in self.names if n not in self.cuts and n not in self.below_cut]
        deleg = sorted(self.cuts)
        if len(deleg) > SAMPLED_DELEGATIONS:
            fixed = [c for c in deleg if c.labels[0].startswith(b"test-")]
            nodes = self.zone.nodes
            inzone = [
                c
                for c in deleg
                if c not in fixed
                and any(r.target.is_subdomain(o) for r in nodes[c].get_rdataset(IN, NS))
            ]
            taken = set(fixed) | set(inzone)
            other = [c for c in deleg if c not in taken]
            half = (SAMPLED_DELEGATIONS - len(fixed)) // 2
            deleg = fixed + self.rng.sample(inzone, half) + self.rng.sample(other, half)
            deleg.sort()
        chosen = set(deleg)
        glue = [n for n in self.below_cut if any(a in chosen for a in _ancestors(n, o))]

        # Every owner name outside delegations, with every query type.
        for name in full_names:
            for qt in QTYPES_FULL:
                self.add(self.category(name), name, qt)
        # Delegations: the cut itself, names below it, its glue.
        for cut in deleg:
            for qt in ("NS", "DS", *self.rng.sample(["A", "SOA", "ANY", "AAAA", "TXT"], 2)):
                self.add("delegation", cut, qt)
            below = dns.name.from_text(self.rand_label(), cut)
            self.add("below-delegation", below, self.rng.choice(QTYPES_SHORT))
            if self.rng.random() < 0.3:
                deeper = dns.name.from_text(f"{self.rand_label()}.{self.rand_label()}", cut)
                self.add("below-delegation", deeper, self.rng.choice(QTYPES_SHORT))
        for name in glue:
            for qt in ("A", "AAAA", self.rng.choice(["DS", "TXT", "ANY", "NS"])):
                self.add("glue-or-occluded", name, qt)
        # Empty non-terminals.
        for ent in self.ents:
            if ent in chosen or any(a in self.cuts for a in _ancestors(ent, o)):
                continue
            for qt in QTYPES_FULL:
                self.add("ent", ent, qt)
            for _ in range(2):
                self.add(
                    "below-ent",
                    dns.name.from_text(self.rand_label(), ent),
                    self.rng.choice(QTYPES_SHORT),
                )
        # Wildcards, 1 and 2 labels deep, and names next to them.
        for wc in self.wildcards:
            parent = wc.parent()
            for qt in QTYPES_FULL:
                self.add("wildcard", dns.name.from_text(self.rand_label(), parent), qt)
                two = f"{self.rand_label()}.{self.rand_label()}"
                self.add("wildcard", dns.name.from_text(two, parent), qt)
            for qt in ("A", "TXT", "AAAA", "ANY"):
                self.add("wildcard", dns.name.from_text(self.rand_label(), wc), qt)  # below *
                self.add("wildcard", dns.name.from_text("*", wc), qt)
                for sib in [n for n in self.names if n.parent() == parent and n != wc]:
                    self.add("wildcard", dns.name.from_text(self.rand_label(), sib), qt)
        # CNAMEs: below an alias (NXDOMAIN: an alias has no children), and mixed case.
        for cn in self.cnames:
            self.add("below-cname", dns.name.from_text(self.rand_label(), cn), "A")
            self.add("cname", cn, "A", mixcase=True, edns=None)
            self.add("cname", cn, "A", edns=(1232, True), tcp=True)
        # DNAME: names below the owner, in-zone targets that exist, long ones (YXDOMAIN).
        for dn in self.dnames:
            target = self.zone.nodes[dn].get_rdataset(IN, DNAME)[0].target
            for qt in ("A", "AAAA", "TXT", "CNAME", "DNAME", "ANY", "NS", "DS", "MX"):
                self.add("dname", dns.name.from_text(self.rand_label(), dn), qt)
                two = f"{self.rand_label()}.{self.rand_label()}"
                self.add("dname", dns.name.from_text(two, dn), qt)
            for n in self.names:
                if n != target and n.is_subdomain(target):
                    rel = n.relativize(target)
                    for qt in ("A", "AAAA", "ANY", "CNAME"):
                        self.add("dname", rel.concatenate(dn), qt)
            self.add_long_below(dn)
        # Random names that do not exist, under the apex and under existing names.
        parents = [o] + [n for n in full_names if n.labels[0] != b"*"]
        for _ in range(150):
            parent = self.rng.choice(parents) if self.rng.random() < 0.5 else o
            name = dns.name.from_text(self.rand_label(), parent)
            if name in self.zone.nodes or any(
                a in self.cuts or a in self.dnames_set or a.labels[0] == b"*"
                for a in _ancestors(name, o)
            ):
                continue
            self.add("nxdomain", name, self.rng.choice(QTYPES_FULL))
        for qt in ("A", "SOA", "NS"):
            self.add("nxdomain", dns.name.from_text("*", o), qt)  # no wildcard at the apex
        self.add_long_below(o, cat="long-name")
        self.add("long-name", dns.name.from_text("a" * 63, o), "A")
        # Names outside the zone: REFUSED.
        for name in (".", "org.", "example.com.", "xcoop.", "coop.example.", "nic.coop.org."):
            for qt in ("A", "SOA", "NS", "ANY"):
                self.add("outside", name, qt)
        # Case-randomised variants of owner names.
        for name in self.rng.sample(full_names, min(60, len(full_names))):
            for qt in ("A", "ANY", "MX", "NS"):
                self.add("case", name, qt, mixcase=True)
        for cut in self.rng.sample(deleg, min(40, len(deleg))):
            self.add("case", cut, "NS", mixcase=True)
        # The big ones in every EDNS mode over UDP and over TCP (truncation).
        big: list[tuple[dns.name.Name, str]] = [(o, "NS"), (o, "ANY"), (o, "SOA"), (o, "MX")]
        nodes = self.zone.nodes
        for n in full_names:
            if sum(len(rds) for rds in nodes[n].rdatasets) >= 4:
                big += [(n, "TXT"), (n, "ANY"), (n, "A")]

        # The delegations with the most name servers and glue (referral size).
        def weight(cut: dns.name.Name) -> int:
            ns = nodes[cut].get_rdataset(IN, NS)
            return len(ns) + sum(len(nodes[r.target]) for r in ns if r.target in nodes)

        big += [(c, "A") for c in sorted(chosen, key=lambda c: (-weight(c), c))[:6]]
        for extra in ("nic", "ns1.nic", "_sip._tcp.nic", "_imaps._tcp.nic", "_submission._tcp.nic"):
            name = dns.name.from_text(extra, o)
            if name in self.zone.nodes:
                big += [(name, "MX"), (name, "SRV"), (name, "A")]
        seen_big = set()
        for name, qt in big:
            if (name, qt) in seen_big:
                continue
            seen_big.add((name, qt))
            for mode in ("noedns", "e512", "e1232", "e1232do", "e4096do"):
                for tcp in (False, True):
                    self.add("size", name, qt, edns=EDNS_MODES[mode], tcp=tcp, flags=0)
            for payload in (0, 100, 511, 600, 65535):
                self.add("size", name, qt, edns=(payload, False), tcp=False, flags=0)
        # Letter case applies to ASCII only (RFC 4343): \195\137 is not \195\169.
        for text in (
            "CAF\\195\\169.NIC.coop.",
            "caf\\195\\137.nic.coop.",
            "A\\.B.nic.coop.",
            "a.b.nic.coop.",
            "upper.nic.coop.",
            "\\000.NIC.coop.",
            "\\001.nic.coop.",
        ):
            for qt in ("A", "TXT"):
                self.add("case", text, qt, mixcase=False)
        if protocol:
            self.add_protocol_cases()
        return self.cases

    def generate_identity(self) -> list[Case]:
        """CHAOS identification queries and NSID, for the run where both are configured."""
        for name in (
            "id.server.",
            "hostname.bind.",
            "version.bind.",
            "version.server.",
            "authors.bind.",
            "ID.Server.",
            "version.bind.coop.",
        ):
            for qt in ("TXT", "ANY", "A", "SOA"):
                for edns in (None, (1232, True)):
                    for tcp in (False, True):
                        self.add(
                            "chaos", name, qt, qclass=CH, edns=edns, tcp=tcp, flags=0, mixcase=False
                        )
            self.add("chaos", name, "TXT", qclass=IN, edns=None, flags=0, mixcase=False)
        nsid = struct.pack("!HH", 3, 0)
        for name, qt in (
            ("www.nic.coop.", "A"),
            ("nothere.coop.", "A"),
            ("example.com.", "A"),
            ("id.server.", "TXT"),
        ):
            qclass = CH if name == "id.server." else IN
            for tcp in (False, True):
                self.add(
                    "nsid",
                    name,
                    qt,
                    qclass=qclass,
                    edns=(1232, False),
                    options=nsid,
                    tcp=tcp,
                    flags=0,
                    mixcase=False,
                )
            self.add(
                "nsid", name, qt, qclass=qclass, edns=(1232, False), flags=0, mixcase=False
            )  # no NSID option: no NSID in the answer
        return self.cases

    def generate_signed(self) -> list[Case]:
        """The query mix for a signed zone: DO set on most queries (random EDNS modes from
        :data:`SIGNED_EDNS_MODES`), aimed at what DNSSEC adds to the answers: RRSIGs,
        NSEC3/NSEC proofs of NXDOMAIN, NODATA, empty non-terminals and wildcards, DS and
        referrals at signed and unsigned (opt-out) delegations, DNSSEC types as QTYPEs,
        NSEC3 owner names, and truncation of signed answers."""
        o = self.origin
        nodes = self.zone.nodes
        rng = self.rng
        full_names = [n for n in self.names if n not in self.cuts and n not in self.below_cut]
        do_modes = [(1232, True), (4096, True), (512, True)]

        # Every owner name with every type: positive answers, NODATA, CNAME/DNAME, ANY,
        # DNSKEY/NSEC3PARAM at and below the apex, RRSIG/NSEC/NSEC3 as QTYPEs.
        for name in full_names:
            for qt in QTYPES_SIGNED:
                self.add(self.category(name), name, qt)
        for qt in ("DNSKEY", "NSEC3PARAM", "SOA", "NS", "TYPE63", "RRSIG", "ANY"):
            for edns in (None, (1232, False), *do_modes):
                self.add("apex", o, qt, edns=edns, flags=0, mixcase=False)
        # Delegations with and without DS (opt-out: no NSEC3 of their own).
        signed = sorted(c for c in self.cuts if nodes[c].get_rdataset(IN, DS))
        unsigned = sorted(c for c in self.cuts if not nodes[c].get_rdataset(IN, DS))
        chosen: list[dns.name.Name] = []
        for cat, cuts in (("signed-delegation", signed), ("unsigned-delegation", unsigned)):
            picked = sorted(rng.sample(cuts, min(25, len(cuts))))
            chosen += picked
            for cut in picked:
                for qt in ("NS", "DS", "A", rng.choice(["ANY", "RRSIG", "NSEC3", "NSEC", "TXT"])):
                    self.add(cat, cut, qt)
                self.add(cat, cut, "DS", edns=rng.choice(do_modes))
                below = dns.name.from_text(self.rand_label(), cut)
                self.add(cat, below, rng.choice(["A", "AAAA", "DS", "TXT", "ANY"]))
                if rng.random() < 0.3:
                    self.add(cat, dns.name.from_text(self.rand_label(), below), "DS")
        glue = sorted(n for n in self.below_cut if any(a in chosen for a in _ancestors(n, o)))
        for name in rng.sample(glue, min(30, len(glue))):
            for qt in ("A", "AAAA", rng.choice(["DS", "RRSIG", "ANY", "NSEC3"])):
                self.add("glue-or-occluded", name, qt)
        # Empty non-terminals (NSEC3 of the ENT, or the NSEC before it) and names below.
        for ent in self.ents:
            if any(a in self.cuts for a in _ancestors(ent, o)):
                continue
            for qt in ("A", "TXT", "DS", "NS", "ANY", "RRSIG", "NSEC", "NSEC3"):
                self.add("ent", ent, qt)
            for _ in range(2):
                below = dns.name.from_text(self.rand_label(), ent)
                self.add("below-ent", below, rng.choice(QTYPES_SHORT))
        # Wildcard answers and wildcard NODATA, 1 and 2 labels deep, and names next to them.
        for wc in self.wildcards:
            parent = wc.parent()
            for qt in ("A", "TXT", "MX", "AAAA", "CNAME", "DS", "ANY", "RRSIG", "NSEC", "NSEC3"):
                self.add("wildcard", dns.name.from_text(self.rand_label(), parent), qt)
                two = f"{self.rand_label()}.{self.rand_label()}"
                self.add("wildcard", dns.name.from_text(two, parent), qt)
            for qt in ("A", "MX"):
                self.add("wildcard", dns.name.from_text(self.rand_label(), wc), qt)  # below *
                for sib in [n for n in self.names if n.parent() == parent and n != wc]:
                    self.add("wildcard", dns.name.from_text(self.rand_label(), sib), qt)
        # CNAME chains (covered above by type) with DO over TCP, and below an alias.
        for cn in self.cnames:
            self.add("below-cname", dns.name.from_text(self.rand_label(), cn), "A")
            self.add("cname", cn, "A", edns=(1232, True), tcp=True)
        # DNAME: below the owner, to existing targets, and long enough for YXDOMAIN.
        for dn in self.dnames:
            target = nodes[dn].get_rdataset(IN, DNAME)[0].target
            for qt in ("A", "TXT", "CNAME", "DS", "ANY", "RRSIG"):
                self.add("dname", dns.name.from_text(self.rand_label(), dn), qt)
            for n in self.names:
                if n != target and n.is_subdomain(target):
                    for qt in ("A", "ANY"):
                        self.add("dname", n.relativize(target).concatenate(dn), qt)
            self.add_long_below(dn)
        # Names that do not exist: NXDOMAIN proofs (closest encloser, next closer, wildcard).
        parents = [o] + [n for n in full_names if n.labels[0] != b"*"]
        for _ in range(100):
            parent = rng.choice(parents) if rng.random() < 0.5 else o
            name = dns.name.from_text(self.rand_label(), parent)
            if rng.random() < 0.2:
                name = dns.name.from_text(self.rand_label(), name)
            if name in nodes or any(
                a in self.cuts or a in self.dnames_set or a.labels[0] == b"*"
                for a in _ancestors(name, o)
            ):
                continue
            self.add("nxdomain", name, rng.choice(QTYPES_SIGNED))
        for qt in ("A", "NSEC3", "RRSIG"):
            self.add("nxdomain", dns.name.from_text("*", o), qt)
        # NSEC3 owner names (RFC 5155 §7.2.8: NXDOMAIN, whatever the type) and below them.
        for owner in rng.sample(self.nsec3_owners, min(15, len(self.nsec3_owners))):
            for qt in ("A", "NSEC3", "RRSIG", rng.choice(["ANY", "TXT", "DS", "NSEC"])):
                self.add("nsec3-owner", owner, qt)
            self.add("nsec3-owner", dns.name.from_text(self.rand_label(), owner), "A")
        # Names outside the zone.
        for name in (".", "org.", "xcoop.", "nic.coop.org."):
            self.add("outside", name, rng.choice(["A", "DS", "DNSKEY", "NSEC3"]))
        # Truncation of signed answers: the big ones at small payloads, UDP and TCP.
        big: list[tuple[dns.name.Name, str]] = [
            (o, "DNSKEY"),
            (o, "ANY"),
            (o, "NS"),
            (o, "SOA"),
            (o, "RRSIG"),
        ]
        for n in full_names:
            if sum(len(r) for r in nodes[n].rdatasets if r.rdtype not in (RRSIG, NSEC)) >= 4:
                big += [(n, "ANY"), (n, "TXT")]

        def weight(cut: dns.name.Name) -> int:
            ns = nodes[cut].get_rdataset(IN, NS)
            return len(ns) + sum(len(nodes[r.target]) for r in ns if r.target in nodes)

        for cuts in (signed, unsigned):
            top = sorted((c for c in cuts if c in chosen), key=lambda c: (-weight(c), c))
            big += [(c, "A") for c in top[:2]]
        for wc in self.wildcards:
            big.append((dns.name.from_text(self.rand_label(), wc.parent()), "MX"))
            big.append((dns.name.from_text(self.rand_label(), wc.parent()), "A"))
        big += [(dns.name.from_text(self.rand_label(), p), "A") for p in (o, rng.choice(parents))]
        seen: set[tuple[dns.name.Name, str]] = set()
        for name, qt in big:
            if (name, qt) in seen:
                continue
            seen.add((name, qt))
            for edns in (None, (512, False), (512, True), (1232, True), (4096, True)):
                for tcp in (False, True):
                    self.add("size", name, qt, edns=edns, tcp=tcp, flags=0)
            for payload in (600, 900, 1400):
                self.add("size", name, qt, edns=(payload, True), tcp=False, flags=0)
        # Mixed case (RRSIG owner names and signer names), and DO with CD.
        for name in rng.sample(full_names, min(20, len(full_names))):
            self.add("case", name, rng.choice(["A", "ANY", "NSEC3", "MX"]), mixcase=True)
        for name in rng.sample(full_names, min(10, len(full_names))):
            self.add("header-flags", name, "A", edns=(1232, True), flags=CD_FLAG)
        return self.cases

    def add_long_below(self, parent: dns.name.Name, cat: str = "dname") -> None:
        """Queries below ``parent`` of 240..255 octets (YXDOMAIN when a DNAME grows them)."""
        for total in (200, 230, 245, 253, 255):
            labels: list[str] = []
            size = len(parent.to_wire() or b"")
            while size < total:
                room = total - size - 1
                if room < 1:
                    break
                n = min(63, room)
                labels.append(self.rng.choice("abcxyz") * n)
                size += n + 1
            if size != total:
                continue
            name = dns.name.from_text(".".join(labels), parent)
            for qt in ("A", "TXT"):
                self.add(cat, name, qt)

    def add_protocol_cases(self) -> None:
        """Classes, opcodes, meta types, EDNS options and versions, malformed messages."""
        o = "coop."
        www = "www.nic.coop."
        rng = self.rng
        # Zone transfers over UDP and TCP.
        for tcp in (False, True):
            for qt in (AXFR, IXFR):
                self.add("xfr", o, qt, edns=None, tcp=tcp, flags=0)
                self.add("xfr", o, qt, edns=(1232, False), tcp=tcp, flags=0)
            self.add("xfr", "nic.coop.", AXFR, edns=None, tcp=tcp, flags=0)
        # Meta and obsolete query types.
        for qt in (0, OPT, 249, 250, 253, 254, 3, 4, 65535, 32768):
            self.add("meta-type", www, qt, edns=rng.choice([None, (1232, False)]), tcp=False)
        # CHAOS: identification names and others.
        for name in (
            "version.bind.",
            "version.server.",
            "id.server.",
            "hostname.bind.",
            "authors.bind.",
            "coop.",
            "VERSION.BIND.",
        ):
            for qt in ("TXT", "A", "ANY", "SOA"):
                for edns in (None, (1232, False)):
                    self.add("chaos", name, qt, qclass=CH, edns=edns, flags=0, mixcase=False)
        # Other classes.
        for qclass in (HS, CLASS_ANY, NONE, 2, 4000):
            for name in (o, www, "nothere.coop.", "example.com."):
                for qt in ("A", "SOA", "ANY"):
                    edns = rng.choice([None, (1232, True)])
                    self.add("class", name, qt, qclass=qclass, edns=edns)
        # EDNS: versions, options, flags.
        for version in (1, 2, 255):
            for name, qt in ((www, "A"), ("nothere.coop.", "A"), ("example.com.", "A")):
                self.add("edns-version", name, qt, edns=(1232, False), version=version, flags=0)
                self.add("edns-version", name, qt, edns=(1232, True), version=version, tcp=True)
        for opts, note in (
            (struct.pack("!HH", 3, 0), "NSID"),
            (struct.pack("!HH", 10, 8) + b"clientck", "COOKIE"),
            (struct.pack("!HH", 65001, 3) + b"xyz", "unknown option"),
            (struct.pack("!HH", 8, 4) + bytes([0, 1, 0, 0]), "ECS /0"),
            (struct.pack("!HH", 12, 4) + b"\0\0\0\0", "padding"),
            (struct.pack("!HH", 11, 0), "tcp-keepalive"),
        ):
            for name, qt in ((www, "A"), ("nothere.coop.", "TXT"), ("coop.", "NS")):
                self.add(
                    "edns-option",
                    name,
                    qt,
                    edns=(1232, False),
                    options=opts,
                    note=note,
                    flags=0,
                    tcp=False,
                )
        for ednsflags in (0x4000, 0x0001):  # unknown EDNS flag bits: not echoed
            wire = build_query(www, A, edns=(1232, False))
            wire = wire[:-4] + struct.pack("!H", ednsflags) + wire[-2:]
            self.add_raw(
                "edns-flags",
                f"{www} IN A edns-flags={ednsflags:#06x}",
                wire,
                qname=www,
                qtype=A,
                edns=(1232, False),
            )
        # Header flags and opcodes.
        for bit, note in (
            (0x0100, "RD"),
            (0x0010, "CD"),
            (0x0020, "AD"),
            (0x0200, "TC"),
            (0x0080, "RA"),
            (0x0400, "AA"),
            (0x0040, "Z"),
        ):
            for edns in (None, (1232, True)):
                wire = build_query(www, A, flags=bit, edns=edns)
                self.add_raw(
                    "header-flags",
                    f"{www} IN A flags={note} edns={edns}",
                    wire,
                    qname=www,
                    qtype=A,
                    edns=edns,
                )
        for opcode in (1, 2, 3, 4, 5, 6, 15):
            for name, qt in ((o, SOA), (www, A)):
                for edns in (None, (1232, False)):
                    for tcp in (False, True):
                        wire = build_query(name, qt, flags=opcode << 11, edns=edns)
                        self.add_raw(
                            "opcode",
                            f"opcode={opcode} {name} {_type_text(qt)} edns={edns}",
                            wire,
                            tcp,
                            qname=name,
                            qtype=qt,
                            opcode=opcode,
                            edns=edns,
                        )
        # NOTIFY shaped as a primary sends it (AA, an SOA in the answer section), but with an
        # empty SOA RDATA.
        soa = dns.name.from_text(o).to_wire() or b""
        for tcp in (False, True):
            wire = _header((4 << 11) | 0x0400, an=1) + soa + struct.pack("!HH", SOA, IN)
            wire += soa + struct.pack("!HHIH", SOA, IN, 3600, 0)
            self.add_raw(
                "opcode",
                "NOTIFY coop. SOA with empty SOA answer",
                wire,
                tcp,
                qname=o,
                qtype=SOA,
                opcode=4,
            )
        # Malformed messages.
        q_www = dns.name.from_text(www).to_wire() or b""
        question = q_www + struct.pack("!HH", A, IN)
        q2 = (dns.name.from_text("nic.coop.").to_wire() or b"") + struct.pack("!HH", A, IN)
        opt = _opt(1232, False)
        malformed: list[tuple[str, bytes, bool]] = [
            ("QDCOUNT=0", _header(0, qd=0), False),
            ("QDCOUNT=0 with EDNS", _header(0, qd=0, ar=1) + opt, True),
            ("QDCOUNT=2", _header(0, qd=2) + question + q2, False),
            ("QDCOUNT=2 with EDNS", _header(0, qd=2, ar=1) + question + q2 + opt, True),
            ("QDCOUNT=2 same name", _header(0, qd=2) + question + question, False),
            ("QDCOUNT=1 but no question", _header(0), False),
            ("truncated question", _header(0) + question[:-2], False),
            ("truncated name", _header(0) + q_www[:5], False),
            ("trailing bytes", _header(0) + question + b"\0\0\0", False),
            ("trailing bytes after OPT", _header(0, ar=1) + question + opt + b"\0\0\0", False),
            ("two OPT", _header(0, ar=2) + question + opt + opt, False),
            (
                "OPT with non-root owner",
                _header(0, ar=1) + question + _opt(1232, False, owner=q_www),
                False,
            ),
            ("OPT in answer section", _header(0, an=1) + question + opt, False),
            ("truncated OPT", _header(0, ar=1) + question + opt[:-3], False),
            (
                "truncated EDNS option",
                _header(0, ar=1) + question + _opt(1232, False, options=b"\x00\x03\x00\x05ab"),
                False,
            ),
            ("ARCOUNT=1 without record", _header(0, ar=1) + question, False),
            (
                "ANCOUNT=1 with A record",
                _header(0, an=1)
                + question
                + q_www
                + struct.pack("!HHIH", A, IN, 60, 4)
                + b"\1\2\3\4",
                False,
            ),
            (
                "ANCOUNT=1 with A record, EDNS",
                _header(0, an=1, ar=1)
                + question
                + q_www
                + struct.pack("!HHIH", A, IN, 60, 4)
                + b"\1\2\3\4"
                + opt,
                True,
            ),
            (
                "NSCOUNT=1 with TXT record",
                _header(0, ns=1) + question + b"\0" + struct.pack("!HHIH", TXT, IN, 60, 1) + b"\0",
                False,
            ),
            (
                "compressed question name",
                _header(0) + b"\x03www\xc0\x0c" + struct.pack("!HH", A, IN),
                False,
            ),
            (
                "label > 63 octets (0x40 label type)",
                _header(0) + b"\x40" + b"a" * 64 + b"\0" + struct.pack("!HH", A, IN),
                False,
            ),
            (
                "name > 255 octets",
                _header(0) + (b"\x3f" + b"a" * 63) * 4 + b"\x04coop\0" + struct.pack("!HH", A, IN),
                False,
            ),
            ("QR=1 (a response)", _header(0x8000) + question, False),
            ("11-byte runt", _header(0)[:11], False),
        ]
        for desc, wire, valid_opt in malformed:
            for tcp in (False, True):
                edns = (1232, False) if valid_opt else None
                self.add_raw("malformed", desc, wire, tcp, edns=edns)


@functools.cache
def load_zone(path: Path) -> dns.zone.Zone:
    return dns.zone.from_file(str(path), origin=ORIGIN, relativize=False, check_origin=False)


def _ancestors(name: dns.name.Name, origin: dns.name.Name) -> list[dns.name.Name]:
    """``name`` and its ancestors down to (and including) ``origin``."""
    out = [name]
    while out[-1] != origin and len(out[-1]) > len(origin):
        out.append(out[-1].parent())
    return out


def zone_files(tmp: Path) -> dict[str, Path]:
    """Every zone a run serves: :data:`ZONES`, engine.zone signed by BIND in ``tmp``
    (:data:`BIND_SIGNED`), and :data:`PRESIGNED`."""
    signed = {k: sign_with_bind(tmp, ZONES["engine"], f) for k, f in BIND_SIGNED.items()}
    return {**ZONES, **signed, **PRESIGNED}


def generate_cases(zones: dict[str, Path]) -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    for key, path in ZONES.items():
        cases += Generator(key, path, rng).generate(protocol=key != "corners")
    cases += Generator("identity", ZONES["engine"], rng).generate_identity()
    for key in sorted(SIGNED):
        cases += Generator(key, zones[key], rng).generate_signed()
    return cases


# --------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------


def _with_id(wire: bytes, qid: int) -> bytes:
    return qid.to_bytes(2, "big") + wire[2:] if len(wire) >= 2 else wire


def exchange_udp(port: int, wires: list[bytes], window: int = 32) -> list[bytes | None]:
    """Send every query (ID = its index) with ``window`` in flight; resend missing once."""
    results: list[bytes | None] = [None] * len(wires)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.connect(("127.0.0.1", port))
        for _round in range(2):
            todo = [i for i, r in enumerate(results) if r is None]
            inflight = 0
            pos = 0
            while pos < len(todo) or inflight:
                while pos < len(todo) and inflight < window:
                    sock.send(_with_id(wires[todo[pos]], todo[pos]))
                    pos += 1
                    inflight += 1
                sock.settimeout(UDP_TIMEOUT)
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    if pos >= len(todo):
                        break  # the rest is not going to be answered
                    inflight = 0  # lost or ignored: refill the window
                    continue
                if len(data) >= 2:
                    qid = int.from_bytes(data[:2], "big")
                    if qid < len(results) and results[qid] is None:
                        results[qid] = data
                        inflight = max(0, inflight - 1)
    return results


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def exchange_tcp(port: int, wires: list[tuple[int, bytes, bool]]) -> dict[int, bytes | None]:
    """One query at a time over a reused connection; a query marked ``alone`` (malformed or
    odd: a server may close the connection after it) gets a connection of its own."""
    results: dict[int, bytes | None] = {}
    conn: socket.socket | None = None
    for qid, wire, alone in wires:
        if alone and conn is not None:
            conn.close()
            conn = None
        try:
            if conn is None:
                conn = socket.create_connection(("127.0.0.1", port), timeout=TCP_TIMEOUT)
            msg = _with_id(wire, qid)
            conn.sendall(len(msg).to_bytes(2, "big") + msg)
            size = int.from_bytes(_recv_exact(conn, 2), "big")
            results[qid] = _recv_exact(conn, size)
        except OSError:
            results[qid] = None
            if conn is not None:
                conn.close()
            conn = None
        if alone and conn is not None:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return results


ALONE_ON_TCP = {"malformed", "opcode", "xfr", "edns-version", "meta-type", "class", "chaos"}


def run_cases(port: int, cases: list[Case]) -> list[bytes | None]:
    udp_idx = [i for i, c in enumerate(cases) if not c.tcp]
    tcp_idx = [i for i, c in enumerate(cases) if c.tcp]
    out: list[bytes | None] = [None] * len(cases)
    # Queries get IDs 0..n-1 by position in the UDP list, and in the TCP list.
    udp = exchange_udp(port, [cases[i].wire for i in udp_idx])
    for j, i in enumerate(udp_idx):
        out[i] = udp[j]
    tcp = exchange_tcp(
        port, [(j, cases[i].wire, cases[i].cat in ALONE_ON_TCP) for j, i in enumerate(tcp_idx)]
    )
    for j, i in enumerate(tcp_idx):
        out[i] = tcp[j]
    return out


# --------------------------------------------------------------------------------------------
# Normalising and comparing
# --------------------------------------------------------------------------------------------

FIELDS = (
    "response",
    "rcode",
    "opcode",
    "flags",
    "question",
    "edns",
    "answer",
    "authority",
    "additional",
)


@dataclass(frozen=True)
class Norm:
    """A response reduced to what is compared, as text.  ``response`` is "ok", "none" (no
    answer), "runt ..." or "unparsable by dnspython ..." (then the header fields are filled
    in and the rest of the message is kept as hex in ``answer``)."""

    response: str
    rcode: str = ""
    opcode: str = ""
    flags: str = ""
    question: tuple[str, ...] = ()
    edns: str = ""
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    size: int = field(default=0, compare=False)  # bytes on the wire: never compared

    def get(self, name: str) -> object:
        return getattr(self, name)

    def show(self) -> str:
        if not self.rcode:
            return self.response
        lines = [] if self.response == "ok" else [self.response]
        lines.append(f"{self.opcode} {self.rcode} flags=[{self.flags}] edns=[{self.edns}]")
        lines += [f"  Q  {q}" for q in self.question]
        for sec in ("answer", "authority", "additional"):
            rrs: tuple[str, ...] = getattr(self, sec)
            lines += [f"  {sec[:2].upper()} {rr}" for rr in rrs]
        return "\n".join(lines)


def _rr_text(rrset: dns.rrset.RRset) -> list[str]:
    owner = rrset.name.to_text().lower()
    out = []
    for rd in rrset:
        text = rd.to_text()
        if rrset.rdtype in NAME_TYPES:
            text = text.lower()
        out.append(
            f"{owner} {rrset.ttl} {_class_text(rrset.rdclass)} {_type_text(rrset.rdtype)} {text}"
        )
    return out


def normalise(wire: bytes | None) -> Norm:
    if wire is None:
        return Norm("none")
    try:
        msg = dns.message.from_wire(wire, one_rr_per_rrset=True)
    except dns.exception.DNSException as exc:
        if len(wire) < 12:
            return Norm(f"runt {wire.hex()}")
        # dnspython refuses some responses (e.g. UPDATE with a non-SOA zone section): keep
        # the header fields comparable and the rest as raw bytes.
        flags = int.from_bytes(wire[2:4], "big")
        return Norm(
            f"unparsable by dnspython ({type(exc).__name__})",
            rcode=dns.rcode.to_text(dns.rcode.Rcode(flags & 0xF)),
            opcode=dns.opcode.to_text(dns.opcode.from_flags(flags)),
            flags=dns.flags.to_text(flags & ~0x7800),
            answer=(f"raw counts+body {wire[4:].hex()}",),
        )
    flags = dns.flags.to_text(msg.flags & ~0x7800) + (" Z" if msg.flags & 0x0040 else "")
    edns = "none"
    if msg.edns >= 0:
        opts = sorted(f"{int(o.otype)}:{o.to_wire().hex()}" for o in msg.options)
        eflags = msg.ednsflags & 0xFFFF  # the version and extended RCODE are compared apart
        etext = dns.flags.edns_to_text(eflags)
        if eflags & 0x7FFF:  # bits with no name yet must not be echoed
            etext += f" {eflags & 0x7FFF:#06x}"
        edns = f"v{msg.edns} udp={msg.payload} flags={etext} opts={','.join(opts)}"

    def section(rrsets: list[dns.rrset.RRset]) -> tuple[str, ...]:
        return tuple(sorted(t for rrset in rrsets for t in _rr_text(rrset)))

    return Norm(
        "ok",
        rcode=dns.rcode.to_text(msg.rcode()),
        opcode=dns.opcode.to_text(msg.opcode()),
        flags=flags,
        question=tuple(
            f"{q.name.to_text()} {_class_text(q.rdclass)} {_type_text(q.rdtype)}"
            for q in msg.question
        ),
        edns=edns,
        answer=section(msg.answer),
        authority=section(msg.authority),
        additional=section(msg.additional),
        size=len(wire),
    )


def differing(a: Norm, b: Norm) -> tuple[str, ...]:
    if a.response != b.response:
        return ("response",)
    return tuple(f for f in FIELDS if a.get(f) != b.get(f))


# --------------------------------------------------------------------------------------------
# Deliberate differences and known bugs
# --------------------------------------------------------------------------------------------


CD_FLAG = 0x0010
SOA_PREFIX = "coop. "  # owner of the SOA record in the authority section, as normalised


def _others_equal(ours: Norm, knot: Norm, *fields: str) -> bool:
    """Every compared field except ``fields`` is equal."""
    return all(ours.get(f) == knot.get(f) for f in FIELDS if f not in fields)


def _flagset(n: Norm) -> set[str]:
    return set(n.flags.split())


def _types(rrs: tuple[str, ...]) -> set[str]:
    return {rr.split()[3] for rr in rrs}


def _edns_options(n: Norm, drop: bool = False) -> set[str] | str:
    """The set of EDNS options in ``n``, or (``drop``) its EDNS text without them."""
    head, _, opts = n.edns.partition(" opts=")
    return head if drop else set(filter(None, opts.split(",")))


def _is_soa_only(rrs: tuple[str, ...]) -> bool:
    return len(rrs) == 1 and rrs[0].startswith(SOA_PREFIX) and rrs[0].split()[3] == "SOA"


@dataclass(frozen=True)
class Deliberate:
    """A difference we keep on purpose.  ``applies`` selects the queries; ``expect`` states
    the exact shape the two answers must have (anything else is still a failure)."""

    key: str
    reason: str
    applies: Callable[[Case], bool]
    expect: Callable[[Case, Norm, Norm], bool]


@dataclass(frozen=True)
class KnownBug:
    """A difference where we are wrong.  ``patch(case, ours, knot)`` turns our answer into
    what it will be once fixed (Knot's, on the fields concerned); the main test compares the
    patched answer, ``test_known_bug`` the real one (strict xfail)."""

    key: str
    reason: str
    applies: Callable[[Case], bool]
    patch: Callable[[Case, Norm, Norm], Norm]


def _truncated_alike(case: Case, ours: Norm, knot: Norm) -> bool:
    if "TC" not in _flagset(ours) or "TC" not in _flagset(knot):
        return False
    if not _others_equal(ours, knot, "rcode", "answer", "authority", "additional"):
        return False
    if not (ours.answer or ours.authority or ours.additional):
        return True  # we send the bare header; Knot keeps the RRsets that fitted
    # Referral whose in-domain glue did not all fit: both send NS and part of the glue;
    # how much fits depends on name compression.
    a, k = set(ours.additional), set(knot.additional)
    return (
        ours.rcode == knot.rcode
        and ours.answer == knot.answer
        and ours.authority == knot.authority
        and (a <= k or k <= a)
    )


def _fits_where_knot_truncates(case: Case, ours: Norm, knot: Norm) -> bool:
    """Knot set TC and kept what fitted; ours, a few bytes smaller, is whole and within
    the client's size (our server's default udp_payload_size is 1232)."""
    limit = 512 if case.edns is None else min(max(case.edns[0], 512), 1232)
    if not 0 < ours.size <= limit:
        return False
    if "TC" in _flagset(ours) or _flagset(knot) != _flagset(ours) | {"TC"}:
        return False
    if not _others_equal(ours, knot, "flags", "answer", "authority", "additional"):
        return False
    sections = ("answer", "authority", "additional")
    return all(set(getattr(knot, s)) <= set(getattr(ours, s)) for s in sections)


def _negative_soa_dropped(case: Case, ours: Norm, knot: Norm) -> bool:
    return (
        "TC" in _flagset(ours)
        and not (ours.answer or ours.authority or ours.additional)
        and _flagset(knot) == _flagset(ours) - {"TC"}
        and knot.rcode in ("NXDOMAIN", "NOERROR")
        and "SOA" not in _types(knot.authority)
        and bool(knot.answer)
        and _others_equal(ours, knot, "rcode", "flags", "answer", "authority", "additional")
    )


def _shorter_cname_chain(case: Case, ours: Norm, knot: Norm) -> bool:
    return (
        set(knot.answer) < set(ours.answer)
        and _types(knot.answer) == {"CNAME"}
        and sum(rr.split()[3] == "CNAME" for rr in ours.answer) > len(knot.answer)
        and not knot.authority
        and not knot.additional
        and (not ours.authority or _is_soa_only(ours.authority))
        and _others_equal(ours, knot, "answer", "authority", "additional")
    )


def _wildcard_ns(case: Case, ours: Norm, knot: Norm) -> bool:
    return (
        ours.rcode == knot.rcode == "NOERROR"
        and not ours.answer
        and _is_soa_only(ours.authority)
        and "AA" in _flagset(ours)
        and _flagset(knot) == _flagset(ours) - {"AA"}
        and not knot.answer
        and _types(knot.authority) == {"NS"}
        and all(rr.startswith("*.") for rr in knot.authority)
        and _others_equal(ours, knot, "flags", "authority")
    )


def _nodata_vs_cname(case: Case, ours: Norm, knot: Norm) -> bool:
    return (
        knot.rcode == "NOERROR"
        and not knot.answer
        and _is_soa_only(knot.authority)
        and any(rr.split()[0] == case.qname and rr.split()[3] == "CNAME" for rr in ours.answer)
        and _others_equal(ours, knot, "rcode", "answer", "authority", "additional")
    )


# -- signed zones ------------------------------------------------------------------------


def _fields(rr: str) -> list[str]:
    """owner, TTL, class, type, RDATA fields (for RRSIG: covered type, algorithm, labels,
    original TTL, ...)."""
    return rr.split(" ")


def _is_signed_negative(rrs: tuple[str, ...]) -> bool:
    """The authority section of a negative answer with DNSSEC: the apex SOA and NSEC or
    NSEC3 records, each with its RRSIGs."""
    soa = [rr for rr in rrs if _fields(rr)[3] == "SOA"]
    if len(soa) != 1 or not soa[0].startswith(SOA_PREFIX):
        return False
    kinds = ("SOA", "NSEC", "NSEC3")
    return all(
        f[3] in kinds or (f[3] == "RRSIG" and f[4] in kinds) for f in map(_fields, rrs)
    ) and any(_fields(rr)[3] == "RRSIG" for rr in rrs)


def _all_rrsigs(case: Case, ours: Norm, knot: Norm) -> bool:
    if "TC" in _flagset(ours) and not case.tcp:  # all of them do not fit, Knot's one does
        return (
            not (ours.answer or ours.authority or ours.additional)
            and _flagset(ours) - {"TC"} == _flagset(knot)
            and all(f[0] == case.qname and f[3] == "RRSIG" for f in map(_fields, knot.answer))
            and _others_equal(ours, knot, "flags", "answer", "authority", "additional")
        )
    return (
        bool(knot.answer)
        and set(knot.answer) < set(ours.answer)
        and all(
            f[0] == case.qname and f[3] == "RRSIG" and f[1] == f[7]  # TTL of the covered set
            for f in map(_fields, ours.answer)
        )
        and _others_equal(ours, knot, "answer")
    )


def _any_rrsig_set(case: Case, ours: Norm, knot: Norm) -> bool:
    types = _types(ours.answer) - {"RRSIG"}
    if _types(knot.answer) != {"RRSIG"} or len(types) != 1:
        return False
    (rtype,) = types
    sigs = {rr for rr in ours.answer if _fields(rr)[3] == "RRSIG"}
    return (
        dns.rdatatype.from_text(rtype) > RRSIG  # the lowest type at the node is RRSIG
        and sigs <= set(knot.answer)
        and all(_fields(rr)[4] == rtype for rr in sigs)
        and any(_fields(rr)[4] == rtype for rr in knot.answer)
        and all(_fields(rr)[0] == case.qname for rr in ours.answer + knot.answer)
        and _others_equal(ours, knot, "answer")
    )


def _wildcard_nsec_proof(case: Case, ours: Norm, knot: Norm) -> bool:
    extra = set(ours.authority) - set(knot.authority)
    return (
        ours.answer == knot.answer
        and _types(knot.answer) == {"NSEC", "RRSIG"}
        and set(knot.authority) < set(ours.authority)
        and all(f[3] == "NSEC" or f[3:5] == ["RRSIG", "NSEC"] for f in map(_fields, extra))
        and _others_equal(ours, knot, "authority")
    )


def _nsec_nodata_vs_cname(case: Case, ours: Norm, knot: Norm) -> bool:
    if not (
        knot.rcode == "NOERROR"
        and not knot.answer
        and (_is_signed_negative(knot.authority) if case.do else _is_soa_only(knot.authority))
    ):
        return False
    if "TC" in _flagset(ours) and not case.tcp:  # following the CNAME, it did not fit
        return (
            not (ours.answer or ours.authority or ours.additional)
            and _flagset(ours) - {"TC"} == _flagset(knot)
            and _others_equal(ours, knot, "rcode", "flags", "authority")
        )
    return any(
        f[0] == case.qname and f[3] == "CNAME" for f in map(_fields, ours.answer)
    ) and _others_equal(ours, knot, "rcode", "answer", "authority", "additional")


def _yxdomain_unproved(case: Case, ours: Norm, knot: Norm) -> bool:
    return (
        ours.rcode == knot.rcode == "YXDOMAIN"
        and not ours.authority
        and _is_signed_negative(knot.authority)
        and _others_equal(ours, knot, "authority")
    )


def _rrset_key(f: list[str]) -> tuple[str, str]:
    """(owner, type) of the RRset a record belongs to, or that an RRSIG covers."""
    return (f[0], f[4] if f[3] == "RRSIG" else f[3])


def _additional_pairs(case: Case, ours: Norm, knot: Norm) -> bool:
    """What fitted of the additional section: all of it is addresses of names in the
    answer or authority RDATA and their RRSIGs; ours never splits an RRset from its
    signatures (Knot keeps RRsets whose RRSIGs it dropped)."""
    if "TC" in _flagset(ours) or not _others_equal(ours, knot, "additional"):
        return False
    named = {_fields(rr)[-1] for rr in ours.answer + ours.authority}
    both = [_fields(rr) for rr in ours.additional + knot.additional]
    if any(f[0] not in named or _rrset_key(f)[1] not in ("A", "AAAA") for f in both):
        return False
    signed = {_rrset_key(f) for f in both if f[3] == "RRSIG"}
    mine = [_fields(rr) for rr in ours.additional]
    rrsets = {_rrset_key(f) for f in mine if f[3] != "RRSIG"}
    sigs = {_rrset_key(f) for f in mine if f[3] == "RRSIG"}
    return sigs <= rrsets and rrsets & signed <= sigs


def _rrsig_ttl_from_rdata(case: Case, ours: Norm, knot: Norm) -> Norm:
    def fixed(rr: str) -> str:
        f = _fields(rr)
        return " ".join([f[0], f[7], *f[2:]]) if f[3] == "RRSIG" else rr

    return replace(ours, answer=tuple(sorted(fixed(rr) for rr in ours.answer)))


def _knot_answer(case: Case, ours: Norm, knot: Norm) -> Norm:
    return replace(
        ours,
        rcode=knot.rcode,
        flags=knot.flags,
        answer=knot.answer,
        authority=knot.authority,
        additional=knot.additional,
    )


DELIBERATE: list[Deliberate] = [
    Deliberate(
        "transfer-refused",
        "AXFR/IXFR are REFUSED until transfers are configured: REFUSED is the RFC 1035 "
        "§4.1.1 code for a refusal by policy. Knot answers NOTAUTH (its ACL denial) over TCP "
        "and for IXFR, NOTIMP for AXFR over UDP; NSD answers NOTIMP for AXFR over UDP and "
        "REFUSED otherwise, like us.",
        lambda c: c.qtype in (AXFR, IXFR),
        lambda c, o, k: (
            o.rcode == "REFUSED"
            and k.rcode in ("NOTAUTH", "NOTIMP")
            and _others_equal(o, k, "rcode")
        ),
    ),
    Deliberate(
        "rrsig-nsec-query-at-cname",
        "QTYPE RRSIG or NSEC at a CNAME (or under a wildcard CNAME): we follow the CNAME as "
        "RFC 1034 §4.3.2 step 3a says for any type other than CNAME (NSD does the same); "
        "Knot answers NODATA because RRSIG and NSEC may live beside a CNAME (RFC 2181 §10.1, "
        "RFC 4035 §2.5). The zones are unsigned, so there is no RRSIG/NSEC to return "
        "(signed zones: see nsec-query-at-cname-nsec3 and the known bug dnssec-qtype-at-cname).",
        lambda c: c.qtype in (RRSIG, NSEC) and "cname" in c.tags and c.zone not in SIGNED,
        _nodata_vs_cname,
    ),
    Deliberate(
        "cname-chain-limit",
        "CNAME chains are followed for up to 16 links inside the zone (RFC 1034 §4.3.2 sets "
        "no limit; every server needs one against long chains); Knot stops after 5 CNAMEs, "
        "NSD follows all 20 of the test chain. The resolver continues from where the answer "
        "stops either way.",
        lambda c: "cname" in c.tags,
        _shorter_cname_chain,
    ),
    Deliberate(
        "wildcard-ns-undefined",
        "A wildcard owning an NS RRset (RFC 4592 §4.2: semantics undefined, to be avoided): "
        "for names it matches we answer NODATA (AA, SOA); Knot sends a referral whose NS "
        "owner is the literal '*' name, NSD synthesises an authoritative NS answer. Note: "
        "ours comes from the branch of engine/lookup.py at_node() commented 'only reached "
        "for DS', so it is a by-product rather than a design.",
        lambda c: "wildcard-ns" in c.tags,
        _wildcard_ns,
    ),
    Deliberate(
        "qtype-0",
        "QTYPE 0 is reserved (RFC 6895 §3.1); we answer it like any unknown type (NODATA, "
        "as NSD does), Knot answers NOTIMP.",
        lambda c: c.qtype == 0,
        lambda c, o, k: (
            o.rcode == "NOERROR"
            and k.rcode == "NOTIMP"
            and _others_equal(o, k, "rcode", "flags", "answer", "authority", "additional")
        ),
    ),
    Deliberate(
        "qclass-any-refused",
        "QCLASS ANY (255): we only serve class IN and REFUSE it like other classes; Knot "
        "(with AA) and NSD (without AA) answer from the IN data. RFC 1035 §3.2.5 allows "
        "QCLASS * but no RFC requires an authoritative server to answer it.",
        lambda c: c.qclass == CLASS_ANY and c.opcode == 0,
        lambda c, o, k: (
            o.rcode == "REFUSED"
            and not (o.answer or o.authority or o.additional)
            and _others_equal(o, k, "rcode", "flags", "answer", "authority", "additional")
        ),
    ),
    Deliberate(
        "no-extended-error-on-refused",
        "Knot (and NSD) add Extended DNS Error 20 'Not Authoritative' (RFC 8914 §4.21) to "
        "REFUSED answers for names outside the zone; EDE is optional and we send none.",
        lambda c: c.edns is not None,
        lambda c, o, k: (
            o.rcode == k.rcode == "REFUSED"
            and _edns_options(k) == _edns_options(o) | {"15:0014"}
            and _edns_options(o, drop=True) == _edns_options(k, drop=True)
            and _others_equal(o, k, "edns")
        ),
    ),
    Deliberate(
        "chaos-any",
        "CH ANY for a configured identification name: we answer with the TXT record, as NSD "
        "does; Knot REFUSES everything but TXT there.",
        lambda c: c.qclass == CH and c.qtype == ANY,
        lambda c, o, k: (
            o.rcode == "NOERROR"
            and _types(o.answer) == {"TXT"}
            and k.rcode == "REFUSED"
            and not k.answer
            and _others_equal(o, k, "rcode", "flags", "answer")
        ),
    ),
    Deliberate(
        "formerr-without-question",
        "FORMERR answers carry the header only (RFC 1035 §4.1.1 does not require the "
        "question, and a malformed message may not have a trustworthy one); Knot echoes "
        "the question when it could parse it.",
        lambda c: c.cat == "malformed",
        lambda c, o, k: (
            o.rcode == k.rcode == "FORMERR"
            and not o.question
            and bool(k.question)
            and _others_equal(o, k, "question")
        ),
    ),
    Deliberate(
        "formerr-where-knot-is-silent",
        "Malformed queries (QDCOUNT=2, truncated or compressed question, bad label, name "
        "over 255 octets, a second OPT over TCP, ...) get FORMERR from us (RFC 1035 §4.1.1; "
        "NSD answers most of them the same way); Knot drops them without an answer.",
        lambda c: c.cat == "malformed",
        lambda c, o, k: k.response == "none" and o.rcode == "FORMERR",
    ),
    Deliberate(
        "opt-owner-not-root",
        "An OPT record whose owner is not the root is malformed (RFC 6891 §6.1.2: the owner "
        "MUST be 0): FORMERR from us and from NSD; Knot ignores the owner and answers.",
        lambda c: c.cat == "malformed" and c.desc.startswith("OPT with non-root owner"),
        lambda c, o, k: o.rcode == "FORMERR" and k.rcode == "NOERROR",
    ),
    Deliberate(
        "notify-update-not-implemented",
        "NOTIFY and UPDATE get NOTIMP: we implement neither (RFC 1035 §4.1.1 NOTIMP; NSD "
        "answers UPDATE the same way). Knot checks its ACLs first and answers NOTAUTH, or "
        "FORMERR for a NOTIFY/UPDATE it cannot parse (RFC 1996, RFC 2136 §3).",
        lambda c: c.opcode in (4, 5),
        lambda c, o, k: (
            o.rcode == "NOTIMP"
            and k.rcode in ("NOTAUTH", "FORMERR")
            and _others_equal(o, k, "rcode")
        ),
    ),
    Deliberate(
        "truncated-content",
        "When an answer does not fit (TC=1) we send the header and question only, and for a "
        "referral the NS RRset and as much glue as fits (RFC 2181 §9, RFC 9471); Knot keeps "
        "the RRsets that fitted, with the RCODE of the part it processed. Clients retry over "
        "TCP either way; how much glue fits differs by a few bytes of name compression.",
        lambda c: not c.tcp,
        _truncated_alike,
    ),
    Deliberate(
        "fits-where-knot-truncates",
        "An answer within a few bytes of the client's payload size: ours fits whole (its "
        "names compressed wherever RFC 1035 §4.1.4 allows; never the RRSIG signer, RFC 4034 "
        "§3.1.7), Knot's is larger, so Knot sets TC and keeps what fitted. Seen on a signed "
        "referral with glue at 512 bytes (ours 511, Knot's 538 over TCP).",
        lambda c: not c.tcp,
        _fits_where_knot_truncates,
    ),
    Deliberate(
        "negative-answer-soa-does-not-fit",
        "A DNAME/CNAME answer whose negative SOA (and, with DO, its NSEC/NSEC3 proof) does "
        "not fit in 512 bytes: we set TC (the SOA is required, RFC 2308 §3, and so is the "
        "proof, RFC 4035 §3.1.3); Knot sends the chain without the SOA and without TC (NSD "
        "sets TC too).",
        lambda c: not c.tcp and not (c.zone in SIGNED and c.qtype == RRSIG),
        _negative_soa_dropped,
    ),
    Deliberate(
        "yxdomain-without-soa",
        "YXDOMAIN after a DNAME substitution overflows (RFC 6672 §2.2): we send the DNAME "
        "(and the chain before it) with an empty authority section, as NSD does; Knot adds "
        "the zone's SOA there. RFC 6672 asks for neither.",
        lambda c: "dname" in c.tags,
        lambda c, o, k: (
            o.rcode == k.rcode == "YXDOMAIN"
            and not o.authority
            and _is_soa_only(k.authority)
            and _others_equal(o, k, "authority")
        ),
    ),
    # -- signed zones -----------------------------------------------------------------------
    Deliberate(
        "rrsig-qtype-all-signatures",
        "QTYPE RRSIG: we answer every RRSIG at the name (or, synthesised, at the wildcard), "
        "each at the TTL of the RRset it covers, as NSD does; Knot answers the "
        "RRSIGs of one type only (the lowest). No RFC says which: RFC 4035 §3.1 only asks "
        "for RRSIGs alongside the RRsets of other QTYPEs, and RRSIGs of different types are "
        "not one RRset (RFC 4034 §3, RFC 2181 §5.2).",
        lambda c: c.zone in SIGNED and c.qtype == RRSIG,
        _all_rrsigs,
    ),
    Deliberate(
        "any-rrsig-set-not-an-rrset",
        "QTYPE ANY at a name whose lowest type is above RRSIG (46), e.g. only TYPE65534: "
        "both answer one RRset minimally (RFC 8482 §4.1), we the lowest type other than "
        "RRSIG with its signatures (with DO); Knot takes the RRSIGs as that RRset and sends "
        "them alone, without the data they cover (even without DO). NSD sends the data.",
        lambda c: c.zone in SIGNED and c.qtype == ANY,
        _any_rrsig_set,
    ),
    Deliberate(
        "wildcard-nsec-qtype-proof",
        "QTYPE NSEC at a name a wildcard matches (NSEC zone): both synthesise the wildcard's "
        "NSEC at the QNAME; we add the NSEC proving no closer match, required for every "
        "wildcard answer (RFC 4035 §3.1.3.3; NSD adds it too), Knot omits it for this type.",
        lambda c: (
            c.zone in NSEC_ZONES
            and c.qtype == NSEC
            and c.do
            and "wildcard" in c.tags
        ),
        _wildcard_nsec_proof,
    ),
    Deliberate(
        "nsec-query-at-cname-nsec3",
        "QTYPE NSEC at a CNAME in an NSEC3 zone, where no NSEC exists: we follow the CNAME "
        "(RFC 1034 §4.3.2 step 3a), as NSD does; Knot answers NODATA (with the NSEC3 proof "
        "when DO). As rrsig-nsec-query-at-cname for unsigned zones.",
        lambda c: c.zone in SIGNED - NSEC_ZONES and c.qtype == NSEC and "cname" in c.tags,
        _nsec_nodata_vs_cname,
    ),
    Deliberate(
        "yxdomain-without-proof",
        "YXDOMAIN after a DNAME substitution overflows, with DO: we send the signed DNAME and "
        "an empty authority section, as NSD does; Knot adds the signed SOA and an NSEC or "
        "NSEC3 record as if denying a name. There is nothing to deny (RFC 6672 §2.2, §5.3 "
        "ask for no proof); see yxdomain-without-soa.",
        lambda c: c.zone in SIGNED and "dname" in c.tags and c.do,
        _yxdomain_unproved,
    ),
    Deliberate(
        "additional-rrsig-pairs",
        "When not all of the additional section fits (DO, small payloads), we add address "
        "RRsets with their RRSIGs or not at all; Knot keeps an RRset whose RRSIGs did not fit "
        "(RFC 4035 §3.1.1 allows both: the RRSIGs MUST go with the RRset, which MAY be kept "
        "without them; no TC either way), and sometimes leaves out sibling glue that fits "
        "(we and NSD keep it). NSD fills in yet another order (A records before AAAA).",
        lambda c: c.zone in SIGNED and c.do and not c.tcp,
        _additional_pairs,
    ),
]


def _drop_cd(case: Case, ours: Norm, knot: Norm) -> Norm:
    return replace(ours, flags=" ".join(f for f in ours.flags.split() if f != "CD"))


def _stop_at_synthesised_cname(case: Case, ours: Norm, knot: Norm) -> Norm:
    def first_step(rr: str) -> bool:  # the DNAME above the QNAME, the CNAME it synthesised
        owner, rtype = rr.split()[0], rr.split()[3]
        return owner == case.qname or (rtype == "DNAME" and case.qname.endswith("." + owner))

    kept = tuple(rr for rr in ours.answer if first_step(rr))
    return replace(ours, rcode="NOERROR", answer=kept, authority=(), additional=())


def _add_opt(case: Case, ours: Norm, knot: Norm) -> Norm:
    if ours.rcode != "FORMERR" or ours.edns != "none":
        return ours
    return replace(ours, edns=f"v0 udp=1232 flags={'DO' if case.do else ''} opts=")


# Fixed before: CD cleared, FORMERR keeps the OPT, DNAME+CNAME.
KNOWN_BUGS: list[KnownBug] = []  # none left: RRSIG TTLs and RRSIG/NSEC at a CNAME fixed


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    cases: list[Case]
    ours: list[Norm]
    knot: list[Norm]
    seconds: float
    nsd: dict[int, Norm] = field(default_factory=dict)


# The "identity" run serves engine.zone with the identification answers configured alike.
IDENTITY = {
    "server_id": "ns1.diff.test",
    "hostname": "ns1.diff.test",
    "version": "diff-1.0",
    "nsid": "diff-nsid",
}


def runs(zones: dict[str, Path]) -> list[tuple[str, Path, bool]]:
    """(case zone key, zone file, identity configured) for each pair of servers started."""
    plain = [(key, zones[key], False) for key in ZONES]
    signed = [(key, zones[key], False) for key in sorted(SIGNED)]
    return plain + [("identity", zones["engine"], True)] + signed


Starter = Callable[[Path, int, bool], refservers.RefServer]


def _start_ours(zone: Path, port: int, identity: bool) -> refservers.RefServer:
    argv = [
        sys.executable,
        "-m",
        "nameserver",
        "serve",
        "--zone",
        f"{ORIGIN}={zone}",
        "--listen",
        f"127.0.0.1@{port}",
        "--log-level",
        "warning",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="diff-ours-"))
    if identity:
        config = workdir / "config.yaml"
        config.write_text("identity:\n" + "".join(f"  {k}: {v}\n" for k, v in IDENTITY.items()))
        argv += ["--config", str(config)]
    return refservers.start_process("ours", argv, ORIGIN, port, cwd=ROOT, workdir=workdir)


def _start_knot(zone: Path, port: int, identity: bool) -> refservers.RefServer:
    # Empty values switch the answers off (REFUSED, no NSID), which is our default.
    keys = {"identity": "server_id", "version": "version", "nsid": "nsid"}
    opts = {k: f'"{IDENTITY[v] if identity else ""}"' for k, v in keys.items()}
    return refservers.start_knot(zone, ORIGIN, port, server_options=opts)


def _start_nsd(zone: Path, port: int, identity: bool) -> refservers.RefServer:
    if identity:
        opts = {
            "identity": f'"{IDENTITY["server_id"]}"',
            "version": f'"{IDENTITY["version"]}"',
            "nsid": f'"ascii_{IDENTITY["nsid"]}"',
        }
    else:
        opts = {"hide-identity": "yes", "hide-version": "yes"}
    return refservers.start_nsd(zone, ORIGIN, port, server_options=opts)


def _run_server(start: Starter, zone: Path, identity: bool, cases: list[Case]) -> list[Norm]:
    for attempt in range(3):
        port = refservers.free_port()
        server = start(zone, port, identity)
        try:
            try:
                server.wait_ready(30)
            except refservers.ServerStartError:
                if attempt == 2:
                    raise
                continue
            return [normalise(w) for w in run_cases(port, cases)]
        finally:
            server.stop()
    raise AssertionError("unreachable")


def collect(zones: dict[str, Path], with_nsd: bool = True) -> Results:
    started = time.monotonic()
    cases = generate_cases(zones)
    ours: list[Norm] = [Norm("none")] * len(cases)
    knot: list[Norm] = [Norm("none")] * len(cases)
    nsd: dict[int, Norm] = {}
    with ThreadPoolExecutor(2) as pool:
        for key, path, identity in runs(zones):
            idx = [i for i, c in enumerate(cases) if c.zone == key]
            sub = [cases[i] for i in idx]
            ours_f = pool.submit(_run_server, _start_ours, path, identity, sub)
            knot_f = pool.submit(_run_server, _start_knot, path, identity, sub)
            for i, o, k in zip(idx, ours_f.result(), knot_f.result(), strict=True):
                ours[i], knot[i] = o, k
            diff = [i for i in idx if ours[i] != knot[i]]
            if with_nsd and diff and refservers.find_binary("nsd"):
                answers = _run_server(_start_nsd, path, identity, [cases[i] for i in diff])
                nsd.update(zip(diff, answers, strict=True))
    return Results(cases, ours, knot, time.monotonic() - started, nsd)


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return zone_files(tmp_path_factory.mktemp("diff-signed"))


@pytest.fixture(scope="module")
def results(zones: dict[str, Path]) -> Results:
    if refservers.find_binary("knotd") is None:
        pytest.skip("knotd not installed (Debian package knot)")
    return collect(zones)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def patched(res: Results, i: int, skip: str = "") -> Norm:
    """Our answer with every applicable known bug (except ``skip``) patched out."""
    case, ours = res.cases[i], res.ours[i]
    for bug in KNOWN_BUGS:
        if bug.key != skip and bug.applies(case):
            ours = bug.patch(case, ours, res.knot[i])
    return ours


def explain(res: Results, i: int, ours: Norm) -> str | None:
    """ "" if equal to Knot's, the DELIBERATE key that accepts the difference, or None."""
    case, knot = res.cases[i], res.knot[i]
    if ours == knot:
        return ""
    for rule in DELIBERATE:
        if rule.applies(case) and rule.expect(case, ours, knot):
            return rule.key
    return None


def classify(res: Results) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
    """-> (deliberate key -> case indexes, known-bug key -> indexes, unexplained indexes)."""
    deliberate: dict[str, list[int]] = defaultdict(list)
    bugs: dict[str, list[int]] = defaultdict(list)
    unexplained: list[int] = []
    for i, case in enumerate(res.cases):
        if res.ours[i] == res.knot[i]:
            continue
        fixed = patched(res, i)
        for bug in KNOWN_BUGS:
            if bug.applies(case) and bug.patch(case, res.ours[i], res.knot[i]) != res.ours[i]:
                bugs[bug.key].append(i)
        key = explain(res, i, fixed)
        if key is None:
            unexplained.append(i)
        elif key:
            deliberate[key].append(i)
    return deliberate, bugs, unexplained


def describe(res: Results, i: int) -> str:
    case = res.cases[i]
    ours, knot = res.ours[i], res.knot[i]
    fields = ", ".join(differing(ours, knot))
    lines = [f"[{case.zone}/{case.cat}] {case.desc}   differs in: {fields}"]
    lines += ["  ours:"] + ["    " + x for x in ours.show().splitlines()]
    lines += ["  knot:"] + ["    " + x for x in knot.show().splitlines()]
    if i in res.nsd:
        lines.append(f"  nsd: {nsd_opinion(res, i)}")
        if "neither" in lines[-1]:
            lines += ["    " + x for x in res.nsd[i].show().splitlines()]
    return "\n".join(lines)


def nsd_opinion(res: Results, i: int) -> str:
    """Which side NSD takes on each field where we and Knot differ."""
    nsd, ours, knot = res.nsd[i], res.ours[i], res.knot[i]
    sides: dict[str, list[str]] = defaultdict(list)
    for f in differing(ours, knot):
        value = nsd.get(f)
        side = "ours" if value == ours.get(f) else "knot" if value == knot.get(f) else "neither"
        sides[side].append(f)
    return "; ".join(f"like {side} on {', '.join(fs)}" for side, fs in sides.items())


def diff_classes(res: Results, indexes: list[int]) -> dict[str, list[int]]:
    classes: dict[str, list[int]] = defaultdict(list)
    for i in indexes:
        case = res.cases[i]
        zone = f"{case.zone}/" if case.zone in SIGNED else ""
        classes[f"{zone}{case.cat}: {'/'.join(differing(res.ours[i], res.knot[i]))}"].append(i)
    return classes


def report(res: Results, indexes: list[int], limit: int = MAX_EXAMPLES) -> str:
    classes = diff_classes(res, indexes)
    out = [f"{len(indexes)} unexplained differences out of {len(res.cases)} queries:"]
    out += [f"  {len(v):5d}  {k}" for k, v in sorted(classes.items(), key=lambda kv: -len(kv[1]))]
    shown = 0
    for members in classes.values():  # one example per class first, then more
        if shown < limit:
            out.append(describe(res, members[0]))
            shown += 1
    for members in classes.values():
        for i in members[1:]:
            if shown >= limit:
                break
            out.append(describe(res, i))
            shown += 1
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_query_mix_is_broad(zones: dict[str, Path]) -> None:
    all_cases = generate_cases(zones)
    cases = [c for c in all_cases if c.zone not in SIGNED]
    assert 2000 <= len(cases) <= 8000, len(cases)
    cats = Counter(c.cat for c in cases)
    for cat in (
        "apex",
        "owner",
        "delegation",
        "below-delegation",
        "glue-or-occluded",
        "ent",
        "wildcard",
        "dname",
        "cname",
        "nxdomain",
        "outside",
        "case",
        "size",
        "xfr",
        "chaos",
        "class",
        "opcode",
        "edns-version",
        "edns-option",
        "header-flags",
        "meta-type",
        "malformed",
        "nsid",
    ):
        assert cats[cat] > 0, cat
    assert sum(c.tcp for c in cases) >= 200
    for key in sorted(SIGNED):
        signed = [c for c in all_cases if c.zone == key]
        assert 800 <= len(signed) <= 1600, (key, len(signed))
        assert sum(c.do for c in signed) >= 0.6 * len(signed), key
        assert sum(not c.do for c in signed) >= 0.1 * len(signed), key
        cats = Counter(c.cat for c in signed)
        for cat in (
            "apex",
            "owner",
            "cname",
            "dname",
            "wildcard",
            "ent",
            "nxdomain",
            "signed-delegation",
            "unsigned-delegation",
            "glue-or-occluded",
            "size",
            "case",
        ):
            assert cats[cat] > 0, (key, cat)
        if key != "engine-nsec":
            assert cats["nsec3-owner"] > 0, key
        types = {c.qtype for c in signed if c.do}
        assert {RRSIG, NSEC, NSEC3, DNSKEY, NSEC3PARAM, DS, ANY} <= types, key
        sizes = {(c.edns, c.tcp) for c in signed if c.cat == "size"}
        assert {((512, True), False), ((1232, True), False), ((512, True), True)} <= sizes
    assert generate_cases(zones) == all_cases, "the query mix must be deterministic"


def test_same_answers_as_knot(results: Results) -> None:
    deliberate, bugs, unexplained = classify(results)
    print(
        f"{len(results.cases)} queries in {results.seconds:.1f} s; deliberate: "
        + ", ".join(f"{k}={len(v)}" for k, v in deliberate.items())
        + "; known bugs: "
        + ", ".join(f"{k}={len(v)}" for k, v in bugs.items())
    )
    assert not unexplained, report(results, unexplained)
    stale = [r.key for r in DELIBERATE if r.key not in deliberate]
    assert not stale, f"DELIBERATE entries that no query needs any more: {stale}"


class KnownBugPresent(AssertionError):
    """The expected failure of ``test_known_bug``; any other failure there is real."""


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(
            b,
            id=b.key,
            marks=pytest.mark.xfail(strict=True, raises=KnownBugPresent, reason=b.reason),
        )
        for b in KNOWN_BUGS
    ],
)
def test_known_bug(results: Results, bug: KnownBug) -> None:
    """Where we are wrong the answer must be Knot's (up to the deliberate differences)."""
    members = [i for i, c in enumerate(results.cases) if bug.applies(c)]
    assert members, f"{bug.key}: no generated query is in this class"
    wrong = [i for i in members if explain(results, i, patched(results, i, skip=bug.key)) is None]
    if wrong:
        raise KnownBugPresent(report(results, wrong, limit=5))


if __name__ == "__main__":
    res = collect(zone_files(Path(tempfile.mkdtemp(prefix="diff-signed-"))))
    d, b, u = classify(res)
    print(f"{len(res.cases)} queries, {res.seconds:.1f} s")
    for k, v in d.items():
        print(f"deliberate {k}: {len(v)}")
    for k, v in b.items():
        print(f"known bug {k}: {len(v)}")
    print(report(res, u, limit=int(sys.argv[1]) if len(sys.argv) > 1 else 200))
