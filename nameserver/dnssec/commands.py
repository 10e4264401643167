"""``nameserver keygen`` and ``nameserver sign``: argparse glue for the CLI.

Wire-up in ``nameserver/cli.py``::

    from nameserver.dnssec import commands as dnssec_commands
    dnssec_commands.add_commands(sub)           # sub = parser.add_subparsers(...)
    ...
    if args.command in dnssec_commands.COMMANDS:
        return dnssec_commands.run(args)

Standalone: ``python -m nameserver.dnssec.commands sign zones/coop.zone --keys keys/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from nameserver.dnssec.keys import (
    ALGORITHMS,
    KeyFileError,
    SigningKey,
    ds_record,
    generate_key,
    key_file_base,
    load_keys,
    write_key,
)
from nameserver.dnssec.signer import (
    SignError,
    SignStats,
    read_zone,
    sign_zone_iter,
    worker_pool,
    write_zone,
)
from nameserver.dnssec.zonedata import Progress
from nameserver.zone.reader import ZoneSyntaxError, guess_origin

COMMANDS = ("keygen", "sign")
# Zone files smaller than this are signed without worker processes (forking them costs
# more than the few thousand signatures such a zone needs).
_POOL_MIN_BYTES = 2 << 20


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``keygen`` and ``sign`` to the CLI's subparsers."""
    keygen = subparsers.add_parser(
        "keygen",
        help="generate a DNSSEC key pair (BIND format)",
        description="Generate a key pair K<zone>+<alg>+<tag>.key/.private in BIND's format "
        "(the .private file is created mode 0600). For a KSK, also print the DS record "
        "to give to the parent.",
    )
    keygen.add_argument("--origin", required=True, help="zone name, e.g. coop.")
    keygen.add_argument("--ksk", action="store_true", help="key-signing key (flags 257)")
    keygen.add_argument(
        "--algorithm",
        "-a",
        default="ecdsap256sha256",
        type=str.lower,
        choices=sorted(ALGORITHMS),
        help="default ecdsap256sha256",
    )
    keygen.add_argument("--directory", "-K", default="keys", help="default keys/")

    sign = subparsers.add_parser(
        "sign",
        help="sign a zone file (DNSKEY, RRSIG, NSEC3/NSEC, ZONEMD)",
        description="Sign a zone with every key of the zone in the key directory and "
        "write the signed zone, one record per line in canonical order.",
    )
    sign.add_argument("zonefile")
    sign.add_argument("--keys", "-K", required=True, metavar="DIR", help="key directory")
    sign.add_argument("-o", "--output", metavar="OUT", help="default ZONEFILE.signed")
    sign.add_argument("--origin", help="zone origin (default: the file's leading $ORIGIN, "
                      "else the file name without .zone)")
    denial = sign.add_mutually_exclusive_group()
    denial.add_argument("--nsec3", dest="nsec3", action="store_true", default=True,
                        help="NSEC3, 0 extra iterations, no salt (RFC 9276) (default)")
    denial.add_argument("--nsec", dest="nsec3", action="store_false", help="NSEC instead")
    sign.add_argument("--no-opt-out", dest="opt_out", action="store_false",
                      help="NSEC3 records for unsigned delegations too")
    sign.add_argument("--validity", type=float, default=30.0, metavar="DAYS",
                      help="signature lifetime from now (default 30)")
    sign.add_argument("--jitter", type=float, metavar="HOURS",
                      help="spread expirations up to this much earlier (default a quarter "
                      "of the validity)")
    sign.add_argument("--refresh", type=float, default=7.0, metavar="DAYS",
                      help="re-sign signatures expiring within this (default 7)")
    sign.add_argument("--zonemd", action="store_true", help="add a ZONEMD (SHA-384)")
    sign.add_argument("--workers", type=int, metavar="N",
                      help="signing processes (default: CPU count)")
    sign.add_argument("--previous", metavar="FILE",
                      help="earlier signed output: its signatures are kept where still good")
    sign.add_argument("--dnskey-ttl", type=int, metavar="SECONDS",
                      help="DNSKEY TTL (default: the zone's DNSKEY TTL, else 3600)")


def run(args: argparse.Namespace) -> int:
    """Run ``keygen`` or ``sign``; 0 on success, 1 with a one-line error on stderr."""
    try:
        if args.command == "keygen":
            return _keygen(args)
        if args.command == "sign":
            return _sign(args)
    except (KeyFileError, SignError, ValueError, OSError, dns.exception.DNSException) as e:
        _error(_one_line(e))
        return 1
    except ZoneSyntaxError as e:
        for problem in e.problems:
            print(f"nameserver: {problem}", file=sys.stderr)
        return 1
    _error(f"unknown command {args.command!r}")
    return 1


def _error(message: str) -> None:
    print(f"nameserver: {message}", file=sys.stderr)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    text = str(e) or type(e).__name__
    return " ".join(text.split())


def _origin(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as e:
        raise ValueError(f"bad origin {text!r}: {e}") from None


def _keygen(args: argparse.Namespace) -> int:
    origin = _origin(args.origin)
    directory = Path(args.directory)
    for _ in range(16):  # a key tag already used in the directory: make another key
        key = generate_key(origin, args.algorithm, ksk=args.ksk)
        base = key_file_base(origin, key.algorithm, key.key_tag)
        if not (directory / f"{base}.key").exists() and not (
            directory / f"{base}.private"
        ).exists():
            break
    else:
        raise ValueError(f"could not find a free key tag in {directory}")
    key_path, private_path = write_key(key, directory)
    print(key_path)
    print(private_path)
    if key.ksk:
        print(_ds_line(key))
    return 0


def _ds_line(key: SigningKey) -> str:
    return f"{key.origin.to_text()} IN DS {ds_record(key, 'SHA256').to_text()}"


def _key_states(keys: list[SigningKey], now: float) -> tuple[list[SigningKey], list[SigningKey]]:
    """(signing, standby) keys by their BIND timing metadata; the others are reported.

    Active (Activate passed, Inactive not yet): signs. Published but not active yet,
    or inactive but not deleted yet: standby (its DNSKEY is published, it signs
    nothing). Not published yet, deleted or revoked: left out.
    """
    signing, standby = [], []
    for k in keys:
        t = k.timing

        def passed(name: str, t: dict[str, int] = t) -> bool:
            return name in t and t[name] <= now

        if passed("Delete") or passed("Revoke"):
            _error(f"note: leaving out {k.describe()}: deleted or revoked")
        elif "Publish" in t and not passed("Publish"):
            _error(f"note: leaving out {k.describe()}: not published yet")
        elif passed("Inactive") or ("Activate" in t and not passed("Activate")):
            _error(f"note: {k.describe()} is published but does not sign (inactive)")
            standby.append(k)
        else:
            signing.append(k)
    return signing, standby


def _sign(args: argparse.Namespace) -> int:
    started = time.monotonic()
    origin = _origin(args.origin or guess_origin(args.zonefile))
    if args.validity <= 0:
        raise ValueError("--validity must be positive")
    if args.refresh < 0 or (args.jitter is not None and args.jitter < 0):
        raise ValueError("--refresh and --jitter cannot be negative")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    if not os.path.isfile(args.zonefile):
        raise ValueError(f"{args.zonefile}: no such file")
    now = time.time()
    keys, standby = _key_states(load_keys(args.keys, origin), now)
    if not keys:
        raise ValueError(f"no usable keys for {origin} in {args.keys}")
    output = args.output or args.zonefile + ".signed"
    out_dir = Path(output).resolve().parent
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        raise ValueError(f"cannot write {output}: {out_dir} is not a writable directory")
    progress = tty_progress()
    stats = SignStats()
    validity = timedelta(days=args.validity)
    jitter = None if args.jitter is None else timedelta(hours=args.jitter)
    if jitter is not None and jitter > validity / 2:
        raise ValueError("--jitter cannot exceed half the validity")
    # Fork the workers first, while this process is small; a small zone is signed here.
    big = os.path.getsize(args.zonefile) >= _POOL_MIN_BYTES
    with worker_pool(args.workers if big else 1) as pool:
        zone = read_zone(args.zonefile, origin, canon_all=args.zonemd,
                         progress=progress)
        previous = None
        if args.previous:
            previous = read_zone(args.previous, origin, skip_delegation_ns=True)
        signed = sign_zone_iter(
            zone,
            origin,
            keys,
            nsec3=args.nsec3,
            opt_out=args.opt_out,
            inception=int(now - 3600),
            expiration=int(now + validity.total_seconds()),
            jitter=jitter,
            zonemd=args.zonemd,
            previous=previous,
            refresh=timedelta(days=args.refresh),
            now=int(now),
            workers=args.workers,
            pool=pool,
            progress=progress,
            dnskey_ttl=args.dnskey_ttl,
            stats=stats,
            standby=standby,
        )
        del zone, previous
        # Written as the workers sign: the output streams out in canonical order.
        try:
            count = write_zone(signed, output)
        except OSError as e:
            raise ValueError(f"cannot write {output}: {e.strerror or e}") from None
    used = ", ".join(k.describe() for k in keys)
    print(f"signed {origin} with {used}: {stats}; wrote {count} records to {output} "
          f"in {time.monotonic() - started:.1f} s")
    return 0


def tty_progress(stream: Any = None) -> Progress | None:
    """A progress callback that redraws one line on *stream* (stderr) if it is a TTY."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return None
    last = [0.0, ""]

    def report(phase: str, done: int, total: int) -> None:
        t = time.monotonic()
        if phase == last[1] and done < total and t - last[0] < 0.2:
            return
        last[0], last[1] = t, phase
        pct = 100.0 * done / total if total else 100.0
        end = "\n" if done >= total else ""
        stream.write(f"\r{phase}: {done}/{total} ({pct:.0f}%)\033[K{end}")
        stream.flush()

    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nameserver", description="DNSSEC key and signing tools")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
