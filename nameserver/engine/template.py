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


def make_template(
    response: bytes, question_end: int, anchor_at: int, at: list[int]
) -> Template | None:
    """The template of ``response``, whose question ends at ``question_end`` (QTYPE and
    QCLASS included), whose name's anchor starts at ``anchor_at``, and whose compression
    pointers are at offsets ``at`` (as render_answer reports them). None if the answer
    was cut to fit (an offset that is not after the question: render.CUT), if a pointer
    aims before the anchor, or if a longer question could push a name out of a
    pointer's reach."""
    size = len(response)
    qlen = question_end - 4 - 12
    if size - qlen + _LONGEST_NAME > MAX_POINTER:
        return None
    if any(not question_end <= i < size - 1 for i in at):
        return None
    pointers = tuple(response[i] << 8 | response[i + 1] for i in at)
    if any(p & MAX_POINTER < anchor_at for p in pointers):
        return None
    pieces, start = [], question_end
    for i in at:
        pieces.append(response[start:i])
        start = i + 2
    pieces.append(response[start:])
    return Template(response[2:12], qlen, size, tuple(pieces), pointers)
