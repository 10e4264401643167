"""The query log: one line per query, for when an operator needs to see the traffic.

It costs nothing while off: a worker's transports call ``holder.engine.handle`` for
every message, and the query log is a wrapper engine put in that one place
(``holder.engine = QueryLoggingEngine(engine)``) when it is switched on and taken
out again when it is switched off, so the hot path of a server without it is
exactly what it was.

The engine never sees the client's address, so a line says what was asked and
answered, not by whom::

    query coop. IN SOA udp NOERROR 412

that is: QNAME, QCLASS, QTYPE, transport, RCODE (or ``dropped``) and the size of the
response in bytes. Lines go to the ``nameserver.query`` logger at INFO level,
whatever the server's log level.
"""

from __future__ import annotations

import logging
from typing import Any

import dns.exception
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

query_logger = logging.getLogger("nameserver.query")
query_logger.setLevel(logging.INFO)  # on means on, even with log_level: warning


class QueryLoggingEngine:
    """Wraps an engine: answers through it, then logs the query and the answer."""

    __slots__ = ("engine",)

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def handle(self, wire: bytes, over_tcp: bool = False) -> bytes | None:
        response = self.engine.handle(wire, over_tcp)
        try:
            query_logger.info("query %s", describe(wire, response, over_tcp))
        except Exception:  # the log must never cost an answer
            query_logger.debug("cannot describe a %d-byte query", len(wire), exc_info=True)
        return response

    def __getattr__(self, name: str) -> Any:  # counts, zones, ...: the wrapped engine's
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)


def describe(wire: bytes, response: bytes | None, over_tcp: bool) -> str:
    """``QNAME QCLASS QTYPE transport RCODE size`` for one query and its response."""
    qname, qclass, qtype = "-", "-", "-"
    if len(wire) >= 12 and wire[4:6] != b"\x00\x00":
        try:
            name, used = dns.name.from_wire(wire, 12)
            qname = name.to_text()
            end = 12 + used
            if len(wire) >= end + 4:
                qtype = dns.rdatatype.to_text(int.from_bytes(wire[end : end + 2], "big"))
                qclass = dns.rdataclass.to_text(int.from_bytes(wire[end + 2 : end + 4], "big"))
        except dns.exception.DNSException:
            qname = "<malformed>"
    transport = "tcp" if over_tcp else "udp"
    if response is None:
        return f"{qname} {qclass} {qtype} {transport} dropped 0"
    rcode = dns.rcode.to_text(response[3] & 0x0F) if len(response) >= 4 else "-"
    return f"{qname} {qclass} {qtype} {transport} {rcode} {len(response)}"
