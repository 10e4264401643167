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


def sign_with_bind(tmp: Path, source: Path, flavour: str, origin: str = "coop") -> Path:
    """Make a KSK and a ZSK in ``tmp`` and sign ``source`` with them; return the signed file."""
    for tool in ("dnssec-keygen", "dnssec-signzone"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (bind9-utils) is not installed: run tests/setup.sh")
    keys = []
    for extra in (["-f", "KSK"], []):
        out = subprocess.run(
            ["dnssec-keygen", "-q", "-K", str(tmp), "-a", "ECDSAP256SHA256", *extra, origin],
            check=True, capture_output=True, text=True, timeout=30,
        )
        keys.append(out.stdout.strip())
    zone = tmp / "unsigned.zone"
    text = source.read_text()
    text += "".join(f"$INCLUDE {tmp / k}.key\n" for k in keys)
    zone.write_text(text)
    signed = tmp / f"{flavour}.zone"
    subprocess.run(
        ["dnssec-signzone", "-q", "-K", str(tmp), "-o", origin, *FLAVOURS[flavour],
         "-f", str(signed), str(zone)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return signed
