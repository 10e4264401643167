#!/usr/bin/env python3
"""Deterministic generator of a realistic ``.coop`` TLD zone (RFC 1035 master file).

Usage::

    python benchmarks/genzone.py --delegations 5000 [--seed 1844] [-o zones/coop.zone]

The output is byte-for-byte identical for the same arguments.  Only the standard
library is used, all randomness comes from private ``random.Random`` instances or from
a keyed integer hash, and the zone is streamed, so a million delegations take seconds
and little memory.

Zone layout
-----------
* apex ``coop.``: SOA, four NS (two in-zone under ``nic.coop``, two out of zone), TXT;
* ``nic.coop``: registry hosts and a set of commented corner cases for resolver-logic
  tests (wildcards, CNAME chains and loops, DNAME, empty non-terminal, ...);
* a handful of fixed ``test-*.coop`` delegations (glue, sibling glue, the one
  deliberately missing glue, DS, occluded data, NS hosted under ``nic.coop``);
* *N* generated delegations ``<label>.coop`` (see :class:`DelegationPlan`).

Delegation labels are an O(1) function of (index, N, seed): ``genqueries.py`` can
re-derive any of them without generating the zone.  All addresses are documentation
ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
from collections.abc import Iterator
from random import Random
from typing import NamedTuple, TextIO

ORIGIN = "coop."
SERIAL = 2026112301
DEFAULT_SEED = 1844  # the year of the Rochdale Pioneers

_M64 = (1 << 64) - 1

# ---------------------------------------------------------------------------
# Word lists used to build realistic labels
# ---------------------------------------------------------------------------

# Descriptors and places.  Letters only, none starts with "xn" or "test".
_DESCRIPTORS = (
    "green", "valley", "river", "prairie", "harvest", "sunrise", "maple", "oak", "cedar",
    "pine", "lake", "mountain", "coastal", "heritage", "unity", "common", "people",
    "farmers", "growers", "dairy", "grain", "organic", "fair", "local", "citizens",
    "workers", "artisan", "community", "mutual", "united", "rural", "urban", "metro",
    "county", "pioneer", "liberty", "frontier", "summit", "bay", "harbor", "island",
    "delta", "plains", "mesa", "canyon", "ridge", "meadow", "orchard", "vineyard", "apple",
    "berry", "cherry", "honey", "wheat", "corn", "rice", "cotton", "coffee", "cocoa", "tea",
    "sugar", "olive", "citrus", "fresh", "golden", "silver", "blue", "red", "evergreen",
    "bright", "clear", "solar", "wind", "hydro", "electric", "riverside", "lakeside",
    "hillside", "seaside", "forest", "timber", "stone", "iron", "copper", "granite",
    "spring", "autumn", "winter", "summer", "north", "south", "east", "west", "central",
    "boston", "portland", "austin", "madison", "denver", "seattle", "oakland", "berlin",
    "lyon", "milano", "bologna", "bristol", "leeds", "dublin", "cork", "auckland",
    "nairobi", "kampala", "manila", "quebec", "toronto", "winnipeg", "halifax", "regina",
    "rochdale", "mondragon", "emilia", "kerala", "gujarat", "accra", "lima", "quito",
    "cusco", "oaxaca", "chiapas", "sonoma", "napa", "vermont", "maine", "iowa", "dakota",
    "kansas", "ozark", "appalachian", "cascade", "sierra", "pacific", "atlantic", "gulf",
    "highland", "lowland", "midland", "heartland", "homestead", "village", "townsend",
    "fairview", "greenfield", "springfield", "brookside", "willow", "aspen", "birch",
)

# Organisation words (what the co-operative is or does).
_ORGS = (
    "coop", "cooperative", "farm", "farms", "foods", "market", "grocery", "credit",
    "housing", "energy", "power", "electric", "water", "telecom", "network", "bank",
    "insurance", "mutual", "dairy", "creamery", "bakery", "brewing", "coffee", "organics",
    "growers", "producers", "artisans", "workers", "bikes", "books", "health", "care",
    "pharmacy", "media", "radio", "press", "tech", "software", "design", "builders",
)

_REGIONS = ("north", "south", "east", "west", "central", "upper", "lower", "greater", "new",
            "old")

_ORG_SUFFIXES = ("coop", "ec", "fcu", "cu", "rec")

_BRANDS = (
    "farm2table", "coop4all", "food4all", "power2people", "seed2plate", "bean2cup",
    "grow4good", "share2care", "roots2fruits", "field2fork", "hands4hire", "books4all",
    "bikes4good", "web4coops", "data4good", "net2coop", "sun4all", "wind2watts",
)

# Latin-script words with diacritics for IDN labels (all IDNA 2003 round-trip clean).
_IDN_PREFIXES = (
    "coopérative", "société", "épicerie", "crèmerie", "fromagère", "bäckerei", "käserei",
    "bürgerenergie", "müllerei", "lechería", "panadería", "agrícola", "cooperación",
    "spółdzielnia", "družstvo", "szövetkezet", "kooperatîv", "jäätelö",
)
_IDN_SUFFIXES = (
    "genossenschaft-für-alle", "coopérative", "société", "épicerie", "bäckerei",
    "cooperación", "spółdzielnia", "szövetkezet", "lechería", "družstvo", "kööperatiivi",
)

# Hyphen-free fillers used to pad labels to exactly 63 octets.
_FILLERS = (
    "thecooperativesocietyofworkersandconsumersofthegreaterregionofthenorth",
    "mutualaidandagriculturalmarketingassociationincorporatedlimitedliability",
    "peoplesownedandoperatedhousingandcommunitylandtrustfederationofthewest",
    "ruralelectricmembershipcorporationandtelephonecooperativeofthevalley",
)

# Numbers appended to stems once the plain stems are used up (distinct, realistic).
_NUMBERS = tuple(dict.fromkeys(
    [str(n) for n in range(1, 100)]
    + [str(n) for n in (100, 101, 111, 123, 150, 180, 200, 202, 247, 250, 300, 321, 360,
                        365, 400, 404, 500, 555, 600, 700, 707, 777, 800, 808, 888, 900,
                        911, 999, 1000, 1234, 1844, 1895, 1900, 1921, 1937, 1948, 1955,
                        1966, 1970, 1975, 1980, 1984, 1990, 1995, 1999, 2000, 2001, 2005,
                        2010, 2012, 2015, 2018, 2020, 2021, 2022, 2023, 2024, 2025, 2026)]
))

_RESERVED_LABELS = frozenset({"nic", "www", "whois"})


@functools.cache
def _stems() -> tuple[str, ...]:
    """All distinct base labels.  Every stem ends with a letter (digits are appended)."""
    stems: list[str] = []
    stems += [d + o for d in _DESCRIPTORS for o in _ORGS]
    stems += [d + "-" + o for d in _DESCRIPTORS for o in _ORGS[::2]]
    stems += [r + "-" + d + "-" + o for r in _REGIONS for d in _DESCRIPTORS[::8]
              for o in _ORGS[::3]]
    letters = "abcdeghklmnprstw"
    stems += [a + b + c + s for a in letters[:8] for b in letters[2:10]
              for c in letters[6:14] for s in _ORG_SUFFIXES[:2]]
    stems += [d + "-" + s for d in _DESCRIPTORS for s in _ORG_SUFFIXES[1:]]
    stems += list(_BRANDS)
    out = tuple(s for s in dict.fromkeys(stems)
                if s not in _RESERVED_LABELS and not s.startswith(("test", "xn")))
    assert all(s[-1].isalpha() and "--" not in s for s in out)
    return out


# ---------------------------------------------------------------------------
# Keyed hashing and a cheap bijection on [0, m)
# ---------------------------------------------------------------------------

def _mix64(z: int) -> int:
    """splitmix64 finaliser: a bijection on 64-bit integers with good avalanche."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class _Permutation:
    """Pseudo-random permutation of ``range(m)`` (xorshift-multiply + cycle walking)."""

    def __init__(self, m: int, key: int) -> None:
        self.m = m
        bits = max(4, (m - 1).bit_length())
        self.mask = (1 << bits) - 1
        self.shift = bits // 2 + 1
        rng = Random(key)
        self.rounds = tuple((rng.getrandbits(bits) | 1, rng.getrandbits(bits))
                            for _ in range(3))

    def __call__(self, x: int) -> int:
        mask, shift, m = self.mask, self.shift, self.m
        while True:
            for mul, add in self.rounds:
                x = (x * mul + add) & mask
                x ^= x >> shift
            if x < m:
                return x


# ---------------------------------------------------------------------------
# Delegation plan
# ---------------------------------------------------------------------------

# Name-server arrangement of a delegation, with its share (out of 65536).
NS_EXTERNAL = "external"        # 75 %: every NS out of zone (ns1.hostingNN.net.)
NS_INBAILIWICK = "inbailiwick"  # 10 %: every NS is ns<k>.<label>.coop with A+AAAA glue
NS_MIXED = "mixed"              #  7 %: ns1.<label>.coop (glue) + out-of-zone servers
NS_SIBLING = "sibling"          #  3 %: NS under another delegation that carries the glue
NS_PARKED = "parked"            #  5 %: dns1/dns2.nic.coop (authoritative in-zone data)
_NS_MODES = ((49152, NS_EXTERNAL), (55706, NS_INBAILIWICK), (60294, NS_MIXED),
             (62260, NS_SIBLING), (65536, NS_PARKED))

IDN_SHARE = 1966       # /65536 ~ 3 %
LONG_SHARE = 655       # /65536 ~ 1 %
SIGNED_SHARE = 9830    # /65536 = 15 %
OCCLUDED_EVERY = 2000  # delegation i has occluded data iff i % 2000 == 99


class Delegation(NamedTuple):
    index: int
    label: str        # relative to coop., e.g. "greenfarm" or "xn--..."
    kind: str         # "ascii", "idn" or "long" (63 octets)
    ns_mode: str      # one of the NS_* constants
    ns_count: int     # 2..4 (parked: always 2)
    signed: bool      # has a DS RRset
    occluded: bool    # has (deliberately) occluded data below the cut


class DelegationPlan:
    """O(1) description of generated delegation *i* for a zone of *n* delegations."""

    def __init__(self, n: int, seed: int = DEFAULT_SEED) -> None:
        if n < 0:
            raise ValueError("number of delegations must be >= 0")
        self.n = n
        self.seed = seed
        self._stems = _stems()
        # Label space: every stem, plus numbered variants once n exceeds the stems.
        self._space = max(n, len(self._stems)) * 5 // 4
        self._perm = _Permutation(self._space, _mix64(seed & _M64) ^ 0x636F6F70)
        self._key = _mix64((seed * 0x9E3779B97F4A7C15 + 0x6E6963) & _M64)

    def __len__(self) -> int:
        return self.n

    def _hash(self, i: int) -> int:
        return _mix64((self._key + i * 0xD1B54A32D192ED03) & _M64)

    def _ascii_label(self, x: int) -> str:
        stems = self._stems
        k, s = divmod(x, len(stems))
        if not k:
            return stems[s]
        if k <= len(_NUMBERS):  # rotate the number list per stem: still injective in k
            return stems[s] + _NUMBERS[(k - 1 + s * 7) % len(_NUMBERS)]
        return stems[s] + str(10000 + k)

    def _label(self, i: int, h: int) -> tuple[str, str]:
        label = self._ascii_label(self._perm(i))
        sel = h & 0xFFFF
        if sel < IDN_SHARE:
            # "<unicode word>-<label>" or "<label>-<unicode word>": the unicode part has no
            # hyphen and is non-ASCII, so distinct ASCII labels give distinct IDN labels.
            pick = (h >> 56) & 0xFF
            if pick & 1:
                ulabel = _IDN_PREFIXES[pick % len(_IDN_PREFIXES)] + "-" + label
            else:
                ulabel = label + "-" + _IDN_SUFFIXES[pick % len(_IDN_SUFFIXES)]
            alabel = ulabel.encode("idna").decode("ascii")
            if len(alabel) <= 63:
                return alabel, "idn"
        elif sel < IDN_SHARE + LONG_SHARE:
            # "<hyphen-free filler>-<label>", exactly 63 octets.  The filler has no hyphen,
            # so the label after the first hyphen is recovered: injective.
            filler = _FILLERS[(h >> 56) % len(_FILLERS)]
            return filler[: 62 - len(label)] + "-" + label, "long"
        return label, "ascii"

    def label(self, i: int) -> str:
        """Label (relative to ``coop.``) of generated delegation *i*."""
        return self._label(i, self._hash(i))[0]

    def signed(self, i: int) -> bool:
        return ((self._hash(i) >> 32) & 0xFFFF) < SIGNED_SHARE

    def delegation(self, i: int) -> Delegation:
        h = self._hash(i)
        label, kind = self._label(i, h)
        mode_sel = (h >> 16) & 0xFFFF
        mode = next(m for limit, m in _NS_MODES if mode_sel < limit)
        ns_count = 2 if mode == NS_PARKED else (2, 2, 3, 4)[(h >> 48) & 3]
        return Delegation(i, label, kind, mode, ns_count,
                          ((h >> 32) & 0xFFFF) < SIGNED_SHARE,
                          i % OCCLUDED_EVERY == 99)

    def __iter__(self) -> Iterator[Delegation]:
        return (self.delegation(i) for i in range(self.n))


def delegation_names(n: int, seed: int = DEFAULT_SEED) -> Iterator[str]:
    """Labels (relative to ``coop.``) of the *n* generated delegations, in zone order."""
    plan = DelegationPlan(n, seed)
    return (plan.label(i) for i in range(n))


# ---------------------------------------------------------------------------
# Static parts of the zone
# ---------------------------------------------------------------------------

LONG_LABEL_63 = "this-label-is-exactly-sixty-three-octets-long-for-limit-testing"
assert len(LONG_LABEL_63) == 63

# Fixed delegations, always present (in addition to the N generated ones).
FIXTURE_DELEGATIONS = ("test-glue", "test-sibling", "test-noglue", "test-external",
                       "test-signed", "test-occluded", "test-parked")

_APEX = """\
$ORIGIN coop.
$TTL 3600

; ===========================================================================
; Zone apex
; ===========================================================================
@               IN  SOA ns1.nic.coop. hostmaster.nic.coop. (
                        {serial} ; serial
                        7200       ; refresh (2 hours)
                        1800       ; retry (30 minutes)
                        1209600    ; expire (14 days)
                        900 )      ; minimum = negative-caching TTL (RFC 2308)
                IN  NS  ns1.nic.coop.
                IN  NS  ns2.nic.coop.
                    NS  a.coop.dns-registry.net.   ; out-of-zone secondary
                    NS  b.coop.dns-registry.org.   ; out-of-zone secondary
coop.      3600 IN  TXT "coop - the top-level domain for cooperatives"

"""

_NIC = f"""\
; ===========================================================================
; Registry hosts under nic.coop (part of this zone, not a delegation)
; ===========================================================================
$ORIGIN nic.coop.
@               IN  MX    10 mail
                    TXT   "v=spf1 mx -all"
                    CAA   0 issue "letsencrypt.org"
                    CAA   0 iodef "mailto:security@nic.coop"
ns1             IN  A     192.0.2.1
                IN  AAAA  2001:db8::1
ns2        86400 IN A     192.0.2.2
ns2.nic.coop. 86400 IN AAAA 2001:db8::2
; dns1/dns2 serve the registry's parking service: the NS targets of "parked"
; delegations, answered from authoritative data (not glue).
dns1                A     192.0.2.11
                    AAAA  2001:db8::11
dns2                A     192.0.2.12
                    AAAA  2001:db8::12
www                 A     192.0.2.80
                    AAAA  2001:db8::80
whois               CNAME www
mail            IN  A     192.0.2.25          ; A only: mail.nic.coop AAAA is NODATA
_submission._tcp    SRV   0 1 587 mail
_imaps._tcp.nic.coop. 7200 IN SRV 0 1 993 mail.nic.coop.
; TXT with several strings, spaces and an escaped quote
info                TXT   "Registry of the .coop TLD" "contact: \\"hostmaster\\" at nic.coop"
; a record spanning several lines with parentheses
policy     3600 IN  TXT   ( "Registration is restricted to cooperatives,"
                            "their associations and supporting organisations."
                            "See https://www.nic.coop/policy" )
; RFC 3597 unknown type
private             TYPE65534 \\# 4 0a000001

; ---------------------------------------------------------------------------
; Corner cases for resolver-logic tests
; ---------------------------------------------------------------------------
; Wildcard (RFC 4592): *.wild.nic.coop has A and TXT; wild.nic.coop itself is an
; empty non-terminal; exists.wild.nic.coop is an explicit name (no synthesis).
*.wild              A     192.0.2.100
                    TXT   "wildcard"
exists.wild         A     192.0.2.101
; Wildcard whose parent has data: wild-parent.nic.coop A, *.wild-parent.nic.coop A
wild-parent         A     192.0.2.102
*.wild-parent       A     192.0.2.103
; CNAME chain: a.chain -> b.chain -> c.chain (A); chain.nic.coop is an ENT
a.chain             CNAME b.chain
b.chain             CNAME c.chain.nic.coop.
c.chain             A     192.0.2.110
; CNAME to an out-of-zone target
external            CNAME www.example.net.
; CNAME into a delegation (answer continues with a referral for test-glue.coop)
to-deleg            CNAME www.test-glue.coop.
; CNAME to a name synthesised from *.wild.nic.coop
to-wild             CNAME cname-target.wild.nic.coop.
; CNAME to a name that does not exist (NXDOMAIN after the CNAME)
dangling            CNAME does-not-exist.nic.coop.
; CNAME loop of two names: a server must stop following
loop1               CNAME loop2
loop2.nic.coop.     CNAME loop1.nic.coop.
; DNAME (RFC 6672): x.dname.nic.coop -> x.target.nic.coop; host.target has an A
dname               DNAME target
host.target         A     192.0.2.120
; DNAME to an out-of-zone target
dname-ext           DNAME example.net.
; Empty non-terminal: ent.nic.coop exists only because deep.ent.nic.coop does
deep.ent            A     192.0.2.130
; a 63-octet label
{LONG_LABEL_63} A 192.0.2.131

"""

_FIXTURES = """\
; ===========================================================================
; Fixed test delegations (always present, in addition to the generated ones)
; ===========================================================================
$ORIGIN coop.
; in-bailiwick NS with glue (A and AAAA)
test-glue           NS    ns1.test-glue
                    NS    ns2.test-glue.coop.
ns1.test-glue       A     203.0.113.1
                    AAAA  2001:db8:ff00::1
ns2.test-glue       A     203.0.113.2
                    AAAA  2001:db8:ff00::2
; sibling glue: the NS hosts live under test-glue.coop, the glue is there
test-sibling        NS    ns1.test-glue.coop.
                    NS    ns2.test-glue.coop.
; DELIBERATELY MISSING GLUE (the only one in the zone): ns2.test-noglue.coop has no
; address records; the loader is expected to warn about it
test-noglue         NS    ns1.test-noglue
                    NS    ns2.test-noglue
ns1.test-noglue     A     203.0.113.3
; out-of-zone NS only
test-external       NS    ns1.example.net.
                    NS    ns2.example.org.
; signed delegation (DS)
test-signed  86400  NS    ns1.example.net.
             86400  NS    ns2.example.org.
             86400  DS    31589 13 2 (
                          4A8E2DD2A6A2A1C01E2C5D6B8F1B7C0E
                          9D3A5F6E7B8C9D0A1B2C3D4E5F607182 )
; occluded data: names below the test-occluded.coop zone cut are not authoritative
test-occluded       NS    ns1.example.net.
                    NS    ns2.example.org.
txt.test-occluded   TXT   "occluded"
www.test-occluded   A     192.0.2.200
; parked: NS targets are authoritative in-zone names under nic.coop (not glue)
test-parked         NS    dns1.nic.coop.
                    NS    dns2.nic.coop.

"""

# ---------------------------------------------------------------------------
# Out-of-zone DNS providers
# ---------------------------------------------------------------------------

_PROVIDER_WORDS = ("host", "dns", "web", "net", "cloud", "site", "data", "server", "zone",
                   "name", "coophost", "green", "fair", "people", "mutual", "civic")
_PROVIDER_TAILS = ("ing", "hub", "works", "box", "space", "center", "line", "link", "nest",
                   "craft", "", "pro", "direct", "point")
_PROVIDER_TLDS = ("net", "net", "net", "com", "com", "org", "eu", "de", "fr", "co.uk", "ca",
                  "nz", "it", "es", "nl", "ch")


def _providers(rng: Random, count: int = 1500) -> list[tuple[str, ...]]:
    """Out-of-zone DNS providers, each a tuple of 4 name-server host names."""
    seen: dict[str, None] = {}
    while len(seen) < count:
        name = rng.choice(_PROVIDER_WORDS) + rng.choice(_PROVIDER_TAILS)
        if rng.random() < 0.5:
            name += str(rng.randint(1, 99))
        seen.setdefault(name + "." + rng.choice(_PROVIDER_TLDS), None)
    out = []
    for dom in seen:
        style = rng.randrange(4)
        if style == 0:
            hosts = tuple(f"ns{k}.{dom}." for k in range(1, 5))
        elif style == 1:
            hosts = tuple(f"dns{k}.{dom}." for k in range(1, 5))
        elif style == 2:
            hosts = tuple(f"{c}.ns.{dom}." for c in "abcd")
        else:
            base = rng.randrange(100, 2000)
            hosts = tuple(f"ns-{base + k * 517}.{dom}." for k in range(4))
        out.append(hosts)
    return out


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------

def header(delegations: int, seed: int) -> str:
    cmd = f"python benchmarks/genzone.py --delegations {delegations}"
    if seed != DEFAULT_SEED:
        cmd += f" --seed {seed}"
    return (
        "; .coop TLD zone -- GENERATED FILE, do not edit by hand.\n"
        f"; Generated by: {cmd}\n"
        f"; {delegations} generated delegations + {len(FIXTURE_DELEGATIONS)} fixed test-* "
        "delegations.\n"
        "; All addresses are documentation ranges (192.0.2.0/24, 198.51.100.0/24,\n"
        "; 203.0.113.0/24, 2001:db8::/32); DS digests are random.\n"
        ";\n"
    )


def generate(delegations: int, seed: int = DEFAULT_SEED, out: TextIO = sys.stdout) -> None:
    """Write the zone for *delegations* generated delegations to *out*."""
    plan = DelegationPlan(delegations, seed)
    rng = Random(f"genzone:{seed}")
    write = out.write
    write(header(delegations, seed))
    write(_APEX.format(serial=SERIAL))
    write(_NIC)
    write(_FIXTURES)
    write("; ===========================================================================\n"
          f"; {delegations} generated delegations\n"
          "; ===========================================================================\n")

    providers = _providers(rng)
    nprov = len(providers)
    # Recent delegations that carry glue: (label, glued host names) for sibling glue.
    glued = collections.deque([("test-glue", ("ns1", "ns2"))], maxlen=64)
    random_ = rng.random
    getrandbits = rng.getrandbits
    buf: list[str] = []
    emit = buf.append

    for d in plan:
        label = d.label
        r = random_()
        owner = label + ".coop." if r < 0.04 else label
        # optional explicit TTL and class, e.g. "172800\tIN\t"
        tc = ("172800\t", "86400\t")[getrandbits(1)] if random_() < 0.15 else ""
        if random_() < 0.4:
            tc += "IN\t"
        repeat_owner = random_() < 0.3
        glue: tuple[str, ...] = ()

        mode = d.ns_mode
        if mode in (NS_EXTERNAL, NS_MIXED, NS_SIBLING):
            prov = int(nprov * random_() ** 2.5)  # skewed: a few big providers
            hosts = list(providers[prov])
            if random_() < 0.1:  # secondary at another provider
                other = int(nprov * random_() ** 2.5)
                hosts[d.ns_count - 1] = providers[other if other != prov else prov - 1][0]
            targets = hosts[: d.ns_count]
            if mode == NS_MIXED:
                glue = ("ns1",)
                targets[0] = f"ns1.{label}" if getrandbits(1) else f"ns1.{label}.coop."
            elif mode == NS_SIBLING:
                sib, sib_hosts = glued[getrandbits(6) % len(glued)]
                for k, h in enumerate(sib_hosts[: d.ns_count - 1]):
                    targets[k] = f"{h}.{sib}.coop."
        elif mode == NS_INBAILIWICK:
            glue = tuple(f"ns{k}" for k in range(1, d.ns_count + 1))
            targets = [f"{h}.{label}" if getrandbits(1) else f"{h}.{label}.coop."
                       for h in glue]
        else:  # NS_PARKED
            targets = ["dns1.nic.coop.", "dns2.nic.coop."]

        if d.occluded:
            emit(f"; occluded data below the zone cut of {label}.coop follows\n")
        first = True
        for t in targets:
            emit(f"{owner if first or repeat_owner else ''}\t{tc}NS\t{t}\n")
            first = False
        if d.signed:
            tag = getrandbits(16)
            digest = f"{getrandbits(256):064X}"
            sel = getrandbits(5)
            if sel == 0:  # whitespace inside the digest is legal (RFC 4034 5.3)
                digest = digest[:32] + " " + digest[32:]
            elif sel < 8:
                digest = digest.lower()
            emit(f"{owner if repeat_owner else ''}\t{tc}DS\t{tag} 13 2 {digest}\n")
        if glue:
            net4 = ("198.51.100", "203.0.113")[getrandbits(1)]
            hi, lo = 0x1000 + (d.index >> 16), d.index & 0xFFFF
            for k, h in enumerate(glue, 1):
                emit(f"{h}.{label}\tA\t{net4}.{getrandbits(8) % 254 + 1}\n"
                     f"\tAAAA\t2001:db8:{hi:x}:{lo:x}::{k}\n")
            glued.append((label, glue))
        if d.occluded:
            emit(f'txt.{label}\tTXT\t"occluded"\n')
        if len(buf) >= 8192:
            write("".join(buf))
            buf.clear()
    write("".join(buf))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate a realistic .coop TLD zone.")
    p.add_argument("--delegations", "-n", type=int, required=True,
                   help="number of generated delegations")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    args = p.parse_args(argv)
    if args.delegations < 0:
        p.error("--delegations must be >= 0")
    if args.output == "-":
        generate(args.delegations, args.seed, sys.stdout)
    else:
        with open(args.output, "w", encoding="ascii", newline="\n") as f:
            generate(args.delegations, args.seed, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
