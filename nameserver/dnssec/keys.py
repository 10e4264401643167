"""DNSSEC signing keys: generation, BIND's key-file format, DS records.

Keys are stored exactly as BIND's ``dnssec-keygen`` stores them, so the two tools can
share a key directory:

* ``K<zone>+<alg>+<tag>.key``: BIND's comment header and one DNSKEY line (mode 0644);
* ``K<zone>+<alg>+<tag>.private``: ``Private-key-format: v1.3``, the algorithm, the
  key material (``PrivateKey`` for ECDSA and Ed25519, the eight RSA fields for RSA)
  and the Created/Publish/Activate timestamps. It is created with mode 0600 and
  ``O_EXCL``: an existing key is never overwritten and the secret is never readable
  by anyone else, not even for an instant.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.ttl
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "ALGORITHMS",
    "KeyFileError",
    "SigningKey",
    "algorithm_number",
    "ds_record",
    "generate_key",
    "key_file_base",
    "key_file_text",
    "load_key",
    "load_keys",
    "private_file_text",
    "private_key_pem",
    "write_key",
]

#: Supported algorithms: name accepted on the command line -> (number, BIND's mnemonic).
ALGORITHMS: dict[str, tuple[int, str]] = {
    "rsasha256": (8, "RSASHA256"),
    "ecdsap256sha256": (13, "ECDSAP256SHA256"),
    "ed25519": (15, "ED25519"),
}
_MNEMONIC = {number: mnemonic for number, mnemonic in ALGORITHMS.values()}

ZONE_KEY = 0x0100  # DNSKEY flags bit 7 (RFC 4034 §2.1.1)
SEP = 0x0001  # bit 15: Secure Entry Point, set on key-signing keys
REVOKE = 0x0080  # RFC 5011

# Order of the RSA fields in BIND's private-key file.
_RSA_FIELDS = (
    "Modulus",
    "PublicExponent",
    "PrivateExponent",
    "Prime1",
    "Prime2",
    "Exponent1",
    "Exponent2",
    "Coefficient",
)
# Timing metadata BIND may write (in this order).
_TIMING_FIELDS = ("Created", "Publish", "Activate", "Revoke", "Inactive", "Delete", "SyncPublish",
                  "SyncDelete")


class KeyFileError(Exception):
    """A key file is missing, malformed or inconsistent; the message says which and why."""


@dataclass
class SigningKey:
    """A zone's signing key: the public DNSKEY and the private key that goes with it."""

    origin: dns.name.Name
    dnskey: Any  # dns.rdtypes.ANY.DNSKEY.DNSKEY
    private_key: Any = field(repr=False)  # cryptography private key object
    algorithm: int
    key_tag: int
    ksk: bool
    path: Path | None = None
    #: BIND timing metadata in seconds since the epoch ("Created", "Publish", "Activate", ...).
    timing: dict[str, int] = field(default_factory=dict)

    @property
    def flags(self) -> int:
        return int(self.dnskey.flags)

    @property
    def role(self) -> str:
        return "KSK" if self.ksk else "ZSK"

    def describe(self) -> str:
        """``coop./ECDSAP256SHA256/12345 (KSK)`` as BIND prints keys."""
        mnemonic = _MNEMONIC.get(self.algorithm, str(self.algorithm))
        return f"{self.origin.to_text()}/{mnemonic}/{self.key_tag} ({self.role})"


def algorithm_number(algorithm: str | int) -> int:
    """13, 15 or 8 for a supported algorithm name or number; ValueError otherwise."""
    if isinstance(algorithm, int) or str(algorithm).isdigit():
        number = int(algorithm)
        if number in _MNEMONIC:
            return number
    else:
        entry = ALGORITHMS.get(str(algorithm).lower())
        if entry is not None:
            return entry[0]
    names = ", ".join(ALGORITHMS)
    raise ValueError(f"unsupported algorithm {algorithm!r} (use one of {names})")


def _as_name(origin: dns.name.Name | str) -> dns.name.Name:
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    if not origin.is_absolute():
        raise ValueError(f"zone origin {origin} must be absolute")
    return origin


def _dnskey(public_key: Any, algorithm: int, flags: int) -> Any:
    """The DNSKEY of a public key (as dns.dnssec.make_dnskey, which signing does not
    need to import): RFC 6605 §4, RFC 8080 §3, RFC 3110 §2."""
    if algorithm == 13:
        numbers = public_key.public_numbers()
        key = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    elif algorithm == 15:
        key = public_key.public_bytes_raw()
    elif algorithm == 8:
        numbers = public_key.public_numbers()
        exponent = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        length = (bytes((len(exponent),)) if len(exponent) < 256
                  else b"\x00" + len(exponent).to_bytes(2, "big"))
        key = length + exponent + numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    else:
        raise ValueError(f"unsupported algorithm {algorithm}")
    return dns.rdtypes.ANY.DNSKEY.DNSKEY(
        dns.rdataclass.IN, dns.rdatatype.DNSKEY, flags, 3, algorithm, key
    )


def _key_tag(dnskey: Any) -> int:
    """RFC 4034 Appendix B (algorithm 1 aside, which is not supported)."""
    wire = dnskey.to_wire()
    total = sum(wire[0::2]) << 8
    total += sum(wire[1::2])
    total += (total >> 16) & 0xFFFF
    return total & 0xFFFF


def _make_key(
    origin: dns.name.Name, private_key: Any, algorithm: int, flags: int, path: Path | None,
    timing: dict[str, int],
) -> SigningKey:
    dnskey = _dnskey(private_key.public_key(), algorithm, flags)
    return SigningKey(
        origin=origin,
        dnskey=dnskey,
        private_key=private_key,
        algorithm=algorithm,
        key_tag=_key_tag(dnskey),
        ksk=bool(flags & SEP),
        path=path,
        timing=timing,
    )


def generate_key(
    origin: dns.name.Name | str, algorithm: str | int = "ecdsap256sha256", ksk: bool = False
) -> SigningKey:
    """A new key for *origin*: a KSK (flags 257) if *ksk*, else a ZSK (flags 256).

    Algorithms: ecdsap256sha256 (13, the default), ed25519 (15), rsasha256 (8, 2048 bits).
    """
    origin = _as_name(origin)
    number = algorithm_number(algorithm)
    if number == 13:
        private_key: Any = ec.generate_private_key(ec.SECP256R1())
    elif number == 15:
        private_key = ed25519.Ed25519PrivateKey.generate()
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    timing = {"Created": now, "Publish": now, "Activate": now}
    return _make_key(origin, private_key, number, ZONE_KEY | (SEP if ksk else 0), None, timing)


def key_file_base(origin: dns.name.Name, algorithm: int, key_tag: int) -> str:
    """BIND's file name stem: ``Kcoop.+013+01234``."""
    return f"K{origin.to_text().lower()}+{algorithm:03d}+{key_tag:05d}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _int_b64(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64(value.to_bytes(size, "big"))


def _bind_time(seconds: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def _ctime(seconds: int) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(seconds))


def _calendar_seconds(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y%m%d%H%M%S"))


def _private_fields(key: SigningKey) -> list[tuple[str, str]]:
    pk = key.private_key
    if key.algorithm == 13:
        # Big-endian without leading zero bytes, as BIND writes it (BN_bn2bin).
        return [("PrivateKey", _int_b64(pk.private_numbers().private_value))]
    if key.algorithm == 15:
        return [("PrivateKey", _b64(pk.private_bytes_raw()))]
    numbers = pk.private_numbers()
    public = numbers.public_numbers
    return [
        ("Modulus", _int_b64(public.n)),
        ("PublicExponent", _int_b64(public.e)),
        ("PrivateExponent", _int_b64(numbers.d)),
        ("Prime1", _int_b64(numbers.p)),
        ("Prime2", _int_b64(numbers.q)),
        ("Exponent1", _int_b64(numbers.dmp1)),
        ("Exponent2", _int_b64(numbers.dmq1)),
        ("Coefficient", _int_b64(numbers.iqmp)),
    ]


def _dnskey_text(key: SigningKey) -> str:
    """``257 3 13 <base64 in 56-character groups>`` as dnssec-keygen writes it."""
    b64 = _b64(key.dnskey.key)
    groups = " ".join(b64[i : i + 56] for i in range(0, len(b64), 56))
    return f"{key.flags} {key.dnskey.protocol} {key.algorithm} {groups}"


def key_file_text(key: SigningKey) -> str:
    """The ``.key`` file: BIND's comment header and the DNSKEY line."""
    kind = "key-signing" if key.ksk else "zone-signing"
    lines = [f"; This is a {kind} key, keyid {key.key_tag}, for {key.origin.to_text()}"]
    for name in _TIMING_FIELDS:
        if name in key.timing:
            stamp = key.timing[name]
            lines.append(f"; {name}: {_bind_time(stamp)} ({_ctime(stamp)})")
    lines.append(f"{key.origin.to_text()} IN DNSKEY {_dnskey_text(key)}")
    return "\n".join(lines) + "\n"


def private_file_text(key: SigningKey) -> str:
    """The ``.private`` file in BIND's v1.3 format."""
    mnemonic = _MNEMONIC.get(key.algorithm)
    if mnemonic is None:
        raise ValueError(f"unsupported algorithm {key.algorithm}")
    lines = ["Private-key-format: v1.3", f"Algorithm: {key.algorithm} ({mnemonic})"]
    lines += [f"{name}: {value}" for name, value in _private_fields(key)]
    lines += [f"{name}: {_bind_time(key.timing[name])}" for name in _TIMING_FIELDS
              if name in key.timing]
    return "\n".join(lines) + "\n"


def _create(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want (never added any)
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
            fd = -1
            f.write(text)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def write_key(key: SigningKey, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``K<zone>+<alg>+<tag>.key`` (0644) and ``.private`` (0600) into *directory*.

    Refuses (FileExistsError) to overwrite either file. Returns (key_path, private_path)
    and sets ``key.path`` to the ``.private`` file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not key.timing:
        now = int(time.time())
        key.timing = {"Created": now, "Publish": now, "Activate": now}
    base = key_file_base(key.origin, key.algorithm, key.key_tag)
    key_path, private_path = directory / f"{base}.key", directory / f"{base}.private"
    for path in (key_path, private_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; not overwriting a key")
    # The secret first: if it cannot be written, no orphan .key is left behind.
    _create(private_path, private_file_text(key), 0o600)
    try:
        _create(key_path, key_file_text(key), 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    key.path = private_path
    return key_path, private_path


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _pair_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    name = p.name
    for suffix in (".key", ".private"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".key"), p.with_name(name + ".private")


def _read_dnskey_file(path: Path) -> tuple[dns.name.Name, Any]:
    try:
        text = path.read_text(encoding="ascii")
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a key file (non-ASCII data)") from None
    found: list[tuple[dns.name.Name, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split(";", 1)[0].strip()
        if not body:
            continue
        words = body.split()
        upper = [w.upper() for w in words]
        if "DNSKEY" not in upper:
            raise KeyFileError(f"{path}:{lineno}: expected a DNSKEY record")
        at = upper.index("DNSKEY")
        try:
            owner = dns.name.from_text(words[0])
            for word in upper[1:at]:
                if word != "IN" and not word[:1].isdigit():
                    raise ValueError(f"unexpected {word!r} before DNSKEY")
                if word[:1].isdigit():
                    dns.ttl.from_text(word)
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.DNSKEY, " ".join(words[at + 1 :])
            )
        except (ValueError, dns.exception.DNSException) as e:
            raise KeyFileError(f"{path}:{lineno}: bad DNSKEY record: {e}") from None
        found.append((owner, rdata))
    if len(found) != 1:
        raise KeyFileError(f"{path}: expected exactly one DNSKEY record, found {len(found)}")
    return found[0]


def _read_private_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="ascii")
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a private-key file (non-ASCII data)") from None
    fields: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise KeyFileError(f"{path}:{lineno}: expected 'Field: value'")
        fields[name.strip()] = value.strip()
    version = fields.get("Private-key-format", "")
    if not version.startswith("v1."):
        raise KeyFileError(f"{path}: unsupported Private-key-format {version or '(missing)'}")
    return fields


def _b64_field(path: Path, fields: dict[str, str], name: str) -> bytes:
    if name not in fields:
        raise KeyFileError(f"{path}: missing field {name}")
    try:
        return base64.b64decode(fields[name], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{path}: field {name} is not valid base64") from None


def _private_key_from_fields(path: Path, algorithm: int, fields: dict[str, str]) -> Any:
    if algorithm == 13:
        raw = _b64_field(path, fields, "PrivateKey")
        if not 1 <= len(raw) <= 32:  # BIND drops leading zero bytes
            raise KeyFileError(f"{path}: ECDSA P-256 PrivateKey must be 32 bytes, not {len(raw)}")
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    if algorithm == 15:
        raw = _b64_field(path, fields, "PrivateKey")
        if len(raw) != 32:
            raise KeyFileError(f"{path}: Ed25519 PrivateKey must be 32 bytes, not {len(raw)}")
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    v = {name: int.from_bytes(_b64_field(path, fields, name), "big") for name in _RSA_FIELDS}
    public = rsa.RSAPublicNumbers(v["PublicExponent"], v["Modulus"])
    numbers = rsa.RSAPrivateNumbers(
        v["Prime1"], v["Prime2"], v["PrivateExponent"], v["Exponent1"], v["Exponent2"],
        v["Coefficient"], public,
    )
    return numbers.private_key()


def load_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load a BIND key pair given either file of it (``.key`` or ``.private``).

    Checks that the private key belongs to the DNSKEY and that the algorithms agree;
    raises KeyFileError with ``file: reason`` otherwise.
    """
    key_path, private_path = _pair_paths(path)
    owner, dnskey = _read_dnskey_file(key_path)
    fields = _read_private_file(private_path)
    alg_text = fields.get("Algorithm", "").split()
    if not alg_text or not alg_text[0].isdigit():
        raise KeyFileError(f"{private_path}: missing or bad Algorithm field")
    algorithm = int(alg_text[0])
    if algorithm not in _MNEMONIC:
        raise KeyFileError(f"{private_path}: unsupported algorithm {algorithm}")
    if algorithm != dnskey.algorithm:
        raise KeyFileError(
            f"{private_path}: algorithm {algorithm} does not match the DNSKEY's "
            f"{int(dnskey.algorithm)} in {key_path}"
        )
    try:
        private_key = _private_key_from_fields(private_path, algorithm, fields)
    except ValueError as e:
        raise KeyFileError(f"{private_path}: invalid key material: {e}") from None
    timing = {}
    for name in _TIMING_FIELDS:
        if name in fields:
            try:
                timing[name] = _calendar_seconds(fields[name].split()[0])
            except (ValueError, IndexError):
                bad = fields[name]
                raise KeyFileError(f"{private_path}: bad {name} timestamp {bad!r}") from None
    key = _make_key(owner, private_key, algorithm, int(dnskey.flags), private_path, timing)
    if key.dnskey.key != dnskey.key:
        raise KeyFileError(
            f"{private_path}: the private key does not match the DNSKEY in {key_path}"
        )
    key.dnskey = dnskey
    key.key_tag = _key_tag(dnskey)
    return key


def load_keys(directory: str | os.PathLike[str], origin: dns.name.Name | str) -> list[SigningKey]:
    """Every ``K<origin>+*.private`` key in *directory* (with its ``.key``), sorted by
    (KSK first, algorithm, key tag). Raises KeyFileError if a pair is incomplete or bad."""
    origin = _as_name(origin)
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyFileError(f"{directory}: not a directory")
    keys: list[SigningKey] = []
    for path in sorted(directory.glob("K*.private")):
        zone_text = path.name[1:].rsplit("+", 2)[0]
        try:
            zone = dns.name.from_text(zone_text)
        except dns.exception.DNSException:
            continue
        if zone != origin:
            continue
        key = load_key(path)
        if key.origin != origin:
            raise KeyFileError(f"{path}: DNSKEY owner {key.origin} is not {origin}")
        keys.append(key)
    keys.sort(key=lambda k: (not k.ksk, k.algorithm, k.key_tag))
    return keys


def ds_record(key: SigningKey, digest: str = "SHA256") -> Any:
    """The DS record the parent publishes for *key* (dns.dnssec.make_ds)."""
    import dns.dnssec  # imported here: signing does not need it

    return dns.dnssec.make_ds(key.origin, key.dnskey, digest)


def private_key_pem(key: SigningKey | Any) -> bytes:
    """PKCS#8 PEM of a key (used to hand keys to signing worker processes)."""
    # Imported here: cryptography's serialization module costs ~20 ms to import, and
    # a zone signed in-process never needs it.
    from cryptography.hazmat.primitives import serialization

    pk = key.private_key if isinstance(key, SigningKey) else key
    return pk.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
