"""Sign test zones with BIND's dnssec-signzone: the standard signer we must serve as is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# dnssec-signzone options for each denial flavour we serve.
FLAVOURS = {
    "nsec3-optout": ["-3", "-", "-H", "0", "-A"],
    "nsec3": ["-3", "-", "-H", "0"],
    "nsec": [],
}


def sign_with_bind(
    tmp: Path, source: Path, flavour: str, origin: str = "coop", extra: tuple[str, ...] = (),
    output: str | None = None,
) -> Path:
    """Sign ``source`` with a KSK and a ZSK kept in ``tmp`` (made on first use); return
    the signed file. ``extra`` goes to dnssec-signzone (e.g. a validity window)."""
    for tool in ("dnssec-keygen", "dnssec-signzone"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (bind9-utils) is not installed: run tests/setup.sh")
    keys = sorted(p.name[: -len(".key")] for p in tmp.glob(f"K{origin}.+*.key"))
    if not keys:
        for flags in (["-f", "KSK"], []):
            out = subprocess.run(
                ["dnssec-keygen", "-q", "-K", str(tmp), "-a", "ECDSAP256SHA256", *flags, origin],
                check=True, capture_output=True, text=True, timeout=30,
            )
            keys.append(out.stdout.strip())
    zone = tmp / "unsigned.zone"
    text = source.read_text()
    text += "".join(f"$INCLUDE {tmp / k}.key\n" for k in keys)
    zone.write_text(text)
    signed = tmp / (output or f"{flavour}.zone")
    subprocess.run(
        ["dnssec-signzone", "-q", "-K", str(tmp), "-o", origin, *FLAVOURS[flavour], *extra,
         "-f", str(signed), str(zone)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return signed
