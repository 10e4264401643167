"""DNSSEC keys: generation, BIND's key-file format both ways, DS records, ``keygen``."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from nameserver.dnssec import commands
from nameserver.dnssec.keys import (
    KeyFileError,
    SigningKey,
    ds_record,
    generate_key,
    key_file_text,
    load_key,
    load_keys,
    private_file_text,
    write_key,
)

ORIGIN = dns.name.from_text("coop.")
TIMEOUT = 60
ALGORITHMS = [("ecdsap256sha256", 13, "ECDSAP256SHA256"), ("ed25519", 15, "ED25519"),
              ("rsasha256", 8, "RSASHA256")]

needs_bind = pytest.mark.skipif(
    shutil.which("dnssec-keygen") is None or shutil.which("dnssec-signzone") is None,
    reason="BIND's dnssec tools (bind9-utils) are not installed",
)


def _signs_validly(key: SigningKey) -> None:
    """A signature made with the key validates against its DNSKEY (dnspython)."""
    rrset = dns.rrset.from_text("www.coop.", 3600, "IN", "A", "192.0.2.1", "192.0.2.2")
    dnskeys = dns.rrset.from_rdata(ORIGIN, 3600, key.dnskey)
    rrsig = dns.dnssec.sign(rrset, key.private_key, ORIGIN, key.dnskey, lifetime=3600)
    assert rrsig.key_tag == key.key_tag
    dns.dnssec.validate_rrsig(rrset, rrsig, {ORIGIN: dnskeys})


@pytest.mark.parametrize(("name", "number", "mnemonic"), ALGORITHMS)
@pytest.mark.parametrize("ksk", [True, False])
def test_generate_write_load_round_trip(
    tmp_path: Path, name: str, number: int, mnemonic: str, ksk: bool
) -> None:
    key = generate_key("coop.", name, ksk=ksk)
    assert key.algorithm == number and key.ksk is ksk
    assert key.dnskey.flags == (257 if ksk else 256)
    assert key.key_tag == dns.dnssec.key_id(key.dnskey)
    public = key.private_key.public_key()
    assert key.dnskey == dns.dnssec.make_dnskey(public, number, flags=key.dnskey.flags)
    key_path, private_path = write_key(key, tmp_path)
    assert key_path.name == f"Kcoop.+{number:03d}+{key.key_tag:05d}.key"
    assert private_path.name == f"Kcoop.+{number:03d}+{key.key_tag:05d}.private"
    assert key.path == private_path

    key_text = key_path.read_text()
    kind = "key-signing" if ksk else "zone-signing"
    assert key_text.startswith(f"; This is a {kind} key, keyid {key.key_tag}, for coop.\n")
    assert re.search(r"^; Created: \d{14} \(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\)$",
                     key_text, re.M)
    assert re.search(rf"^coop\. IN DNSKEY {257 if ksk else 256} 3 {number} ", key_text, re.M)

    lines = private_path.read_text().splitlines()
    assert lines[0] == "Private-key-format: v1.3"
    assert lines[1] == f"Algorithm: {number} ({mnemonic})"
    fields = [line.split(":")[0] for line in lines]
    if number == 8:
        assert fields[2:10] == ["Modulus", "PublicExponent", "PrivateExponent", "Prime1",
                                "Prime2", "Exponent1", "Exponent2", "Coefficient"]
    else:
        assert fields[2] == "PrivateKey"
    assert fields[-3:] == ["Created", "Publish", "Activate"]

    for path in (key_path, private_path):
        loaded = load_key(path)
        assert loaded.dnskey == key.dnskey
        assert (loaded.key_tag, loaded.ksk, loaded.algorithm) == (key.key_tag, ksk, number)
        assert loaded.origin == ORIGIN
        assert loaded.timing == key.timing
        _signs_validly(loaded)
    assert key_file_text(load_key(key_path)) == key_text
    assert private_file_text(load_key(key_path)).splitlines() == lines


def test_private_file_is_never_world_readable_and_never_overwritten(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        key = generate_key(ORIGIN, ksk=True)
        key_path, private_path = write_key(key, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o644
    before = private_path.read_bytes()
    with pytest.raises(FileExistsError):
        write_key(key, tmp_path)
    assert private_path.read_bytes() == before


def test_load_keys_filters_by_zone_and_orders_ksk_first(tmp_path: Path) -> None:
    zsk = generate_key(ORIGIN)
    ksk = generate_key(ORIGIN, ksk=True)
    other = generate_key("example.", ksk=True)
    for k in (zsk, ksk, other):
        write_key(k, tmp_path)
    (tmp_path / "README").write_text("not a key\n")
    keys = load_keys(tmp_path, "coop.")
    assert [(k.key_tag, k.ksk) for k in keys] == [(ksk.key_tag, True), (zsk.key_tag, False)]
    assert [k.key_tag for k in load_keys(tmp_path, "example.")] == [other.key_tag]
    assert load_keys(tmp_path, "org.") == []


def test_bad_key_files_are_refused_with_the_file_named(tmp_path: Path) -> None:
    a, b = generate_key(ORIGIN), generate_key(ORIGIN)
    a_key, a_private = write_key(a, tmp_path)
    _b_key, b_private = write_key(b, tmp_path)
    # a's DNSKEY with b's private key
    a_private.unlink()
    a_private.write_text(b_private.read_text())
    with pytest.raises(KeyFileError, match="does not match the DNSKEY"):
        load_key(a_key)
    a_private.write_text("Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\n")
    with pytest.raises(KeyFileError, match=r"\.private: missing field PrivateKey"):
        load_key(a_key)
    a_private.write_text("Private-key-format: v1.3\nAlgorithm: 15 (ED25519)\nPrivateKey: AA==\n")
    with pytest.raises(KeyFileError, match="does not match the DNSKEY's 13"):
        load_key(a_key)
    a_private.unlink()
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(a_key)
    with pytest.raises(ValueError, match="unsupported algorithm"):
        generate_key(ORIGIN, "rsasha1")


def test_ds_record() -> None:
    key = generate_key(ORIGIN, ksk=True)
    ds = ds_record(key)
    assert ds.key_tag == key.key_tag and ds.algorithm == 13 and ds.digest_type == 2
    assert ds == dns.dnssec.make_ds(ORIGIN, key.dnskey, "SHA256")
    assert ds_record(key, "SHA384").digest_type == 4


@needs_bind
@pytest.mark.parametrize(("name", "number", "mnemonic"), ALGORITHMS)
def test_keys_made_by_dnssec_keygen_load_and_sign(
    tmp_path: Path, name: str, number: int, mnemonic: str
) -> None:
    args = ["dnssec-keygen", "-q", "-K", str(tmp_path), "-a", mnemonic, "-f", "KSK"]
    if number == 8:
        args += ["-b", "2048"]
    base = subprocess.run([*args, "coop"], capture_output=True, text=True, check=True,
                          timeout=TIMEOUT).stdout.strip()
    key = load_key(tmp_path / f"{base}.private")
    assert key.ksk and key.algorithm == number and key.origin == ORIGIN
    assert f"{key.key_tag:05d}" in base
    _signs_validly(key)
    # We render BIND's own files byte for byte.
    assert key_file_text(key) == (tmp_path / f"{base}.key").read_text()
    assert private_file_text(key) == (tmp_path / f"{base}.private").read_text()
    # Our DS is the one dnssec-dsfromkey computes.
    if shutil.which("dnssec-dsfromkey"):
        out = subprocess.run(["dnssec-dsfromkey", "-2", str(tmp_path / f"{base}.key")],
                             capture_output=True, text=True, check=True, timeout=TIMEOUT)
        theirs = out.stdout.split()
        ours = ds_record(key).to_text().split()
        assert theirs[-4:-1] == ours[:3]
        assert theirs[-1].upper() == "".join(ours[3:]).upper()


TINY_ZONE = """\
$ORIGIN coop.
$TTL 3600
@       SOA ns1.nic.coop. hostmaster.nic.coop. 1 7200 1800 1209600 900
        NS  ns1.nic.coop.
ns1.nic A   192.0.2.1
www.nic A   192.0.2.80
deleg   NS  ns1.deleg
ns1.deleg A 203.0.113.1
"""


@needs_bind
@pytest.mark.parametrize("algorithm", ["ecdsap256sha256", "ed25519"])
def test_our_keys_work_with_dnssec_signzone_and_verify(tmp_path: Path, algorithm: str) -> None:
    keydir = tmp_path / "keys"
    for ksk in (True, False):
        write_key(generate_key(ORIGIN, algorithm, ksk=ksk), keydir)
    zone = tmp_path / "coop.zone"
    zone.write_text(TINY_ZONE)
    signed = tmp_path / "coop.signed"
    result = subprocess.run(
        ["dnssec-signzone", "-K", str(keydir), "-S", "-3", "-", "-o", "coop.", "-f",
         str(signed), str(zone)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    assert "KSKs: 1 active" in report and "ZSKs: 1 active" in report
    if shutil.which("dnssec-verify"):
        verify = subprocess.run(["dnssec-verify", "-o", "coop.", str(signed)],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert verify.returncode == 0, verify.stderr


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keydir = tmp_path / "k"
    assert commands.main(["keygen", "--origin", "coop.", "--ksk", "--directory",
                          str(keydir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(".key") and out[1].endswith(".private")
    key = load_key(out[1])
    assert key.ksk and key.algorithm == 13
    assert out[2] == f"coop. IN DS {ds_record(key).to_text()}"
    assert dns.rdatatype.from_text(out[2].split()[2]) == dns.rdatatype.DS

    assert commands.main(["keygen", "--origin", "coop", "-a", "ed25519", "-K",
                          str(keydir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "+015+" in out[0]  # a ZSK: no DS
    assert len(load_keys(keydir, "coop.")) == 2

    assert commands.main(["keygen", "--origin", "bad..name", "-K", str(keydir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nameserver: bad origin") and err.count("\n") == 1
