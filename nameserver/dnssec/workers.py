"""Worker processes: the pool, and the signature and verification jobs they run.

Keys reach the workers as PEM (loaded once per process); jobs carry an RRset's owner
key, type, TTL and canonical RDATA, and come back as RRSIG text and wire.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import multiprocessing
import multiprocessing.pool
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from nameserver.dnssec.nsec3 import key_is_wild, key_to_wire
from nameserver.dnssec.zonedata import (
    _IN,
    _RR_HEAD,
    _RRSIG_HEAD,
    SignError,
    _sigtime,
    _type_text,
)

__all__ = ["worker_pool"]


def _worker_init() -> None:
    gc.disable()  # short-lived tasks, no reference cycles; the parent's heap stays shared


@contextlib.contextmanager
def worker_pool(workers: int | None = None) -> Iterator[multiprocessing.pool.Pool | None]:
    """A pool of *workers* forked processes for reading and signing (None if <= 1).

    Create it before loading a big zone so that the workers are forked small.
    """
    n = (os.cpu_count() or 1) if workers is None else workers
    if n <= 1:
        yield None
        return
    gc.collect()
    gc.freeze()  # what the parent holds now is never touched by the children's GC
    try:
        pool = multiprocessing.get_context("fork").Pool(n, initializer=_worker_init)
    finally:
        gc.unfreeze()
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


_PRIVATE_KEYS: dict[bytes, Any] = {}


def _private_key(pem: bytes) -> Any:
    key = _PRIVATE_KEYS.get(pem)
    if key is None:
        key = _PRIVATE_KEYS[pem] = serialization.load_pem_private_key(pem, password=None)
    return key


def _signer(algorithm: int, key: Any) -> Callable[[bytes], bytes]:
    if algorithm == 13:
        ecdsa = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

        def sign_ecdsa(data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign_ecdsa
    if algorithm == 15:
        return key.sign  # type: ignore[no-any-return]
    if algorithm == 8:
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return lambda data: key.sign(data, pkcs1, sha256)  # type: ignore[no-any-return]
    raise SignError(f"cannot sign with algorithm {algorithm}")


def _verifier(algorithm: int, key: Any) -> Callable[[bytes, bytes], bool]:
    public = key.public_key()

    def verify(data: bytes, sig: bytes) -> bool:
        try:
            if algorithm == 13:
                if len(sig) != 64:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
                )
                public.verify(der, data, ec.ECDSA(hashes.SHA256()))
            elif algorithm == 15:
                public.verify(sig, data)
            else:
                public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify


def _labels(key: bytes) -> int:
    count = key.count(b"\x00")
    return count - 1 if key_is_wild(key) else count


def _signed_rrs(key: bytes, rdtype: int, ttl: int, canons: Sequence[bytes]) -> bytes:
    prefix = key_to_wire(key) + _RR_HEAD.pack(rdtype, _IN, ttl)
    return b"".join(prefix + len(c).to_bytes(2, "big") + c for c in canons)


def _sign_batch(batch: tuple[Any, ...]) -> list[tuple[str, bytes]]:
    """Worker: RRSIGs for jobs (key, type, ttl, expiration, canonical RDATA sorted)."""
    pem, algorithm, tag, signer_wire, signer_text, inception, jobs = batch
    sign = _signer(algorithm, _private_key(pem))
    inception_text = _sigtime(inception)
    b64 = base64.b64encode
    out = []
    for key, rdtype, ttl, expiration, canons in jobs:
        labels = _labels(key)
        head = _RRSIG_HEAD.pack(rdtype, algorithm, labels, ttl, expiration, inception, tag)
        head += signer_wire
        sig = sign(head + _signed_rrs(key, rdtype, ttl, canons))
        text = (
            f"{_type_text(rdtype)} {algorithm} {labels} {ttl} {_sigtime(expiration)} "
            f"{inception_text} {tag} {signer_text} {b64(sig).decode('ascii')}"
        )
        out.append((text, head + sig))
    return out


def _verify_batch(batch: tuple[Any, ...]) -> list[bool]:
    """Worker: does each old RRSIG (canonical wire) verify over the current RRset?"""
    pem, algorithm, signer_len, jobs = batch
    verify = _verifier(algorithm, _private_key(pem))
    cut = 18 + signer_len
    return [
        verify(rrsig[:cut] + _signed_rrs(key, rdtype, ttl, canons), rrsig[cut:])
        for key, rdtype, ttl, rrsig, canons in jobs
    ]


def _run(
    pool: multiprocessing.pool.Pool | None,
    func: Callable[[Any], list[Any]],
    batches: Iterable[Any],
) -> Iterator[list[Any]]:
    if pool is None:
        return map(func, batches)
    return pool.imap(func, batches)
