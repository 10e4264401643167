"""Command line: ``nameserver serve`` and ``nameserver check``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import dns.exception

from nameserver import __version__
from nameserver.config import (
    ConfigError,
    default_config,
    load_config,
    parse_listen,
    parse_zone_arg,
    with_overrides,
)
from nameserver.zone.load import ZoneError, load_zone


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nameserver", description="Authoritative DNS nameserver for .coop"
    )
    parser.add_argument("--version", action="version", version=f"nameserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve zones over UDP and TCP",
        description="Serve zones. With no options: the shipped .coop zone on "
        "127.0.0.1 and ::1 port 5353.",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML configuration file")
    serve.add_argument(
        "--zone",
        action="append",
        metavar="ORIGIN=PATH",
        help="serve this zone file (repeatable; replaces the config's zones)",
    )
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR@PORT",
        help="listen here, UDP and TCP (repeatable; replaces the config's listeners)",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser(
        "check",
        help="check a zone file",
        description="Check a zone file as the server would load it: exit 0 and a summary, "
        "or exit 1 and every error as file:line: reason.",
    )
    check.add_argument("zonefile")
    check.add_argument("--origin", help="zone origin (default: the file name without .zone)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    return _serve(args)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> int:
    from nameserver.server.run import EngineHolder, build_engine, load_zones, serve

    try:
        cfg = load_config(args.config) if args.config else default_config()
        listen = [parse_listen(t) for t in args.listen] if args.listen else None
        zones = [parse_zone_arg(t) for t in args.zone] if args.zone else None
        cfg = with_overrides(cfg, listen, zones)
    except ConfigError as e:
        print(f"nameserver: {e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or cfg.log_level)
    try:
        holder = EngineHolder(build_engine(cfg, load_zones(cfg)))
    except ZoneError:
        logging.getLogger("nameserver").error("not starting: a zone was refused")
        return 1
    try:
        import uvloop

        uvloop.run(serve(cfg, holder))
    except OSError as e:
        logging.getLogger("nameserver").error("cannot listen: %s", e)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _guess_origin(path: str) -> str:
    """The file's leading $ORIGIN, else its name without ``.zone``."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split(";", 1)[0].split()
                if words:
                    if words[0].upper() == "$ORIGIN" and len(words) == 2:
                        return words[1]
                    if not words[0].startswith("$"):
                        break
    except (OSError, UnicodeDecodeError):
        pass
    base = path.rsplit("/", 1)[-1]
    return base[: -len(".zone")] if base.endswith(".zone") else base


def _check(args: argparse.Namespace) -> int:
    origin = args.origin or _guess_origin(args.zonefile)
    try:
        result = load_zone(args.zonefile, origin)
    except ZoneError as e:
        for problem in e.problems:
            print(problem)
        print(f"{args.zonefile}: zone {origin} refused: {len(e.problems)} error(s)")
        return 1
    except (ValueError, OSError, dns.exception.DNSException) as e:
        print(f"{args.zonefile}: {e}")
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}")
    z = result.zone
    print(
        f"{args.zonefile}: zone {z.origin.to_name()} OK: serial {z.serial}, "
        f"{z.record_count} records, {len(result.warnings)} warning(s), "
        f"loaded in {result.seconds:.2f} s"
    )
    return 0
