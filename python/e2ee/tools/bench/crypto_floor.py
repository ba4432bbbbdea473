"""The floor of ``e2ee bench crypto``: the same SFrame work done by the system's libcrypto.

:class:`FloorEncryptor` and :class:`FloorDecryptor` produce and check exactly the frames
of :class:`e2ee.sframe.Encryptor` (header, ciphertext and truncated tag, byte for byte;
a unit test holds them to it), with everything that can be done once done once, as the
fastest code on OpenSSL would do it:

* AES-CTR (suites 1-3, 6-8): one ``EVP_CIPHER_CTX`` keyed at construction; per frame only
  the IV is reset (``EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv)``), then one
  ``EVP_EncryptUpdate`` into the caller's preallocated buffer;
* HMAC (RFC 2104): two ``EVP_MD_CTX`` fed ``key XOR ipad`` and ``key XOR opad`` once; per
  frame each is copied (``EVP_MD_CTX_copy_ex``) and finished, the tag truncated to Nt
  (RFC 9605 §4.5.1), compared with ``CRYPTO_memcmp`` before anything is decrypted;
* AES-GCM (suites 4, 5): one context keyed once, the IV reset per frame.

No Python runs per byte, but each frame is about ten ctypes calls from Python (0.1 to
1 µs each, by machine) plus the header and nonce: at 100 B that is most of the time a
frame takes.  So each object has a *stub* twin (``stub=True``) running the very same
Python with every libcrypto function replaced by one that returns at once: the floor
less its stub is libcrypto's own time per frame, the figure e2ee is held to.  The key
schedule comes from the independent reference (:mod:`e2ee.tools.bench.baseline`), so
the floor never trusts e2ee for anything.  :func:`load` returns ``None`` (and
:func:`unavailable_reason` says why) when no usable libcrypto is found.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2ee.tools.bench import baseline

__all__ = [
    "FloorDecryptor",
    "FloorEncryptor",
    "Libcrypto",
    "load",
    "unavailable_reason",
]

_CANDIDATES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.dylib")
_EVP_CTRL_AEAD_GET_TAG = 0x10  # openssl/evp.h
_EVP_CTRL_AEAD_SET_TAG = 0x11
_VP = ctypes.c_void_p
_INT = ctypes.c_int
_SIZE = ctypes.c_size_t
_CP = ctypes.c_char_p
# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "OpenSSL_version": (_CP, [_INT]),
    "OpenSSL_version_num": (ctypes.c_ulong, []),
    "EVP_CIPHER_CTX_new": (_VP, []),
    "EVP_CIPHER_CTX_free": (None, [_VP]),
    "EVP_CIPHER_CTX_ctrl": (_INT, [_VP, _INT, _INT, _VP]),
    "EVP_aes_128_ctr": (_VP, []),
    "EVP_aes_256_ctr": (_VP, []),
    "EVP_aes_128_gcm": (_VP, []),
    "EVP_aes_256_gcm": (_VP, []),
    "EVP_EncryptInit_ex": (_INT, [_VP, _VP, _VP, _CP, _CP]),
    "EVP_EncryptUpdate": (_INT, [_VP, _VP, _VP, _VP, _INT]),
    "EVP_EncryptFinal_ex": (_INT, [_VP, _VP, _VP]),
    "EVP_DecryptInit_ex": (_INT, [_VP, _VP, _VP, _CP, _CP]),
    "EVP_DecryptUpdate": (_INT, [_VP, _VP, _VP, _VP, _INT]),
    "EVP_DecryptFinal_ex": (_INT, [_VP, _VP, _VP]),
    "EVP_MD_CTX_new": (_VP, []),
    "EVP_MD_CTX_free": (None, [_VP]),
    "EVP_MD_CTX_copy_ex": (_INT, [_VP, _VP]),
    "EVP_sha256": (_VP, []),
    "EVP_sha512": (_VP, []),
    "EVP_DigestInit_ex": (_INT, [_VP, _VP, _VP]),
    "EVP_DigestUpdate": (_INT, [_VP, _VP, _SIZE]),
    "EVP_DigestFinal_ex": (_INT, [_VP, _VP, _VP]),
    "CRYPTO_memcmp": (_INT, [_VP, _VP, _SIZE]),
}


@dataclass(frozen=True)
class Libcrypto:
    """The loaded library: its functions with their C signatures, and its version.

    ``stubs`` has the same names and signatures, all bound to ``OpenSSL_version_num``,
    which ignores its arguments and returns at once (extra arguments in registers are
    harmless under the x86-64 and AArch64 C calling conventions): the cost of the calls
    themselves.
    """

    path: str
    version: str
    fn: dict[str, Callable[..., Any]]
    stubs: dict[str, Callable[..., Any]]


_loaded: Libcrypto | None = None
_reason: str | None = None


def _open() -> Libcrypto:
    names = list(_CANDIDATES)
    found = ctypes.util.find_library("crypto")
    if found and found not in names:
        names.append(found)
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
            continue
        fn: dict[str, Callable[..., Any]] = {}
        for symbol, (restype, argtypes) in _SIGNATURES.items():
            try:
                f = getattr(lib, symbol)
            except AttributeError:
                break
            f.restype, f.argtypes = restype, argtypes
            fn[symbol] = f
        else:
            version = fn["OpenSSL_version"](0).decode("ascii", "replace")
            stubs: dict[str, Callable[..., Any]] = {}
            for symbol, (restype, argtypes) in _SIGNATURES.items():
                stub = lib["OpenSSL_version_num"]  # a new function object each time
                stub.restype, stub.argtypes = restype, argtypes
                stubs[symbol] = stub
            return Libcrypto(name, version, fn, stubs)
        errors.append(f"{name}: no {symbol}")
    raise OSError("; ".join(errors) or "not found")


def load() -> Libcrypto | None:
    """The system's libcrypto (loaded once), or ``None`` if there is no usable one."""
    global _loaded, _reason
    if _loaded is None and _reason is None:
        try:
            _loaded = _open()
        except OSError as exc:
            _reason = f"no usable libcrypto ({exc})"
    return _loaded


def unavailable_reason() -> str | None:
    """Why :func:`load` returned ``None``; ``None`` when the library loaded."""
    load()
    return _reason


# -- the keyed state of one KID ------------------------------------------------------------


def _check(ok: int, what: str) -> None:
    if ok != 1:
        raise RuntimeError(f"libcrypto: {what} failed")


def _address(buf: Any) -> int:
    """The address of a writable buffer (bytearray, ctypes array, writable memoryview)."""
    view = memoryview(buf)
    if view.readonly:
        raise TypeError("the output buffer must be writable")
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class _Key:
    """``sframe_key`` and ``sframe_salt`` of one KID, set up in libcrypto once."""

    def __init__(self, lib: Libcrypto, suite: int, base_key: bytes, kid: int) -> None:
        f = lib.fn
        self.params = p = baseline.SUITES[suite]
        key, salt = baseline.derive_key_salt(suite, base_key, kid)
        self.salt = int.from_bytes(salt, "big")
        self.nt = p.nt
        self.cipher = f["EVP_CIPHER_CTX_new"]()
        self.mds: list[int] = []
        if not self.cipher:
            raise MemoryError("EVP_CIPHER_CTX_new")
        if p.nka is None:  # AES-GCM: both directions share the one key
            alg = f["EVP_aes_128_gcm" if p.nk == 16 else "EVP_aes_256_gcm"]()
            self.dec_cipher = f["EVP_CIPHER_CTX_new"]()
            _check(f["EVP_EncryptInit_ex"](self.cipher, alg, None, key, bytes(12)), "GCM key")
            _check(f["EVP_DecryptInit_ex"](self.dec_cipher, alg, None, key, bytes(12)), "GCM key")
            return
        alg = f["EVP_aes_128_ctr" if p.nka == 16 else "EVP_aes_256_ctr"]()
        _check(f["EVP_EncryptInit_ex"](self.cipher, alg, None, key[: p.nka], bytes(16)), "CTR")
        # RFC 2104: H(K XOR opad || H(K XOR ipad || m)), the key padded to the block size.
        md = f["EVP_sha256" if p.hash_name == "sha256" else "EVP_sha512"]()
        block = 64 if p.hash_name == "sha256" else 128
        auth = key[p.nka :].ljust(block, b"\0")
        for pad in (0x36, 0x5C):
            ctx = f["EVP_MD_CTX_new"]()
            self.mds.append(ctx)
            _check(f["EVP_DigestInit_ex"](ctx, md, None), "digest init")
            padded = bytes(b ^ pad for b in auth)
            _check(f["EVP_DigestUpdate"](ctx, padded, len(padded)), "digest update")
        self.work = f["EVP_MD_CTX_new"]()
        self.mds.append(self.work)
        self.inner = ctypes.create_string_buffer(64)
        self.full = ctypes.create_string_buffer(64)
        self.nh = p.nh

    def close(self, lib: Libcrypto) -> None:
        for ctx in self.mds:
            lib.fn["EVP_MD_CTX_free"](ctx)
        lib.fn["EVP_CIPHER_CTX_free"](self.cipher)
        if self.params.nka is None:
            lib.fn["EVP_CIPHER_CTX_free"](self.dec_cipher)
        self.mds = []


def _header(kid: int, ctr: int) -> bytes:
    return baseline.encode_header(kid, ctr)


class _Base:
    def __init__(self, suite: int, lib: Libcrypto | None, stub: bool) -> None:
        lib = lib or load()
        if lib is None:
            raise OSError(unavailable_reason())
        self.lib = lib
        self.stub = stub
        # Keys are set up with the real functions; frames go through ``fn``.
        self.fn = lib.stubs if stub else lib.fn
        self.suite = baseline.SUITES[suite]
        self._outl = ctypes.c_int()
        self._outl_p = ctypes.addressof(self._outl)
        self._out_cache: tuple[object, int] | None = None

    def _out(self, out: Any) -> int:
        # One-entry cache: the benchmark writes into the same buffer again and again.
        cached = self._out_cache
        if cached is not None and cached[0] is out:
            return cached[1]
        address = _address(out)
        self._out_cache = (out, address)
        return address

    def _tag(self, key: _Key, prefix: bytes, ct: int, n: int) -> None:
        """The full HMAC of ``prefix || ct[:n]`` into ``key.full`` (RFC 9605 §4.5.1)."""
        f = self.fn
        work = key.work
        f["EVP_MD_CTX_copy_ex"](work, key.mds[0])
        f["EVP_DigestUpdate"](work, prefix, len(prefix))
        f["EVP_DigestUpdate"](work, ct, n)
        f["EVP_DigestFinal_ex"](work, key.inner, None)
        f["EVP_MD_CTX_copy_ex"](work, key.mds[1])
        f["EVP_DigestUpdate"](work, key.inner, key.nh)
        f["EVP_DigestFinal_ex"](work, key.full, None)


_LENGTHS = struct.Struct(">QQQ").pack


class FloorEncryptor(_Base):
    """Encrypts the frames of one KID as :class:`e2ee.sframe.Encryptor` does, in libcrypto."""

    def __init__(
        self,
        suite: int,
        base_key: bytes,
        kid: int,
        counter: int = 0,
        lib: Libcrypto | None = None,
        *,
        stub: bool = False,
    ) -> None:
        super().__init__(suite, lib, stub)
        self.kid, self.counter = kid, counter
        self._key = _Key(self.lib, suite, bytes(base_key), kid)

    def close(self) -> None:
        self._key.close(self.lib)

    def output_length(self, n: int) -> int:
        return len(_header(self.kid, self.counter)) + n + self.suite.nt

    def encrypt(self, plaintext: bytes, metadata: bytes = b"") -> bytes:
        out = bytearray(self.output_length(len(plaintext)))
        n = self.encrypt_into(plaintext, out, metadata)
        return bytes(out[:n])

    def encrypt_into(self, plaintext: bytes, out: Any, metadata: bytes = b"") -> int:
        """Writes ``header || ciphertext || tag`` into ``out``; returns its length."""
        f = self.fn
        key = self._key
        ctr = self.counter
        self.counter = ctr + 1
        header = _header(self.kid, ctr)
        nonce = (key.salt ^ ctr).to_bytes(12, "big")
        hlen, n, nt = len(header), len(plaintext), key.nt
        total = hlen + n + nt
        if len(out) < total:
            raise ValueError("output buffer too small")
        base = self._out(out)
        out[:hlen] = header
        ct = base + hlen
        if key.params.nka is None:
            aad = header + metadata
            f["EVP_EncryptInit_ex"](key.cipher, None, None, None, nonce)
            f["EVP_EncryptUpdate"](key.cipher, None, self._outl_p, aad, len(aad))
            f["EVP_EncryptUpdate"](key.cipher, ct, self._outl_p, plaintext, n)
            f["EVP_EncryptFinal_ex"](key.cipher, ct + n, self._outl_p)
            f["EVP_CIPHER_CTX_ctrl"](key.cipher, _EVP_CTRL_AEAD_GET_TAG, nt, ct + n)
            return total
        f["EVP_EncryptInit_ex"](key.cipher, None, None, None, nonce + b"\0\0\0\0")
        f["EVP_EncryptUpdate"](key.cipher, ct, self._outl_p, plaintext, n)
        prefix = _LENGTHS(hlen + len(metadata), n, nt) + nonce + header + metadata
        self._tag(key, prefix, ct, n)
        out[hlen + n : total] = key.full.raw[:nt]
        return total


class FloorDecryptor(_Base):
    """Decrypts :class:`FloorEncryptor`'s (and e2ee's) frames: tag first, then AES-CTR."""

    def __init__(self, suite: int, lib: Libcrypto | None = None, *, stub: bool = False) -> None:
        super().__init__(suite, lib, stub)
        self._keys: dict[int, _Key] = {}

    def add_key(self, kid: int, base_key: bytes) -> None:
        self._keys[kid] = _Key(self.lib, self.suite.number, bytes(base_key), kid)

    def close(self) -> None:
        for key in self._keys.values():
            key.close(self.lib)
        self._keys.clear()

    def decrypt(self, data: bytes, metadata: bytes = b"") -> bytes:
        out = bytearray(len(data))
        n = self.decrypt_into(data, out, metadata)
        return bytes(out[:n])

    def decrypt_into(self, data: bytes, out: Any, metadata: bytes = b"") -> int:
        """Writes the plaintext of one frame into ``out``; returns its length.

        ``ValueError`` for a frame that does not authenticate (nothing is decrypted).  A
        stub checks nothing: its calls return no real answers.
        """
        f = self.fn
        kid, ctr, hlen = baseline.decode_header(data)
        key = self._keys[kid]
        nt = key.nt
        n = len(data) - hlen - nt
        if n < 0 or len(out) < n:
            raise ValueError("frame shorter than its tag, or output buffer too small")
        nonce = (key.salt ^ ctr).to_bytes(12, "big")
        base = self._out(out)
        header = data[:hlen]
        tag = data[hlen + n :]
        # A pointer to the ciphertext inside the immutable ``data``, without copying it.
        ct = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
        ct += hlen
        if key.params.nka is None:
            aad = header + metadata
            c = key.dec_cipher
            f["EVP_DecryptInit_ex"](c, None, None, None, nonce)
            f["EVP_DecryptUpdate"](c, None, self._outl_p, aad, len(aad))
            f["EVP_DecryptUpdate"](c, base, self._outl_p, ct, n)
            f["EVP_CIPHER_CTX_ctrl"](c, _EVP_CTRL_AEAD_SET_TAG, nt, tag)
            if f["EVP_DecryptFinal_ex"](c, base + n, self._outl_p) != 1 and not self.stub:
                ctypes.memset(base, 0, n)
                raise ValueError("frame does not authenticate")
            return n
        prefix = _LENGTHS(hlen + len(metadata), n, nt) + nonce + header + metadata
        self._tag(key, prefix, ct, n)
        if f["CRYPTO_memcmp"](key.full, tag, nt) != 0 and not self.stub:
            raise ValueError("frame does not authenticate")
        f["EVP_EncryptInit_ex"](key.cipher, None, None, None, nonce + b"\0\0\0\0")
        f["EVP_EncryptUpdate"](key.cipher, base, self._outl_p, ct, n)
        return n
