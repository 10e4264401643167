#!/usr/bin/env python3
"""Deterministic generator of dnsperf query files for the zone made by ``genzone.py``.

Usage::

    python benchmarks/genqueries.py --delegations 5000 --count 1000000 --mix tld \\
        [--seed 1844] [-o queries.txt]

Each output line is ``<name> <TYPE>`` (dnsperf's input format).  ``--delegations`` and
``--seed`` must match the ones the zone was generated with: delegation labels are
re-derived from them (see ``genzone.DelegationPlan``), not read from the zone.

Mixes (category counts are exact, i.e. rounded shares of ``--count``, and the
categories are shuffled together):

``tld`` -- traffic resembling what a TLD server sees:
    55 %  names at/below existing delegations -> referrals.  Name: ``www.<d>`` 40 %,
          ``<d>`` 35 %, ``mail.<d>`` 15 %, other host 10 %; qtype A 45 / AAAA 35 / NS 20 %
    10 %  ``<d> DS`` (15 % of delegations are signed, the rest give NODATA)
    20 %  random non-existent ``<8-16 random [a-z0-9]>.coop``, A / AAAA 50/50 (NXDOMAIN)
     5 %  apex ``coop`` SOA / NS / DNSKEY, one third each
     5 %  names in nic.coop: existing hosts 80 %, non-existent 20 %; A/AAAA/MX/TXT evenly
     5 %  ``www.<d> A``
``random`` -- random-subdomain flood: 100 % ``<8-16 random [a-z0-9]>.coop`` A / AAAA 50/50.
"""

from __future__ import annotations

import argparse
import sys
from random import Random
from typing import TextIO

try:  # imported as part of a package (e.g. ``benchmarks.genqueries``)
    from . import genzone
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import genzone

MIXES = ("tld", "random")

# (category, share) of the "tld" mix
TLD_MIX = (
    ("referral", 0.55),
    ("ds", 0.10),
    ("nxdomain", 0.20),
    ("apex", 0.05),
    ("nic", 0.05),
    ("www", 0.05),
)

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_OTHER_HOSTS = ("ftp", "smtp", "webmail", "shop", "m", "api", "portal", "vpn", "imap",
                "members", "intranet", "autodiscover")
_NIC_EXISTING = ("nic.coop", "ns1.nic.coop", "ns2.nic.coop", "www.nic.coop", "mail.nic.coop",
                 "whois.nic.coop", "dns1.nic.coop", "dns2.nic.coop", "info.nic.coop",
                 "policy.nic.coop")
_NIC_MISSING = ("ftp.nic.coop", "smtp.nic.coop", "admin.nic.coop", "api.nic.coop",
                "portal.nic.coop", "rdap.nic.coop", "ns3.nic.coop")
_NIC_TYPES = ("A", "AAAA", "MX", "TXT")
_APEX_QUERIES = ("coop SOA\n", "coop NS\n", "coop DNSKEY\n")


def _exact_counts(count: int, mix: tuple[tuple[str, float], ...]) -> list[int]:
    """Largest-remainder rounding of ``share * count`` so the counts sum to *count*."""
    raw = [share * count for _, share in mix]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(len(mix)), key=lambda k: (counts[k] - raw[k], k))
    for k in by_remainder[: count - sum(counts)]:
        counts[k] += 1
    return counts


def generate(delegations: int, count: int, mix: str = "tld", seed: int = genzone.DEFAULT_SEED,
             out: TextIO = sys.stdout) -> None:
    """Write *count* dnsperf query lines for a zone of *delegations* delegations."""
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; expected one of {MIXES}")
    rng = Random(f"genqueries:{mix}:{seed}")
    random_ = rng.random
    randrange = rng.randrange
    choices = rng.choices
    write = out.write

    def random_label() -> str:
        return "".join(choices(_ALNUM, k=8 + randrange(9)))

    if mix == "random":
        cats = bytes([2]) * count  # category 2 = random non-existent label
    elif delegations <= 0:
        raise ValueError("the tld mix needs at least one delegation")
    else:  # one category code per query, exact counts, shuffled
        cats = bytearray()
        for code, c in enumerate(_exact_counts(count, TLD_MIX)):
            cats += bytes([code]) * c
        rng.shuffle(cats)

    plan = genzone.DelegationPlan(delegations, seed)
    label = plan.label
    n = delegations
    buf: list[str] = []
    emit = buf.append
    for cat in cats:
        if cat == 0:  # referral
            d = label(randrange(n))
            r = random_()
            if r < 0.40:
                name = f"www.{d}.coop"
            elif r < 0.75:
                name = f"{d}.coop"
            elif r < 0.90:
                name = f"mail.{d}.coop"
            else:
                name = f"{_OTHER_HOSTS[randrange(len(_OTHER_HOSTS))]}.{d}.coop"
            r = random_()
            emit(f"{name} {'A' if r < 0.45 else 'AAAA' if r < 0.80 else 'NS'}\n")
        elif cat == 1:  # DS at a delegation
            emit(f"{label(randrange(n))}.coop DS\n")
        elif cat == 2:  # random non-existent label
            emit(f"{random_label()}.coop {'A' if random_() < 0.5 else 'AAAA'}\n")
        elif cat == 3:  # apex
            emit(_APEX_QUERIES[randrange(3)])
        elif cat == 4:  # nic.coop
            hosts = _NIC_EXISTING if random_() < 0.8 else _NIC_MISSING
            emit(f"{hosts[randrange(len(hosts))]} {_NIC_TYPES[randrange(4)]}\n")
        else:  # www.<delegation> A
            emit(f"www.{label(randrange(n))}.coop A\n")
        if len(buf) >= 8192:
            write("".join(buf))
            buf.clear()
    write("".join(buf))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate a dnsperf query file for the .coop zone.")
    p.add_argument("--delegations", "-n", type=int, required=True,
                   help="number of delegations the zone was generated with")
    p.add_argument("--seed", type=int, default=genzone.DEFAULT_SEED,
                   help=f"seed the zone was generated with (default {genzone.DEFAULT_SEED})")
    p.add_argument("--count", "-c", type=int, default=1_000_000,
                   help="number of queries (default 1000000)")
    p.add_argument("--mix", choices=MIXES, default="tld", help="query mix (default tld)")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    args = p.parse_args(argv)
    if args.delegations < 0 or args.count < 0:
        p.error("--delegations and --count must be >= 0")
    if args.mix == "tld" and args.delegations == 0:
        p.error("--mix tld needs --delegations >= 1")
    if args.output == "-":
        generate(args.delegations, args.count, args.mix, args.seed, sys.stdout)
    else:
        with open(args.output, "w", encoding="ascii", newline="\n") as f:
            generate(args.delegations, args.count, args.mix, args.seed, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
