"""One prepared answer for every question of a shape, whatever the question's length.

A referral or an NXDOMAIN answer depends on its question only through an ancestor
of the name (the zone cut; the zone's origin: ``Answer.anchor``), and the renderer
compresses against the question from that ancestor on only. So two such answers
for questions of different lengths differ in one way: every compression pointer
points ``delta`` bytes further, where ``delta`` is the difference in length (the
pointers all aim at the anchor in the question or at names after it, which all move
by ``delta``). A :class:`Template` keeps one rendering cut at its pointers and
writes the others by adding ``delta``.

Without it the engine keeps one answer per shape *and length*: on a zone of a
million delegations a random-name flood meets ~150k NSEC3 gaps times ~10 lengths,
more than any cache holds, and each miss renders the answer again (~20 us).
"""

from __future__ import annotations

from nameserver.wire import MAX_POINTER

NS, CNAME, SOA, PTR, MX = 2, 5, 6, 12, 15
_LONGEST_NAME = 255


class Template:
    """The header (after the ID) and the bytes after the question of one answer,
    rendered for a question ``qlen`` bytes long, cut at its compression pointers."""

    __slots__ = ("head", "qlen", "size", "pieces", "pointers")

    def __init__(
        self,
        head: bytes,
        qlen: int,
        size: int,
        pieces: tuple[bytes, ...],
        pointers: tuple[int, ...],
    ):
        self.head = head
        self.qlen = qlen
        self.size = size  # of the whole response
        self.pieces = pieces  # len(pointers) + 1 pieces, a pointer between two
        self.pointers = pointers  # 2-byte values, 0xC000 | offset

    def fits(self, qlen: int, limit: int) -> bool:
        """Whether the answer for a question of ``qlen`` bytes is at most ``limit``."""
        return self.size + qlen - self.qlen <= limit

    def rest(self, qlen: int) -> bytes:
        """The bytes after the question, for a question ``qlen`` bytes long."""
        delta = qlen - self.qlen
        pieces = self.pieces
        out = [pieces[0]]
        for piece, pointer in zip(pieces[1:], self.pointers, strict=True):
            out.append((pointer + delta).to_bytes(2, "big"))
            out.append(piece)
        return b"".join(out)


def make_template(response: bytes, question_end: int, anchor_at: int) -> Template | None:
    """The template of ``response`` (uncut: no record left out for size), whose question
    ends at ``question_end`` (QTYPE and QCLASS included) and whose name's anchor starts
    at ``anchor_at``; None if a pointer aims before the anchor, the bytes do not parse,
    or a longer question could push a name out of a pointer's reach."""
    size = len(response)
    qlen = question_end - 4 - 12
    if size - qlen + _LONGEST_NAME > MAX_POINTER:
        return None
    records = sum(int.from_bytes(response[i : i + 2], "big") for i in (6, 8, 10))
    at = _pointers_at(response, question_end, records)
    if at is None:
        return None
    pointers = tuple(int.from_bytes(response[i : i + 2], "big") for i in at)
    if any(p & MAX_POINTER < anchor_at for p in pointers):
        return None
    pieces, start = [], question_end
    for i in at:
        pieces.append(response[start:i])
        start = i + 2
    pieces.append(response[start:])
    return Template(response[2:12], qlen, size, tuple(pieces), pointers)


def _pointers_at(msg: bytes, i: int, records: int) -> list[int] | None:
    """Where the compression pointers are in ``records`` resource records from ``i``:
    in owner names, and in the RDATA names that RFC 1035 types may compress (the only
    ones our renderer compresses). None if the records do not end with the message."""
    found: list[int] = []
    n = len(msg)
    try:
        for _ in range(records):
            i = _name_end(msg, i, found)
            rtype = msg[i] << 8 | msg[i + 1]
            rdlen = msg[i + 8] << 8 | msg[i + 9]
            rdata = i + 10
            if rtype in (NS, CNAME, PTR):
                _name_end(msg, rdata, found)
            elif rtype == MX:
                _name_end(msg, rdata + 2, found)
            elif rtype == SOA:
                _name_end(msg, _name_end(msg, rdata, found), found)
            i = rdata + rdlen
    except (IndexError, ValueError):
        return None
    return found if i == n else None


def _name_end(msg: bytes, i: int, found: list[int]) -> int:
    """The offset after the name at ``i``, noting where its pointer is if it has one."""
    while True:
        length = msg[i]
        if length >= 0xC0:
            found.append(i)
            return i + 2
        if length == 0:
            return i + 1
        if length > 63:
            raise ValueError("not a label length")
        i += length + 1
