"""Render responses to wire bytes: compression, EDNS OPT and truncation.

Truncation policy (RFC 2181 §9, RFC 9471): if the answer and authority sections do
not fit, the response is the header and question with TC=1 and no records, so the
client retries over TCP. Additional RRsets are added while they fit; when one does
not, the rest are left out, and TC is set only if what was left out is required
glue (the in-domain name servers of a referral).
"""

from __future__ import annotations

import struct

from nameserver.engine.lookup import Answer
from nameserver.engine.query import AA, OPCODE_SHIFT, QR, RD, TC
from nameserver.wire import Compressor
from nameserver.zone.tree import RRset

_HEADER = struct.Struct("!HHHHHH")
_OPT = struct.Struct("!BHHBBHH")  # root owner, type, payload, ext rcode, version, flags, rdlen
# OPCODE and RD are copied; CD is not (RFC 4035 §3.1.6: an authoritative server
# SHOULD clear it, as Knot and NSD do).
_COPIED = (0xF << OPCODE_SHIFT) | RD
# Reported in render_answer's ``pointers`` for an answer cut to fit: its pointers
# would not describe the whole answer, and no template may be made of it.
CUT = -1


def response_flags(query_flags: int, rcode: int, aa: bool = False, tc: bool = False) -> int:
    flags = QR | (query_flags & _COPIED) | (rcode & 0xF)
    if aa:
        flags |= AA
    if tc:
        flags |= TC
    return flags


def opt_record(payload: int, do: bool, rcode: int = 0, options: bytes = b"") -> bytes:
    """Our OPT pseudo-RR (RFC 6891 §6.1.2); ``rcode`` carries the extended RCODE bits."""
    return _OPT.pack(0, 41, payload, rcode >> 4, 0, 0x8000 if do else 0, len(options)) + options


def render_error(
    qid: int, query_flags: int, rcode: int, question: bytes = b"", opt: bytes | None = None
) -> bytes:
    """A response with no records: errors, REFUSED, NOTIMP, FORMERR, BADVERS."""
    flags = response_flags(query_flags, rcode)
    header = _HEADER.pack(qid, flags, 1 if question else 0, 0, 0, 1 if opt else 0)
    return header + question + (opt or b"")


def _write_rrset(out: bytearray, comp: Compressor, rrset: RRset) -> int:
    owner, fixed = rrset.owner, rrset.fixed
    for rdata in rrset.rdatas:
        comp.write(out, owner)
        out += fixed
        if type(rdata) is bytes:
            out += rdata
        else:
            at = len(out)
            out += b"\0\0"
            for part in rdata:
                if type(part) is bytes:
                    out += part
                else:
                    comp.write(out, part)  # type: ignore[arg-type]
            out[at : at + 2] = (len(out) - at - 2).to_bytes(2, "big")
    return len(rrset.rdatas)


def _write_section(out: bytearray, comp: Compressor, rrsets: list[RRset], do: bool) -> int:
    count = 0
    for rrset in rrsets:
        count += _write_rrset(out, comp, rrset)
        if do and rrset.sigs is not None:
            count += _write_rrset(out, comp, rrset.sigs)
    return count


def render_answer(
    qid: int,
    query_flags: int,
    question: bytes,
    qname_key: bytes,
    ans: Answer,
    do: bool,
    opt: bytes | None,
    limit: int,
    pointers: list[int] | None = None,
) -> bytes:
    """Render ``ans`` in at most ``limit`` bytes (the OPT record included). If
    ``pointers`` is given, it gets where each compression pointer of the response is
    (for :mod:`nameserver.engine.template`), or :data:`CUT` if records were left out."""
    out = bytearray(12)
    out += question
    comp = Compressor()
    anchor = ans.anchor
    comp.add_question(qname_key, start=0 if anchor is None else len(qname_key) - len(anchor))
    room = limit - (len(opt) if opt else 0)
    ancount = _write_section(out, comp, ans.answer, do)
    nscount = _write_section(out, comp, ans.authority, do)
    if len(out) > room:
        if pointers is not None:
            pointers.append(CUT)
        flags = response_flags(query_flags, ans.rcode, ans.aa, tc=True)
        return _HEADER.pack(qid, flags, 1, 0, 0, 1 if opt else 0) + question + (opt or b"")
    tc = False
    complete = True
    arcount = 0
    for index, rrset in enumerate(ans.additional):
        mark = len(out)
        added = _write_section(out, comp, [rrset], do)
        if len(out) > room:
            del out[mark:]  # nothing is written after this, so the stale table is harmless
            tc = index < ans.required
            complete = False
            break
        arcount += added
    if opt:
        out += opt
        arcount += 1
    if pointers is not None:
        pointers.extend(comp.pointers if complete else (CUT,))
    flags = response_flags(query_flags, ans.rcode, ans.aa, tc)
    _HEADER.pack_into(out, 0, qid, flags, 1, ancount, nscount, arcount)
    return bytes(out)
