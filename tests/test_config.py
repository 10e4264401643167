"""Tests for nameserver.config: YAML loading, validation and command-line overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nameserver.config import (
    DEFAULT_METRICS_PORT,
    DEFAULT_PORT,
    REPO_ROOT,
    Config,
    ConfigError,
    Identity,
    Listener,
    MetricsConfig,
    TcpLimits,
    ZoneConfig,
    default_config,
    load_config,
    parse_listen,
    parse_metrics_listen,
    parse_zone_arg,
    with_overrides,
)

FULL = """\
listen:
  - 192.0.2.1@53
  - "::1"
  - {address: "2001:db8::1", port: 8053}
  - {address: 127.0.0.1}
zones:
  - origin: COOP
    file: zones/coop.zone
  - origin: example.coop.
    file: /srv/example.zone
identity:
  server_id: ns1.example.coop
  hostname: ns1
  version: "1.0"
  nsid: ns1-ams
tcp:
  max_connections: 50
  idle_timeout: 2.5
  max_queries_per_connection: 100
udp_payload_size: 4096
answer_cache_entries: 50000
log_level: DEBUG
"""


def write(tmp_path: Path, text: str, name: str = "ns.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    return info.value


# ------------------------------------------------------------------ valid configs


def test_full_config(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    cfg = load_config(path)
    assert cfg.listen == (
        Listener("192.0.2.1", 53),
        Listener("::1", DEFAULT_PORT),
        Listener("2001:db8::1", 8053),
        Listener("127.0.0.1", DEFAULT_PORT),
    )
    assert cfg.zones == (
        ZoneConfig("coop.", tmp_path.resolve() / "zones" / "coop.zone"),
        ZoneConfig("example.coop.", Path("/srv/example.zone")),
    )
    assert cfg.identity == Identity("ns1.example.coop", "ns1", "1.0", "ns1-ams")
    assert cfg.tcp == TcpLimits(50, 2.5, 100)
    assert isinstance(cfg.tcp.idle_timeout, float)
    assert cfg.udp_payload_size == 4096
    assert cfg.answer_cache_entries == 50000
    assert cfg.log_level == "debug"
    assert cfg.source == path.resolve()


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.log_level = "debug"  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    cfg = load_config(path)
    assert dataclasses.replace(cfg, source=None) == default_config()
    assert cfg.source == path.resolve()


def test_missing_and_null_sections_take_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "log_level: warning\nidentity:\ntcp: {idle_timeout: 1}\n"))
    defaults = default_config()
    assert cfg.listen == defaults.listen
    assert cfg.zones == defaults.zones
    assert cfg.identity == Identity()
    assert cfg.tcp == TcpLimits(idle_timeout=1.0)
    assert cfg.udp_payload_size == 1232
    assert cfg.log_level == "warning"


def test_empty_zone_list_is_allowed(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "zones: []\n")).zones == ()


def test_address_normalised(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "listen: ['0:0::0001@53', {address: 2001:DB8::1}]\n"))
    assert cfg.listen == (Listener("::1", 53), Listener("2001:db8::1", DEFAULT_PORT))


def test_relative_zone_path_resolved_against_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "ns"
    conf_dir.mkdir(parents=True)
    path = write(conf_dir, "zones: [{origin: coop, file: ../zones/coop.zone}]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "etc" / "ns" / path.name)
    assert cfg.zones[0].file == (tmp_path / "etc" / "zones" / "coop.zone").resolve()
    assert cfg.zones[0].file.is_absolute()


def test_repo_example_equals_default_config() -> None:
    cfg = load_config(REPO_ROOT / "nameserver.yaml")
    assert cfg.source == (REPO_ROOT / "nameserver.yaml").resolve()
    assert dataclasses.replace(cfg, source=None) == default_config()


def test_default_config() -> None:
    cfg = default_config()
    assert cfg.listen == (Listener("127.0.0.1", 5353), Listener("::1", 5353))
    assert cfg.zones == (ZoneConfig("coop.", (REPO_ROOT / "zones" / "coop.signed.zone").resolve()),)
    assert cfg.identity == Identity(None, None, None, None)
    assert cfg.source is None
    # Operations: everything extra is off by default.
    assert cfg.metrics is None
    assert cfg.query_log is False
    assert cfg.user is None
    assert cfg.watch is False


OPERATIONS = """\
metrics:
  listen: "::1@9100"
query_log: true
user: nameserver
watch: yes
"""


def test_operations_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, OPERATIONS))
    assert cfg.metrics == MetricsConfig(Listener("::1", 9100))
    assert (cfg.query_log, cfg.user, cfg.watch) == (True, "nameserver", True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics: {}\n", MetricsConfig(Listener("127.0.0.1", DEFAULT_METRICS_PORT))),
        ("metrics: {listen: null}\n", MetricsConfig()),
        ("metrics: {listen: 0.0.0.0}\n", MetricsConfig(Listener("0.0.0.0", 9153))),
        ("metrics: {listen: {address: 127.0.0.2}}\n", MetricsConfig(Listener("127.0.0.2", 9153))),
        ("metrics: {listen: 127.0.0.1@8080}\n", MetricsConfig(Listener("127.0.0.1", 8080))),
        ("metrics: null\n", None),
        ("metrics:\n", None),
    ],
)
def test_metrics_listen(tmp_path: Path, text: str, expected: MetricsConfig | None) -> None:
    assert load_config(write(tmp_path, text)).metrics == expected
    assert Path(__file__).resolve().parent.parent == REPO_ROOT


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        # unknown keys, top level and nested, with the allowed keys listed
        ("bogus: 1\n", "bogus", "allowed: listen, zones, identity, tcp"),
        ("tcp: {max_conns: 5}\n", "tcp.max_conns", "allowed: max_connections, idle_timeout"),
        ("identity: {id: x}\n", "identity.id", "allowed: server_id, hostname, version, nsid"),
        ("zones: [{origin: coop, file: f, ttl: 5}]\n", "zones[0].ttl", "allowed: origin, file"),
        ("listen: [{address: 127.0.0.1, prot: 53}]\n", "listen[0].prot", "allowed: address"),
        ("1: x\n", "<top level>", "keys must be strings"),
        # ports
        ("listen: [127.0.0.1@53, 127.0.0.1@70000]\n", "listen[1]", "out of range"),
        ("listen: [127.0.0.1@0]\n", "listen[0]", "out of range"),
        ("listen: ['::1@http']\n", "listen[0]", "not a number"),
        ("listen: ['::1@']\n", "listen[0]", "not a number"),
        ("listen: [{address: '::1', port: 0}]\n", "listen[0].port", "out of range"),
        ("listen: [{address: '::1', port: '53'}]\n", "listen[0].port", "expected an integer"),
        ("listen: [{address: '::1', port: true}]\n", "listen[0].port", "expected an integer"),
        # addresses
        ("listen: [localhost@53]\n", "listen[0]", "not an IPv4 or IPv6"),
        ("listen: [1.2.3@53]\n", "listen[0]", "not an IPv4 or IPv6"),
        ("listen: ['[::1]@53']\n", "listen[0]", "not an IPv4 or IPv6"),
        ("listen: [{address: ns1.coop}]\n", "listen[0].address", "not an IPv4 or IPv6"),
        ("listen: [{port: 53}]\n", "listen[0]", "missing required key 'address'"),
        ("listen: ['']\n", "listen[0]", "empty"),
        ("listen: []\n", "listen", "at least one listener"),
        ("listen: [127.0.0.1@53, 127.0.0.1@53]\n", "listen[1]", "duplicate listener"),
        ("listen: ['::1', {address: '0::1', port: 5353}]\n", "listen[1]", "duplicate listener"),
        # zone origins and files
        ("zones: [{origin: 'a..coop', file: f}]\n", "zones[0].origin", "not a valid domain"),
        ("zones: [{origin: '', file: f}]\n", "zones[0].origin", "must be a domain name"),
        ("zones: [{origin: '@', file: f}]\n", "zones[0].origin", "must be a domain name"),
        ("zones: [{origin: 'co op', file: f}]\n", "zones[0].origin", "whitespace"),
        ("zones: [{origin: '*.coop', file: f}]\n", "zones[0].origin", "wildcard"),
        (f"zones: [{{origin: {'x' * 64}.coop, file: f}}]\n", "zones[0].origin", "63"),
        ("zones: [{origin: 42, file: f}]\n", "zones[0].origin", "expected a string"),
        ("zones: [{origin: coop}]\n", "zones[0]", "missing required key 'file'"),
        ("zones: [{file: f}]\n", "zones[0]", "missing required key 'origin'"),
        ("zones: [{origin: coop, file: ''}]\n", "zones[0].file", "empty"),
        ("zones: [{origin: coop, file: [a]}]\n", "zones[0].file", "expected a string"),
        (
            "zones: [{origin: coop., file: a}, {origin: x, file: b}, {origin: COOP, file: c}]\n",
            "zones[2].origin",
            "duplicate zone origin 'coop.' (same as zones[0])",
        ),
        # wrong types
        ("- listen\n", "<top level>", "expected a mapping, got list"),
        ("just a string\n", "<top level>", "expected a mapping, got str"),
        ("listen: 127.0.0.1@53\n", "listen", "expected a list"),
        ("listen: [53]\n", "listen[0]", "got int"),
        ("zones: {origin: coop}\n", "zones", "expected a list"),
        ("zones: [coop]\n", "zones[0]", "expected a mapping, got str"),
        ("identity: ns1\n", "identity", "expected a mapping"),
        ("identity: {version: 1.0}\n", "identity.version", "expected a string, got float"),
        (f"identity: {{nsid: {'x' * 256}}}\n", "identity.nsid", "255 bytes"),
        ("tcp: [1]\n", "tcp", "expected a mapping"),
        ("tcp: {max_connections: 0}\n", "tcp.max_connections", "out of range"),
        ("tcp: {max_connections: 1.5}\n", "tcp.max_connections", "expected an integer"),
        ("tcp: {idle_timeout: 0}\n", "tcp.idle_timeout", "> 0"),
        ("tcp: {idle_timeout: .inf}\n", "tcp.idle_timeout", "finite"),
        ("tcp: {idle_timeout: soon}\n", "tcp.idle_timeout", "expected a number"),
        ("tcp: {max_queries_per_connection: -1}\n", "tcp.max_queries_per_connection", "range"),
        ("udp_payload_size: 511\n", "udp_payload_size", "512..4096"),
        # operations
        ("metrics: 127.0.0.1@9153\n", "metrics", "expected a mapping, got str"),
        ("metrics: {port: 9153}\n", "metrics.port", "unknown key (allowed: listen)"),
        ("metrics: {listen: localhost@9153}\n", "metrics.listen", "not an IPv4 or IPv6"),
        ("metrics: {listen: 127.0.0.1@0}\n", "metrics.listen", "out of range"),
        ("metrics: {listen: {address: '::1', port: x}}\n", "metrics.listen.port", "integer"),
        ("query_log: 1\n", "query_log", "expected true or false, got int"),
        ("query_log: 'on'\n", "query_log", "expected true or false, got str"),
        ("watch: 2\n", "watch", "expected true or false"),
        ("user: 65534\n", "user", "expected a string, got int"),
        ("user: ''\n", "user", "is not a user name"),
        ("user: 'no body'\n", "user", "is not a user name"),
        ("udp_payload_size: 4097\n", "udp_payload_size", "512..4096"),
        ("udp_payload_size: big\n", "udp_payload_size", "expected an integer"),
        ("answer_cache_entries: 999\n", "answer_cache_entries", "1000..10000000"),
        ("answer_cache_entries: 1e9\n", "answer_cache_entries", "expected an integer"),
        ("log_level: verbose\n", "log_level", "debug, info, warning, error"),
        ("log_level: 3\n", "log_level", "expected a string"),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = load_error(tmp_path, text)
    assert err.key == key
    assert f": {key}: " in str(err)
    assert reason in str(err)


def test_error_message_format(tmp_path: Path) -> None:
    path = write(tmp_path, "listen:\n  - 127.0.0.1@53\n  - 127.0.0.1@99999\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: listen[1]: 99999 out of range (must be 1..65535)")
    assert info.value.file == path
    assert info.value.reason == "99999 out of range (must be 1..65535)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("listen:\n  - 127.0.0.1@53\nzones: [\n  {origin: coop, file: f}\n", 5),
        ("log_level: info\ntcp: {max_connections: 1\n", 3),
        ("listen:\n  - a\n - b\n", 3),
        ("log_level: info\n\tudp_payload_size: 512\n", 2),
    ],
)
def test_yaml_syntax_error_has_line(tmp_path: Path, text: str, line: int) -> None:
    err = load_error(tmp_path, text)
    assert err.line == line
    assert str(err).startswith(f"{tmp_path / 'ns.yaml'}:{line}: YAML syntax error: ")


def test_duplicate_yaml_key_is_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "log_level: info\nudp_payload_size: 512\nlog_level: debug\n")
    assert err.line == 3
    assert "duplicate key 'log_level'" in str(err)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = "listen: [&a {address: 127.0.0.1, port: 53}, {<<: *a, port: 54}]\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.listen == (Listener("127.0.0.1", 53), Listener("127.0.0.1", 54))


def test_unsafe_yaml_tag_rejected(tmp_path: Path) -> None:
    err = load_error(tmp_path, "log_level: !!python/object:os.system info\n")
    assert err.line == 1


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read file") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"log_level: \xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1@53", Listener("127.0.0.1", 53)),
        ("127.0.0.1", Listener("127.0.0.1", DEFAULT_PORT)),
        ("0.0.0.0@8053", Listener("0.0.0.0", 8053)),
        ("::1@5353", Listener("::1", 5353)),
        ("::1", Listener("::1", DEFAULT_PORT)),
        ("::", Listener("::", DEFAULT_PORT)),
        ("2001:DB8:0::1@65535", Listener("2001:db8::1", 65535)),
        ("fe80::1%eth0@53", Listener("fe80::1%eth0", 53)),
    ],
)
def test_parse_listen(text: str, expected: Listener) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["", "@53", "localhost", "127.0.0.1@", "127.0.0.1@0", "::1@65536", "::1@x", "[::1]"]
)
def test_parse_listen_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid listen address"):
        parse_listen(text)


def test_parse_zone_arg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_zone_arg("Example.COOP=zones/x.zone") == ZoneConfig(
        "example.coop.", tmp_path.resolve() / "zones" / "x.zone"
    )
    assert parse_zone_arg("coop.=/abs/coop.zone") == ZoneConfig("coop.", Path("/abs/coop.zone"))
    assert parse_zone_arg("coop=a=b.zone").file == tmp_path.resolve() / "a=b.zone"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("coop", "expected ORIGIN=PATH"),
        ("=zones/coop.zone", "origin"),
        ("a..b=f", "origin"),
        ("coop=", "file"),
    ],
)
def test_parse_zone_arg_errors(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="invalid zone") as info:
        parse_zone_arg(text)
    assert reason in str(info.value)


def _sample() -> Config:
    return dataclasses.replace(default_config(), log_level="debug", udp_payload_size=512)


def test_with_overrides_none_keeps_config() -> None:
    cfg = _sample()
    assert with_overrides(cfg, None, None) == cfg


def test_with_overrides_replaces_lists() -> None:
    cfg = _sample()
    listeners = [parse_listen("192.0.2.1@53")]
    zones = [ZoneConfig("example.coop.", Path("/z/example.zone"))]
    out = with_overrides(cfg, listeners, None)
    assert out.listen == (Listener("192.0.2.1", 53),)  # replaced, not appended
    assert out.zones == cfg.zones
    out = with_overrides(cfg, None, zones)
    assert out.listen == cfg.listen
    assert out.zones == tuple(zones)
    out = with_overrides(cfg, listeners, zones)
    assert (out.listen, out.zones) == (tuple(listeners), tuple(zones))
    assert dataclasses.replace(out, listen=cfg.listen, zones=cfg.zones) == cfg
    assert isinstance(out.listen, tuple) and isinstance(out.zones, tuple)


def test_parse_metrics_listen() -> None:
    assert parse_metrics_listen("127.0.0.1@9100") == MetricsConfig(Listener("127.0.0.1", 9100))
    assert parse_metrics_listen("::1") == MetricsConfig(Listener("::1", DEFAULT_METRICS_PORT))
    for bad in ("", "localhost@9153", "::1@", "127.0.0.1@70000"):
        with pytest.raises(ConfigError, match="invalid metrics address"):
            parse_metrics_listen(bad)


def test_with_overrides_operations() -> None:
    cfg = _sample()
    metrics = MetricsConfig(Listener("127.0.0.1", 9100))
    out = with_overrides(
        cfg, None, None, metrics=metrics, query_log=True, user="nobody", watch=True
    )
    assert (out.metrics, out.query_log, out.user, out.watch) == (metrics, True, "nobody", True)
    assert dataclasses.replace(out, metrics=None, query_log=False, user=None, watch=False) == cfg
    configured = dataclasses.replace(cfg, query_log=True, user="nameserver", watch=True)
    assert with_overrides(configured, None, None) == configured  # not given: kept
    with pytest.raises(ConfigError, match="--user: .* is not a user name"):
        with_overrides(cfg, None, None, user="a b")


def test_with_overrides_empty_zone_list_clears_zones() -> None:
    assert with_overrides(_sample(), None, []).zones == ()


def test_with_overrides_errors() -> None:
    with pytest.raises(ConfigError, match="at least one listener"):
        with_overrides(_sample(), [], None)
    dup = [parse_listen("::1"), parse_listen("::1@5353")]
    with pytest.raises(ConfigError, match=r"--listen\[1\]: duplicate listener"):
        with_overrides(_sample(), dup, None)
    zones = [parse_zone_arg("coop=/a"), parse_zone_arg("COOP.=/b")]
    with pytest.raises(ConfigError, match=r"--zone\[1\]\.origin: duplicate zone origin"):
        with_overrides(_sample(), None, zones)
