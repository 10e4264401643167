"""RFC 1035 master-file reader that remembers where every record came from.

dnspython parses each record's RDATA (so every type it knows, and RFC 3597 ``\\#``
generic data, reads exactly as dnspython would); this module only splits the file
into logical records: $ORIGIN, $TTL, $INCLUDE, relative names, parentheses,
comments, quoted strings and escapes. Each record carries ``file:line`` so that
checks made later can point an operator at the line to fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.ttl

_META_TYPES = frozenset(
    {
        dns.rdatatype.OPT,
        dns.rdatatype.TSIG,
        dns.rdatatype.TKEY,
        dns.rdatatype.IXFR,
        dns.rdatatype.AXFR,
        dns.rdatatype.MAILA,
        dns.rdatatype.MAILB,
        dns.rdatatype.ANY,
    }
)
_MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Where:
    """A position in a zone file, printed the way compilers do: ``file:line``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record as read from a master file."""

    name: dns.name.Name
    ttl: int
    rdtype: int
    rdata: dns.rdata.Rdata
    where: Where


class ZoneSyntaxError(Exception):
    """A zone file could not be read; ``problems`` lists every ``file:line: reason``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(slots=True)
class _Token:
    text: str
    quoted: bool


def _split(text: str, where: Where) -> list[_Token]:
    """Split one physical line into tokens; stops at a comment.

    Escapes are kept as written (dnspython interprets them); quotes are removed
    but remembered so the RDATA can be rebuilt faithfully.
    """
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == ";":
            break
        elif c in "()":
            tokens.append(_Token(c, False))
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise ValueError("unterminated quoted string")
            tokens.append(_Token(text[i + 1 : j], True))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\n;()"':
                j += 2 if text[j] == "\\" else 1
            tokens.append(_Token(text[i:j], False))
            i = j
    return tokens


def _logical_lines(path: str) -> Iterator[tuple[Where, bool, list[_Token]]]:
    """Yield (where, starts_with_blank, tokens) per logical line (parentheses joined)."""
    with open(path, encoding="utf-8") as f:
        pending: list[_Token] | None = None
        pending_where = Where(path, 0)
        pending_blank = False
        depth = 0
        for lineno, text in enumerate(f, start=1):
            where = Where(path, lineno)
            simple = not any(c in text for c in '"();\\')
            try:
                toks = [_Token(t, False) for t in text.split()] if simple else _split(text, where)
            except ValueError as e:
                raise ZoneSyntaxError([f"{where}: {e}"]) from None
            if pending is None:
                if not toks:
                    continue
                pending, pending_where, pending_blank = [], where, text[:1] in (" ", "\t")
            for t in toks:
                if not t.quoted and t.text == "(":
                    depth += 1
                elif not t.quoted and t.text == ")":
                    depth -= 1
                    if depth < 0:
                        raise ZoneSyntaxError([f"{where}: unbalanced ')'"])
                else:
                    pending.append(t)
            if depth == 0:
                if pending:
                    yield pending_where, pending_blank, pending
                pending = None
        if depth:
            raise ZoneSyntaxError([f"{pending_where}: '(' is never closed"])


def _rdata_text(tokens: list[_Token]) -> str:
    return " ".join(f'"{t.text}"' if t.quoted else t.text for t in tokens)


class _State:
    def __init__(self, origin: dns.name.Name):
        self.origin = origin
        self.default_ttl: int | None = None
        self.last_ttl: int | None = None
        self.last_name: dns.name.Name | None = None
        self.last_name_text: str | None = None


def read_zone_file(path: str | os.PathLike[str], origin: dns.name.Name) -> Iterator[Record]:
    """Yield the records of a master file; raise ZoneSyntaxError listing every bad line.

    Reading goes on after a bad record so that one run reports all of them.
    """
    problems: list[str] = []
    yield from _read(os.fspath(path), origin, _State(origin), problems, depth=0)
    if problems:
        raise ZoneSyntaxError(problems)


def _read(
    path: str, origin: dns.name.Name, state: _State, problems: list[str], depth: int
) -> Iterator[Record]:
    state.origin = origin
    state.last_name_text = None
    try:
        lines = _logical_lines(path)
        for where, blank_owner, tokens in lines:
            first = tokens[0].text
            if not tokens[0].quoted and first.startswith("$"):
                try:
                    yield from _directive(path, where, tokens, state, problems, depth)
                except (ValueError, dns.exception.DNSException) as e:
                    problems.append(f"{where}: {first}: {e}")
                continue
            try:
                yield _record(where, blank_owner, tokens, state)
            except (ValueError, dns.exception.DNSException) as e:
                problems.append(f"{where}: {_reason(e)}")
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror or e}")
    except ZoneSyntaxError as e:
        problems.extend(e.problems)


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text.rstrip(".")


def _directive(
    path: str,
    where: Where,
    tokens: list[_Token],
    state: _State,
    problems: list[str],
    depth: int,
) -> Iterator[Record]:
    word, value = parse_directive(path, tokens, state.origin, depth)
    if word == "$ORIGIN":
        state.origin = value
        state.last_name = None
        state.last_name_text = None
    elif word == "$TTL":
        state.default_ttl = value
    else:
        target, inner_origin = value
        saved_origin, saved_name = state.origin, state.last_name
        yield from _read(target, inner_origin, state, problems, depth + 1)
        # RFC 1035 section 5.1: the origin reverts after the included file.
        state.origin, state.last_name = saved_origin, saved_name
        state.last_name_text = None


def parse_directive(
    path: str, tokens: list[_Token], origin: dns.name.Name, depth: int
) -> tuple[str, Any]:
    """Check a $ORIGIN, $TTL or $INCLUDE line; return the directive and its value: the new
    origin, the TTL, or (the file to read, its origin). Raise ValueError if it is wrong."""
    word = tokens[0].text.upper()
    args = [t.text for t in tokens[1:]]
    if word == "$ORIGIN":
        if len(args) != 1:
            raise ValueError("expects one domain name")
        return word, dns.name.from_text(args[0], origin)
    if word == "$TTL":
        if len(args) != 1:
            raise ValueError("expects one TTL")
        return word, dns.ttl.from_text(args[0])
    if word == "$INCLUDE":
        if not 1 <= len(args) <= 2:
            raise ValueError("expects a file name and an optional origin")
        if depth >= _MAX_INCLUDE_DEPTH:
            raise ValueError("too deeply nested")
        target = args[0]
        if not os.path.isabs(target):
            target = os.path.join(os.path.dirname(path), target)
        inner_origin = dns.name.from_text(args[1], origin) if len(args) == 2 else origin
        return word, (target, inner_origin)
    raise ValueError("unknown directive")


def _record(where: Where, blank_owner: bool, tokens: list[_Token], state: _State) -> Record:
    name, ttl, rdtype, rdata = parse_record(tokens, blank_owner, state)
    return Record(name, ttl, rdtype, rdata, where)


def parse_record(
    tokens: list[_Token],
    blank_owner: bool,
    state: _State,
    intern: Callable[[dns.name.Name], dns.name.Name] = lambda name: name,
) -> tuple[dns.name.Name, int, int, dns.rdata.Rdata]:
    """Owner, TTL, type and RDATA of one logical line, RDATA read by dnspython.

    ``intern`` may map each newly parsed owner name to a shared instance.
    """
    i = 0
    if blank_owner:
        if state.last_name is None:
            raise ValueError("record has no owner name and there is no previous owner")
        name = state.last_name
    else:
        text = tokens[0].text
        if text == state.last_name_text and state.last_name is not None:
            name = state.last_name
        else:
            name = intern(dns.name.from_text(text, state.origin))
            state.last_name_text = text
        state.last_name = name
        i = 1
    ttl: int | None = None
    rdclass = dns.rdataclass.IN
    # TTL and class may come in either order (RFC 1035 section 5.1).
    for _ in range(2):
        if i >= len(tokens):
            break
        word = tokens[i].text
        if ttl is None and word[:1].isdigit():
            ttl = dns.ttl.from_text(word)
            i += 1
        elif (cls := _class_or_none(word)) is not None:
            rdclass = cls
            i += 1
    if i >= len(tokens):
        raise ValueError("record has no type")
    rdtype = dns.rdatatype.from_text(tokens[i].text)
    if rdclass != dns.rdataclass.IN:
        raise ValueError(f"class {dns.rdataclass.to_text(rdclass)} is not served; use IN")
    if rdtype in _META_TYPES:
        raise ValueError(f"{dns.rdatatype.to_text(rdtype)} is a meta-type, not zone data")
    text = _rdata_text(tokens[i + 1 :])
    try:
        rdata = dns.rdata.from_text(rdclass, rdtype, text, state.origin, relativize=False)
    except dns.exception.DNSException as e:
        type_name = dns.rdatatype.to_text(rdtype)
        raise ValueError(f"bad {type_name} data '{text}': {_reason(e)}") from None
    if ttl is None:
        if state.default_ttl is not None:
            ttl = state.default_ttl
        elif state.last_ttl is not None:
            ttl = state.last_ttl
        elif rdtype == dns.rdatatype.SOA:
            ttl = rdata.minimum  # type: ignore[attr-defined]
        else:
            raise ValueError("no TTL given and no $TTL in force")
    else:
        state.last_ttl = ttl
    return name, ttl, rdtype, rdata


def _class_or_none(word: str) -> int | None:
    upper = word.upper()
    if upper in ("IN", "CH", "HS", "CS", "NONE", "ANY") or (
        upper.startswith("CLASS") and upper[5:].isdigit()
    ):
        return dns.rdataclass.from_text(upper)
    return None


def guess_origin(path: str) -> str:
    """The file's leading $ORIGIN, else its name without ``.zone``."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split(";", 1)[0].split()
                if not words:
                    continue
                if words[0].upper() == "$ORIGIN" and len(words) == 2:
                    return words[1]
                if not words[0].startswith("$"):
                    break
    except (OSError, UnicodeDecodeError):
        pass
    base = os.path.basename(path)
    return base[: -len(".zone")] if base.endswith(".zone") else base
