"""Run the server: load zones, build the engine, open listeners, serve until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from nameserver.config import Config
from nameserver.engine.core import Engine
from nameserver.server.tcp import start_tcp, stop_tcp
from nameserver.server.udp import start_udp
from nameserver.zone.load import ZoneError, load_zone
from nameserver.zone.tree import Zone

logger = logging.getLogger("nameserver")


@dataclass
class EngineHolder:
    """The one reference that a reload swaps; transports read ``engine`` per message."""

    engine: Engine


@dataclass
class Listeners:
    udp: list[asyncio.DatagramTransport] = field(default_factory=list)
    tcp: list[asyncio.AbstractServer] = field(default_factory=list)


def load_zones(cfg: Config) -> list[Zone]:
    """Load every configured zone, logging one line each; raise ZoneError on the first bad one."""
    zones = []
    for zc in cfg.zones:
        try:
            result = load_zone(zc.file, zc.origin)
        except ZoneError as e:
            for problem in e.problems:
                logger.error("zone %s refused: %s", zc.origin, problem)
            raise
        for warning in result.warnings:
            logger.warning("zone %s: %s", zc.origin, warning)
        z = result.zone
        logger.info(
            "zone %s loaded: serial %d, %d records, %.2f s, from %s",
            zc.origin,
            z.serial,
            z.record_count,
            result.seconds,
            zc.file,
        )
        zones.append(z)
    return zones


def build_engine(cfg: Config, zones: list[Zone]) -> Engine:
    return Engine(zones, identity=cfg.identity, udp_payload=cfg.udp_payload_size)


async def open_listeners(cfg: Config, holder: EngineHolder) -> Listeners:
    listeners = Listeners()
    try:
        for lst in cfg.listen:
            listeners.udp.append(await start_udp(holder, lst.address, lst.port))
            listeners.tcp.append(
                await start_tcp(
                    holder,
                    lst.address,
                    lst.port,
                    max_connections=cfg.tcp.max_connections,
                    idle_timeout=cfg.tcp.idle_timeout,
                    max_queries_per_connection=cfg.tcp.max_queries_per_connection,
                )
            )
            logger.info("listening on %s port %d (UDP and TCP)", lst.address, lst.port)
    except BaseException:
        await close_listeners(listeners)
        raise
    return listeners


async def close_listeners(listeners: Listeners) -> None:
    for transport in listeners.udp:
        transport.close()
    for server in listeners.tcp:
        await stop_tcp(server)


async def serve(cfg: Config, holder: EngineHolder) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    listeners = await open_listeners(cfg, holder)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("ready")
    try:
        await stop.wait()
        logger.info("stopping")
    finally:
        await close_listeners(listeners)
