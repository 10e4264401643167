"""Command line: ``nameserver serve`` and ``nameserver check``, and ``status``,
``reload``, ``stop`` and ``querylog`` for a running server."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception

from nameserver import __version__
from nameserver.dnssec import commands as dnssec_commands
from nameserver.zone.reader import guess_origin

if TYPE_CHECKING:
    from nameserver.config import Config
# nameserver.config and nameserver.zone.load (the engine, YAML) are imported by the
# commands that use them, so that ``keygen`` and ``sign`` start quickly.


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
    serve.add_argument("--workers", type=int, metavar="N", help="query-serving processes")
    serve.add_argument("--control", metavar="PATH", help="control socket path")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--metrics",
        metavar="ADDR@PORT",
        help="serve Prometheus metrics over HTTP here (GET /metrics; port 9153 if left out)",
    )
    serve.add_argument(
        "--query-log",
        action="store_true",
        default=None,
        help="log every query (switch at run time with 'nameserver querylog on|off')",
    )
    serve.add_argument(
        "--user",
        metavar="NAME",
        help="started as root: switch to this user once the sockets are open",
    )
    serve.add_argument(
        "--watch",
        action="store_true",
        default=None,
        help="reload a zone by itself when its file changes (checked every 2 s)",
    )

    for name, text in (
        ("status", "show zones, serials, workers and listeners of the running server"),
        ("reload", "reload the configuration and zones (or one zone) without a pause"),
        ("stop", "stop the running server"),
        ("querylog", "switch the running server's query log on or off"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--config", metavar="FILE", help="find the control socket here")
        command.add_argument("--control", metavar="PATH", help="control socket path")
        if name == "reload":
            command.add_argument("zone", nargs="?", help="only this zone (origin)")
        if name == "querylog":
            command.add_argument("state", choices=["on", "off"])

    check = sub.add_parser(
        "check",
        help="check a zone file",
        description="Check a zone file as the server would load it: exit 0 and a summary, "
        "or exit 1 and every error as file:line: reason.",
    )
    check.add_argument("zonefile")
    check.add_argument("--origin", help="zone origin (default: the file name without .zone)")
    dnssec_commands.add_commands(sub)  # keygen, sign
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    if args.command == "serve":
        return _serve(args)
    if args.command in dnssec_commands.COMMANDS:
        return dnssec_commands.run(args)
    return _control(args)


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve_config(args: argparse.Namespace) -> Config:
    """The configuration for ``serve``: the file (or the defaults) with the command line
    applied on top. Called again at every reload, so the file is re-read."""
    from nameserver.config import (
        default_config,
        load_config,
        parse_listen,
        parse_metrics_listen,
        parse_zone_arg,
        with_overrides,
    )

    cfg = load_config(args.config) if args.config else default_config()
    listen = [parse_listen(t) for t in args.listen] if args.listen else None
    zones = [parse_zone_arg(t) for t in args.zone] if args.zone else None
    control = Path(args.control) if args.control else None
    metrics = parse_metrics_listen(args.metrics) if args.metrics else None
    return with_overrides(
        cfg,
        listen,
        zones,
        args.workers,
        control,
        metrics=metrics,
        query_log=args.query_log,
        user=args.user,
        watch=args.watch,
    )


def _serve(args: argparse.Namespace) -> int:
    from nameserver.config import ConfigError
    from nameserver.server.supervisor import Supervisor

    try:
        cfg = _serve_config(args)
    except ConfigError as e:
        print(f"nameserver: {e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or cfg.log_level)
    return Supervisor(cfg, lambda: _serve_config(args)).run()


def _control_path(args: argparse.Namespace) -> Path:
    from nameserver.config import default_config, default_control_socket, load_config

    if args.control:
        return Path(args.control)
    cfg = load_config(args.config) if args.config else default_config()
    return cfg.control_socket or default_control_socket()


def _control(args: argparse.Namespace) -> int:
    from nameserver.config import ConfigError
    from nameserver.control import ControlError, send

    try:
        path = _control_path(args)
    except ConfigError as e:
        print(f"nameserver: {e}", file=sys.stderr)
        return 2
    request: dict[str, object] = {"command": args.command}
    if args.command == "reload":
        request["zone"] = args.zone
    if args.command == "querylog":
        request["state"] = args.state
    try:
        reply = send(path, request)
    except ControlError as e:
        print(f"nameserver: {e}", file=sys.stderr)
        return 2
    if "error" in reply:
        print(f"nameserver: {reply['error']}", file=sys.stderr)
        return 1
    if args.command == "status":
        print(_format_status(reply["status"]))  # type: ignore[arg-type]
    elif args.command == "reload":
        for message in reply.get("messages", []):  # type: ignore[union-attr]
            print(message)
        print("reload: OK" if reply.get("ok") else "reload: FAILED (see above)")
    elif args.command == "querylog":
        print(f"query log {'on' if reply.get('query_log') else 'off'}")
    else:
        print("stopping")
    return 0 if reply.get("ok") else 1


def _format_status(status: dict) -> str:  # type: ignore[type-arg]
    lines = [
        f"server pid {status['pid']}, up {_duration(status['uptime'])}, "
        f"generation {status['generation']}",
        "listeners: " + ", ".join(status["listeners"]),
        "workers: " + ", ".join(f"{w['pid']} (slot {w['slot']})" for w in status["workers"]),
    ]
    for z in status["zones"]:
        loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(z["loaded_at"]))
        lines.append(
            f"zone {z['origin']}: serial {z['serial']}, {z['records']} records, "
            f"loaded {loaded} in {z['load_seconds']:.2f} s from {z['file']}"
        )
    last = status.get("last_reload")
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
        lines.append(f"last reload: {'OK' if last['ok'] else 'FAILED'} at {when}")
    if "query_log" in status:
        queries = status.get("queries") or {}
        lines.append(
            f"queries: {queries.get('udp', 0)} UDP, {queries.get('tcp', 0)} TCP; "
            f"query log {'on' if status['query_log'] else 'off'}; "
            f"watch {'on' if status.get('watch') else 'off'}; "
            f"metrics {'at ' + status['metrics'] if status.get('metrics') else 'off'}"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _check(args: argparse.Namespace) -> int:
    from nameserver.zone.load import ZoneError, load_zone

    origin = args.origin or guess_origin(args.zonefile)
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
