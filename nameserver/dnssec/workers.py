"""Worker processes: the pool, and the signature and verification jobs they run.

Keys reach the workers as PEM (loaded once per process; jobs run in the signing
process itself get the key objects). A job carries an RRset's owner key, type, TTL and
canonical RDATA, and perhaps an old RRSIG to verify and keep; it comes back as RRSIG
text (and canonical wire when ZONEMD needs it).
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
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

if TYPE_CHECKING:
    import multiprocessing.pool

__all__ = ["worker_pool"]


def _worker_init() -> None:
    gc.disable()  # short-lived tasks, no reference cycles; the parent's heap stays shared


@contextlib.contextmanager
def worker_pool(workers: int | None = None) -> Iterator[multiprocessing.pool.Pool | None]:
    """A pool of *workers* forked processes for signing (None if <= 1).

    Create it before loading a big zone so that the workers are forked small.
    """
    n = (os.cpu_count() or 1) if workers is None else workers
    if n <= 1:
        yield None
        return
    gc.collect()
    gc.freeze()  # what the parent holds now is never touched by the children's GC
    try:
        import multiprocessing  # here: a zone signed in-process does without it

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


def _private_key(key: bytes | Any) -> Any:
    """The private key from its PEM (loaded once per process), or the key object itself
    (a job run in the process that holds the key)."""
    if type(key) is not bytes:
        return key
    loaded = _PRIVATE_KEYS.get(key)
    if loaded is None:
        from cryptography.hazmat.primitives import serialization

        loaded = _PRIVATE_KEYS[key] = serialization.load_pem_private_key(key, password=None)
    return loaded


def _signer(algorithm: int, key: Any) -> Callable[[bytes], bytes]:
    if algorithm == 13:
        # RFC 6979 (the same input gives the same signature); hashed here by hashlib,
        # a little quicker than cryptography's hash objects.
        ecdsa = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)
        sha256 = hashlib.sha256

        def sign_ecdsa(data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(sha256(data).digest(), ecdsa))
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


def jitter(key: bytes, rdtype: int, spread: int) -> int:
    """How much earlier than the others this RRset's signatures expire (0..spread):
    deterministic, so that re-signing the same zone gives the same expirations."""
    if spread <= 0:
        return 0
    digest = hashlib.blake2b(key + rdtype.to_bytes(2, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (spread + 1)


def rrsig_text(canon: bytes, signer_len: int, signer_text: str) -> str:
    """An RRSIG's presentation text from its canonical wire (signature unbroken)."""
    cov, alg, labels, ttl, exp, inc, tag = _RRSIG_HEAD.unpack_from(canon)
    sig = base64.b64encode(canon[18 + signer_len :]).decode("ascii")
    return (f"{_type_text(cov)} {alg} {labels} {ttl} {_sigtime(exp)} {_sigtime(inc)} "
            f"{tag} {signer_text} {sig}")


def sign_jobs(batch: tuple[Any, ...]) -> tuple[list[str], list[bytes] | None, int]:
    """Worker: one RRSIG per job, in order.

    *batch* is (keys, signer wire, signer text, inception, expiration, spread,
    want_canon, jobs): keys a tuple of (PEM or key, algorithm, key tag) by key index, a job
    (key index, owner key, type, TTL, canonical RDATA sorted, old RRSIG or None). A job
    that brings an old RRSIG (canonical wire) gets it back if it still verifies over
    the RRset, else a new one. Returns the RRSIG texts, their canonical wire (with
    *want_canon*) and how many old ones were kept.
    """
    keys, signer_wire, signer_text, inception, expiration, spread, want_canon, jobs = batch
    signers: dict[int, Callable[[bytes], bytes]] = {}
    verifiers: dict[int, Callable[[bytes, bytes], bool]] = {}
    inception_text = _sigtime(inception)
    cut = 18 + len(signer_wire)
    b64 = base64.b64encode
    texts: list[str] = []
    canons: list[bytes] | None = [] if want_canon else None
    kept = 0
    for index, key, rdtype, ttl, rdatas, old in jobs:
        pem, algorithm, tag = keys[index]
        if old is not None:
            verify = verifiers.get(index)
            if verify is None:
                verify = verifiers[index] = _verifier(algorithm, _private_key(pem))
            if verify(old[:cut] + _signed_rrs(key, rdtype, ttl, rdatas), old[cut:]):
                texts.append(rrsig_text(old, len(signer_wire), signer_text))
                if canons is not None:
                    canons.append(old)
                kept += 1
                continue
        sign = signers.get(index)
        if sign is None:
            sign = signers[index] = _signer(algorithm, _private_key(pem))
        labels = _labels(key)
        exp = expiration - jitter(key, rdtype, spread)
        head = _RRSIG_HEAD.pack(rdtype, algorithm, labels, ttl, exp, inception, tag)
        head += signer_wire
        sig = sign(head + _signed_rrs(key, rdtype, ttl, rdatas))
        texts.append(f"{_type_text(rdtype)} {algorithm} {labels} {ttl} {_sigtime(exp)} "
                     f"{inception_text} {tag} {signer_text} {b64(sig).decode('ascii')}")
        if canons is not None:
            canons.append(head + sig)
    return texts, canons, kept
