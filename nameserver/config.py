"""Load the nameserver's YAML configuration into validated, frozen dataclasses.

Every problem is reported as a :class:`ConfigError` whose message names the file,
the key path inside it (for example ``listen[1].port``) and the reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import dns.exception
import dns.name
import yaml

from nameserver.engine.core import DEFAULT_CACHE_ENTRIES

__all__ = [
    "default_control_socket",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "LOG_LEVELS",
    "REPO_ROOT",
    "Config",
    "ConfigError",
    "Identity",
    "Listener",
    "MetricsConfig",
    "TcpLimits",
    "ZoneConfig",
    "default_config",
    "load_config",
    "parse_listen",
    "parse_metrics_listen",
    "parse_zone_arg",
    "with_overrides",
]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""Repository root: the parent of the ``nameserver`` package directory."""

DEFAULT_PORT = 5353
DEFAULT_METRICS_PORT = 9153  # as CoreDNS's Prometheus plugin
LOG_LEVELS = ("debug", "info", "warning", "error")
UDP_PAYLOAD_MIN = 512
UDP_PAYLOAD_MAX = 4096
MAX_IDENTITY_BYTES = 255  # one DNS <character-string>


@dataclass(frozen=True, slots=True)
class Listener:
    """An address/port pair to serve DNS on (UDP and TCP)."""

    address: str  # IPv4 or IPv6 literal, normalised by ipaddress
    port: int


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """A zone to serve: its origin and the zone file to load it from."""

    origin: str  # absolute, lowercase, with trailing dot (e.g. "coop.")
    file: Path  # absolute path


@dataclass(frozen=True, slots=True)
class Identity:
    """Server identity answers; ``None`` means the query is REFUSED / option omitted."""

    server_id: str | None = None  # CH TXT id.server
    hostname: str | None = None  # CH TXT hostname.bind
    version: str | None = None  # CH TXT version.bind
    nsid: str | None = None  # EDNS NSID option payload


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Limits applied to DNS-over-TCP connections."""

    max_connections: int = 1000
    idle_timeout: float = 10.0  # seconds
    max_queries_per_connection: int = 0  # 0 = unlimited


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Where the Prometheus metrics are served over HTTP (``GET /metrics``)."""

    listen: Listener = Listener("127.0.0.1", DEFAULT_METRICS_PORT)


@dataclass(frozen=True, slots=True)
class Config:
    """The complete, validated server configuration."""

    listen: tuple[Listener, ...]
    zones: tuple[ZoneConfig, ...]
    identity: Identity
    tcp: TcpLimits
    udp_payload_size: int = 1232  # 512..4096
    answer_cache_entries: int = DEFAULT_CACHE_ENTRIES  # per answer cache, see the engine
    log_level: str = "info"  # debug|info|warning|error
    workers: int = 1  # query-serving processes (SO_REUSEPORT), 1..MAX_WORKERS
    control_socket: Path | None = None  # None: default_control_socket()
    metrics: MetricsConfig | None = None  # None: no metrics listener
    query_log: bool = False  # one log line per query (toggle at run time: nameserver querylog)
    user: str | None = None  # started as root: switch to this user once the sockets are open
    watch: bool = False  # reload a zone when its file changes
    source: Path | None = None  # the file it came from


class ConfigError(Exception):
    """An invalid configuration file, value or command-line argument.

    ``file``, ``key`` and ``line`` hold the location when known; ``reason`` is the bare
    explanation. ``str(err)`` combines them, e.g. ``"ns.yaml: listen[1].port: ..."``.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | Path | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.key = key
        self.line = line
        where = "" if file is None else str(file)
        if file is not None and line is not None:
            where += f":{line}"
        prefix = ": ".join(p for p in (where, key) if p)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class _Invalid(Exception):
    """Internal: a problem at a key path, turned into ConfigError by the public entry points."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


# --------------------------------------------------------------------------- helpers


def _fail(key: str, reason: str) -> NoReturn:
    raise _Invalid(key, reason)


def _child(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_keys(key: str, mapping: dict[Any, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for name in mapping:
        if not isinstance(name, str):
            _fail(key or "<top level>", f"keys must be strings, got {_type_name(name)} {name!r}")
        if name not in allowed:
            _fail(_child(key, name), f"unknown key (allowed: {', '.join(allowed)})")


def _mapping(key: str, value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        _fail(key or "<top level>", f"expected a mapping, got {_type_name(value)}")
    return value


def _int(key: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, f"expected an integer, got {_type_name(value)} {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        _fail(key, f"{value} out of range (must be {bound})")
    return value


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(key, f"expected a number, got {_type_name(value)} {value!r}")
    if not value > 0 or value == float("inf"):
        _fail(key, f"{value} must be a finite number > 0")
    return float(value)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        _fail(key, f"expected a string, got {_type_name(value)} {value!r} (quote it in YAML)")
    return value


def _address(key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        _fail(key, f"{text!r} is not an IPv4 or IPv6 address literal")


def _port(key: str, value: Any) -> int:
    return _int(key, value, 1, 65535)


def _listener_text(key: str, text: str, default_port: int = DEFAULT_PORT) -> Listener:
    text = text.strip()
    if not text:
        _fail(key, "empty listen address (expected ADDR or ADDR@PORT)")
    addr, sep, port_text = text.rpartition("@")
    if not sep:
        return Listener(_address(key, text), default_port)
    if not port_text.isdigit() or not port_text.isascii():
        _fail(key, f"port {port_text!r} in {text!r} is not a number (expected ADDR@PORT)")
    return Listener(_address(key, addr), _port(key, int(port_text)))


def _listener(key: str, value: Any, default_port: int = DEFAULT_PORT) -> Listener:
    if isinstance(value, str):
        return _listener_text(key, value, default_port)
    if isinstance(value, dict):
        _check_keys(key, value, ("address", "port"))
        if "address" not in value:
            _fail(key, "missing required key 'address'")
        address = _address(_child(key, "address"), _str(_child(key, "address"), value["address"]))
        port = value.get("port", default_port)
        return Listener(address, _port(_child(key, "port"), port))
    _fail(
        key,
        f"expected an 'ADDR@PORT' string or an {{address, port}} mapping, "
        f"got {_type_name(value)} {value!r} (quote it in YAML)",
    )


def _origin(key: str, value: Any) -> str:
    text = _str(key, value).strip()
    if not text or text == "@":
        _fail(key, "origin must be a domain name such as 'coop.'")
    if any(ch.isspace() for ch in text):
        _fail(key, f"{text!r} contains whitespace")
    try:
        name = dns.name.from_text(text, origin=dns.name.root)
    except dns.exception.DNSException as exc:
        _fail(key, f"{text!r} is not a valid domain name: {exc}")
    if name.is_wild():
        _fail(key, f"{text!r} is a wildcard name, not a zone origin")
    return name.canonicalize().to_text()


def _zone_path(key: str, value: Any, base: Path) -> Path:
    text = _str(key, value)
    if not text.strip():
        _fail(key, "zone file path is empty")
    return (base / text).resolve()


def _zone(key: str, value: Any, base: Path) -> ZoneConfig:
    mapping = _mapping(key, value)
    _check_keys(key, mapping, ("origin", "file"))
    for required in ("origin", "file"):
        if required not in mapping:
            _fail(key, f"missing required key {required!r}")
    return ZoneConfig(
        origin=_origin(_child(key, "origin"), mapping["origin"]),
        file=_zone_path(_child(key, "file"), mapping["file"], base),
    )


def _list(key: str, value: Any, item: Callable[[str, Any], Any]) -> list[Any]:
    if not isinstance(value, list):
        _fail(key, f"expected a list, got {_type_name(value)}")
    return [item(f"{key}[{i}]", v) for i, v in enumerate(value)]


def _check_listeners(key: str, listeners: Iterable[Listener]) -> tuple[Listener, ...]:
    seen: dict[Listener, int] = {}
    result = tuple(listeners)
    if not result:
        _fail(key, "at least one listener is required")
    for i, listener in enumerate(result):
        if listener in seen:
            _fail(
                f"{key}[{i}]",
                f"duplicate listener {listener.address}@{listener.port} "
                f"(same as {key}[{seen[listener]}])",
            )
        seen[listener] = i
    return result


def _check_zones(key: str, zones: Iterable[ZoneConfig]) -> tuple[ZoneConfig, ...]:
    seen: dict[str, int] = {}
    result = tuple(zones)
    for i, zone in enumerate(result):
        if zone.origin in seen:
            _fail(
                f"{key}[{i}].origin",
                f"duplicate zone origin {zone.origin!r} (same as {key}[{seen[zone.origin]}])",
            )
        seen[zone.origin] = i
    return result


def _identity(key: str, value: Any) -> Identity:
    mapping = _mapping(key, value)
    fields = [f.name for f in dataclasses.fields(Identity)]
    _check_keys(key, mapping, fields)
    values: dict[str, str | None] = {}
    for name in fields:
        raw = mapping.get(name)
        if raw is None:
            values[name] = None
            continue
        text = _str(_child(key, name), raw)
        if len(text.encode("utf-8")) > MAX_IDENTITY_BYTES:
            _fail(_child(key, name), f"longer than {MAX_IDENTITY_BYTES} bytes (UTF-8)")
        values[name] = text
    return Identity(**values)


def _tcp(key: str, value: Any) -> TcpLimits:
    mapping = _mapping(key, value)
    _check_keys(key, mapping, [f.name for f in dataclasses.fields(TcpLimits)])
    d = TcpLimits()
    return TcpLimits(
        max_connections=_int(
            _child(key, "max_connections"), mapping.get("max_connections", d.max_connections), 1
        ),
        idle_timeout=_positive_float(
            _child(key, "idle_timeout"), mapping.get("idle_timeout", d.idle_timeout)
        ),
        max_queries_per_connection=_int(
            _child(key, "max_queries_per_connection"),
            mapping.get("max_queries_per_connection", d.max_queries_per_connection),
            0,
        ),
    )


def _log_level(key: str, value: Any) -> str:
    level = _str(key, value).strip().lower()
    if level not in LOG_LEVELS:
        _fail(key, f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(key, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _metrics(key: str, value: Any) -> MetricsConfig:
    mapping = _mapping(key, value)
    _check_keys(key, mapping, ("listen",))
    if mapping.get("listen") is None:
        return MetricsConfig()
    return MetricsConfig(_listener(_child(key, "listen"), mapping["listen"], DEFAULT_METRICS_PORT))


def _user(key: str, value: Any) -> str:
    name = _str(key, value)
    if not name or name != name.strip() or any(ch.isspace() or ch == ":" for ch in name):
        _fail(key, f"{name!r} is not a user name")
    return name


_TOP_KEYS = (
    "listen", "zones", "identity", "tcp", "udp_payload_size", "answer_cache_entries",
    "log_level", "workers", "control_socket", "metrics", "query_log", "user", "watch",
)
CACHE_ENTRIES_MIN, CACHE_ENTRIES_MAX = 1_000, 10_000_000
MAX_WORKERS = 256


def _build(data: Any, base: Path, source: Path | None) -> Config:
    """Validate parsed YAML (``None`` = empty document) into a Config."""
    defaults = default_config()
    if data is None:
        data = {}
    top = _mapping("", data)
    _check_keys("", top, _TOP_KEYS)

    def get(name: str) -> Any:
        return top.get(name)  # a key present with a null value counts as absent

    listen = defaults.listen
    if get("listen") is not None:
        listen = _check_listeners("listen", _list("listen", get("listen"), _listener))
    zones = defaults.zones
    if get("zones") is not None:
        zones = _check_zones("zones", _list("zones", get("zones"), lambda k, v: _zone(k, v, base)))
    identity = defaults.identity
    if get("identity") is not None:
        identity = _identity("identity", get("identity"))
    tcp = defaults.tcp if get("tcp") is None else _tcp("tcp", get("tcp"))
    udp = defaults.udp_payload_size
    if get("udp_payload_size") is not None:
        udp = _int("udp_payload_size", get("udp_payload_size"), UDP_PAYLOAD_MIN, UDP_PAYLOAD_MAX)
    cache_entries = defaults.answer_cache_entries
    if get("answer_cache_entries") is not None:
        cache_entries = _int(
            "answer_cache_entries",
            get("answer_cache_entries"),
            CACHE_ENTRIES_MIN,
            CACHE_ENTRIES_MAX,
        )
    log_level = defaults.log_level
    if get("log_level") is not None:
        log_level = _log_level("log_level", get("log_level"))
    workers = defaults.workers
    if get("workers") is not None:
        workers = _int("workers", get("workers"), 1, MAX_WORKERS)
    control_socket = None
    if get("control_socket") is not None:
        control_socket = (base / _str("control_socket", get("control_socket"))).resolve()
    metrics = None if get("metrics") is None else _metrics("metrics", get("metrics"))
    query_log = defaults.query_log
    if get("query_log") is not None:
        query_log = _bool("query_log", get("query_log"))
    user = None if get("user") is None else _user("user", get("user"))
    watch = defaults.watch if get("watch") is None else _bool("watch", get("watch"))
    return Config(
        listen=listen,
        zones=zones,
        identity=identity,
        tcp=tcp,
        udp_payload_size=udp,
        answer_cache_entries=cache_entries,
        log_level=log_level,
        workers=workers,
        control_socket=control_socket,
        metrics=metrics,
        query_log=query_log,
        user=user,
        watch=watch,
        source=source,
    )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merge keys may legitimately override
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key; let SafeLoader report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


# --------------------------------------------------------------------------- public API


def default_config() -> Config:
    """The built-in configuration: loopback on port 5353 serving the shipped coop. zone."""
    return Config(
        listen=(Listener("127.0.0.1", DEFAULT_PORT), Listener("::1", DEFAULT_PORT)),
        zones=(ZoneConfig("coop.", (REPO_ROOT / "zones" / "coop.signed.zone").resolve()),),
        identity=Identity(),
        tcp=TcpLimits(),
    )


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML configuration file at ``path``.

    Relative zone file paths are resolved against the file's directory. Raises
    ConfigError for unreadable files, YAML syntax errors and invalid values.
    """
    source = Path(path).resolve()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", file=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8: {exc}", file=path) from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        reason = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
        line = mark.line + 1 if mark is not None else None
        if mark is not None:
            reason += f" at column {mark.column + 1}"
        raise ConfigError(reason, file=path, line=line) from exc
    try:
        return _build(data, source.parent, source)
    except _Invalid as exc:
        raise ConfigError(exc.reason, file=path, key=exc.key) from None


def parse_listen(text: str) -> Listener:
    """Parse a ``--listen`` value: ``ADDR@PORT`` or ``ADDR`` (port 5353), e.g. ``::1@53``."""
    try:
        return _listener_text("listen", text)
    except _Invalid as exc:
        raise ConfigError(f"invalid listen address {text!r}: {exc.reason}") from None


def parse_metrics_listen(text: str) -> MetricsConfig:
    """Parse a ``--metrics`` value: ``ADDR@PORT`` or ``ADDR`` (port 9153)."""
    try:
        return MetricsConfig(_listener_text("metrics", text, DEFAULT_METRICS_PORT))
    except _Invalid as exc:
        raise ConfigError(f"invalid metrics address {text!r}: {exc.reason}") from None


def parse_zone_arg(text: str) -> ZoneConfig:
    """Parse a ``--zone`` value ``ORIGIN=PATH``; a relative PATH is relative to the cwd."""
    origin, sep, file = text.partition("=")
    if not sep:
        raise ConfigError(f"invalid zone {text!r}: expected ORIGIN=PATH")
    try:
        return ZoneConfig(_origin("origin", origin), _zone_path("file", file, Path.cwd()))
    except _Invalid as exc:
        raise ConfigError(f"invalid zone {text!r}: {exc.key}: {exc.reason}") from None


def default_control_socket() -> Path:
    """Where the control socket lives unless configured: a directory only its owner
    can enter, under $XDG_RUNTIME_DIR, /run (root) or the temporary directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "nameserver" / "control.sock"
    if os.geteuid() == 0:
        return Path("/run/nameserver/control.sock")
    return Path(tempfile.gettempdir()) / f"nameserver-{os.geteuid()}" / "control.sock"


def with_overrides(
    cfg: Config,
    listen: list[Listener] | None,
    zones: list[ZoneConfig] | None,
    workers: int | None = None,
    control_socket: Path | None = None,
    *,
    metrics: MetricsConfig | None = None,
    query_log: bool | None = None,
    user: str | None = None,
    watch: bool | None = None,
) -> Config:
    """Apply command-line values: when given (not ``None``) ``--listen``/``--zone``
    replace the configuration's lists rather than extending them, and ``--workers``,
    ``--control``, ``--metrics``, ``--query-log``, ``--user`` and ``--watch`` replace
    the configured values."""
    try:
        if metrics is not None:
            cfg = dataclasses.replace(cfg, metrics=metrics)
        if query_log is not None:
            cfg = dataclasses.replace(cfg, query_log=_bool("--query-log", query_log))
        if user is not None:
            cfg = dataclasses.replace(cfg, user=_user("--user", user))
        if watch is not None:
            cfg = dataclasses.replace(cfg, watch=_bool("--watch", watch))
        if workers is not None:
            cfg = dataclasses.replace(cfg, workers=_int("--workers", workers, 1, MAX_WORKERS))
        if control_socket is not None:
            cfg = dataclasses.replace(cfg, control_socket=control_socket.resolve())
        if listen is not None:
            cfg = dataclasses.replace(cfg, listen=_check_listeners("--listen", listen))
        if zones is not None:
            cfg = dataclasses.replace(cfg, zones=_check_zones("--zone", zones))
    except _Invalid as exc:
        raise ConfigError(exc.reason, key=exc.key) from None
    return cfg
