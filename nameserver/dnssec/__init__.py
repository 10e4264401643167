"""DNSSEC for the .coop server.

Offline side (nothing here signs per query):

* :mod:`nameserver.dnssec.keys` -- signing keys: generation, BIND's ``K*.key`` /
  ``K*.private`` files both ways, DS records;
* :mod:`nameserver.dnssec.signer` -- the zone signer (DNSKEY, RRSIG, NSEC3 or NSEC,
  ZONEMD, re-signing), with :mod:`~nameserver.dnssec.zonedata` (its RRsets),
  :mod:`~nameserver.dnssec.zoneread` (reading), :mod:`~nameserver.dnssec.workers`
  (signatures in worker processes) and :mod:`~nameserver.dnssec.zonewrite` (writing);
* :mod:`nameserver.dnssec.nsec3` -- NSEC3/NSEC chains and canonical-order name keys;
* :mod:`nameserver.dnssec.commands` -- the ``keygen`` and ``sign`` commands.

Serving side: :mod:`nameserver.dnssec.verify` and :mod:`nameserver.dnssec.zonemd`
check a signed zone before it goes live.

Nothing is imported here, so that loading the package stays cheap for the server.
"""
