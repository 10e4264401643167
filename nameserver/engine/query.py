"""Parse a query message from wire bytes, strictly (RFC 1035 §4, RFC 6891).

This is the general parser: it validates everything and says precisely what is
wrong. The hot path in :mod:`nameserver.engine.core` reads the few bytes of common
queries directly and falls back to this parser for anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OPT = 41
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")

# Header flag bits.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010
OPCODE_SHIFT = 11


class Drop(Exception):
    """Not worth an answer: a response, or too short to read a header."""


class FormErr(Exception):
    """Malformed beyond the header: answer FORMERR with the ID and opcode echoed."""

    def __init__(self, reason: str, qid: int, flags: int):
        super().__init__(reason)
        self.qid = qid
        self.flags = flags


@dataclass(slots=True)
class Edns:
    payload: int
    version: int
    do: bool
    options: list[tuple[int, bytes]]


@dataclass(slots=True)
class Query:
    qid: int
    flags: int
    qname: bytes  # wire form, as the client wrote it
    qtype: int
    qclass: int
    question_end: int  # offset just past the question section
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags >> OPCODE_SHIFT) & 0xF


def read_name(wire: bytes, offset: int) -> tuple[bytes, int]:
    """Read an uncompressed name at ``offset``; return (wire name, offset after it)."""
    start = offset
    while True:
        if offset >= len(wire):
            raise ValueError("name runs past the end of the message")
        n = wire[offset]
        if n == 0:
            offset += 1
            break
        if n & 0xC0:
            raise ValueError("compressed or extended label in the question")
        offset += n + 1
    if offset - start > 255:
        raise ValueError("name longer than 255 octets")
    if offset > len(wire):
        raise ValueError("name runs past the end of the message")
    return wire[start:offset], offset


def skip_name(wire: bytes, offset: int) -> int:
    """Skip a possibly compressed name; return the offset after it."""
    while True:
        if offset >= len(wire):
            raise ValueError("name runs past the end of the message")
        n = wire[offset]
        if n == 0:
            return offset + 1
        if n & 0xC0 == 0xC0:
            if offset + 2 > len(wire):
                raise ValueError("compression pointer runs past the end")
            return offset + 2
        if n & 0xC0:
            raise ValueError("extended label type")
        offset += n + 1


def parse_query(wire: bytes) -> Query:
    """Parse ``wire``; raise Drop or FormErr. Opcode and class are left to the caller."""
    if len(wire) < 12:
        raise Drop("shorter than a header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if flags & QR:
        raise Drop("a response, not a query")
    if qdcount != 1:
        raise FormErr(f"QDCOUNT is {qdcount}, not 1", qid, flags)
    try:
        qname, offset = read_name(wire, 12)
        if offset + 4 > len(wire):
            raise ValueError("question runs past the end of the message")
        qtype, qclass = struct.unpack_from("!HH", wire, offset)
        question_end = offset + 4
        offset = question_end
        edns = None
        for index in range(ancount + nscount + arcount):
            start = offset
            offset = skip_name(wire, offset)
            if offset + 10 > len(wire):
                raise ValueError("record runs past the end of the message")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(wire, offset)
            offset += 10
            if offset + rdlen > len(wire):
                raise ValueError("RDATA runs past the end of the message")
            if rtype == OPT:
                if index < ancount + nscount:
                    raise ValueError("OPT outside the additional section")
                if edns is not None:
                    raise ValueError("more than one OPT record")
                if wire[start] != 0:
                    raise ValueError("OPT owner is not the root")
                edns = Edns(
                    payload=max(rclass, 512),
                    version=(ttl >> 16) & 0xFF,
                    do=bool(ttl & 0x8000),
                    options=_options(wire[offset : offset + rdlen]),
                )
            offset += rdlen
        if offset != len(wire):
            raise ValueError("trailing bytes after the last record")
    except ValueError as e:
        raise FormErr(str(e), qid, flags) from None
    return Query(qid, flags, qname, qtype, qclass, question_end, edns)


def _options(rdata: bytes) -> list[tuple[int, bytes]]:
    options = []
    i = 0
    while i < len(rdata):
        if i + 4 > len(rdata):
            raise ValueError("truncated EDNS option")
        code, length = struct.unpack_from("!HH", rdata, i)
        i += 4
        if i + length > len(rdata):
            raise ValueError("truncated EDNS option")
        options.append((code, rdata[i : i + length]))
        i += length
    return options


def find_opt(wire: bytes) -> bool | None:
    """Best effort for a malformed message: the DO bit of its one well-formed OPT
    record, or None if it has none (or the records cannot be walked)."""
    try:
        _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
        offset = 12
        for _ in range(qdcount):
            offset = skip_name(wire, offset) + 4
        found = None
        for index in range(ancount + nscount + arcount):
            start = offset
            offset = skip_name(wire, offset)
            rtype, _, ttl, rdlen = _RR_FIXED.unpack_from(wire, offset)
            offset += 10 + rdlen
            if offset > len(wire):
                return None
            if rtype == OPT:
                if found is not None or index < ancount + nscount or wire[start] != 0:
                    return None
                _options(wire[offset - rdlen : offset])  # its options must be well formed
                found = bool(ttl & 0x8000)
        return found if offset == len(wire) else None  # trailing bytes: no trust in it
    except (ValueError, struct.error):
        return None
