"""python/e2ee/web/static/sframe.js in Chromium: the official vectors, the key schedule
and the frame format against the Rust core (through the Python facade), both ways, and
the receiving rules of docs/protocol.md §6.

Every check runs the module in a real page; bytes cross as hex and KIDs/CTRs as decimal
strings (they reach 2^64 - 1).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import e2ee
from e2ee import FrameDecryptor, FrameEncryptor, KeyRing
from e2ee.errors import DecryptionInternalError, InvalidEncryptionSecret
from e2ee.sframe import CipherSuite, decode_header, encode_header

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
FIXTURES = ROOT / "tests" / "fixtures"

RFC9605 = json.loads((VECTORS / "rfc9605.json").read_text())
DRAFT = json.loads((VECTORS / "draft-barnes-sframe-iana-256.json").read_text())
SUITES = (5, 6)
SFRAME_VECTORS = [
    (name, v)
    for name, section in (
        ("rfc9605", RFC9605["sframe"]),
        ("draft", DRAFT["sframe_aes_256_ctr_hmac"]),
    )
    for v in section
    if v["cipher_suite"] in SUITES
]
AEAD_VECTORS = [
    (name, v)
    for name, section in (
        ("rfc9605", RFC9605["aes_ctr_hmac"]),
        ("draft", DRAFT["aes_256_ctr_hmac"]),
    )
    for v in section
    if v["cipher_suite"] in SUITES
]

SECRET = "correct horse battery staple"
SESSION = "session-browser-1"
ITERATIONS = 1000

# Helpers every snippet gets: the module as `sf`, hex codecs, and `caught(fn)`, the
# error of an async call as a plain object (null if it succeeded).
PRELUDE = """
const sf = await import('/static/sframe.js');
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const unhex = (s) => Uint8Array.from(s.match(/../g) ?? [], (x) => parseInt(x, 16));
const caught = async (fn) => {
  try { await fn(); return null; } catch (e) {
    return { name: e.name, code: e.code ?? null, reason: e.reason ?? null,
             kid: e.kid === undefined ? null : String(e.kid), message: e.message };
  }
};
const outcome = async (fn) => {
  const e = await caught(fn);
  return e === null ? 'ok' : (e.reason ?? e.code ?? e.name);
};
"""


async def js(page: Any, body: str, arg: Any = None) -> Any:
    """Runs `body` (an async function body that sees `arg`) in the page."""
    return await page.evaluate(f"async (arg) => {{\n{PRELUDE}\n{body}\n}}", arg)


def frames(codec: str) -> list[bytes]:
    """Real encoded frames (tests/fixtures), then the shortest valid ones (no payload)."""
    captured = [p.read_bytes() for p in sorted(FIXTURES.glob(f"{codec}_*.bin"))]
    assert captured, f"no {codec} fixtures"
    if codec == "vp8":
        return [*captured, captured[0][:10], b"\x01\x00\x00"]
    return [*captured, captured[0][:1]]


def clear_len(codec: str, frame: bytes) -> int:
    if codec == "opus":
        return 1
    return 10 if frame[0] & 1 == 0 else 3


def ring(suite: int, **kwargs: Any) -> KeyRing:
    r = KeyRing(SESSION, suite=suite, kdf_iterations=ITERATIONS, **kwargs)
    r.set_secret(SECRET)
    return r


# -- Suites, vectors ---------------------------------------------------------------------


async def test_suite_metadata_matches_the_core_and_others_are_refused(page: Any) -> None:
    got = await js(
        page,
        """
        const refused = {};
        for (const s of [0, 1, 2, 3, 4, 7, 8, 9, '6', 6.5, null]) {
          refused[String(s)] = [
            (await caught(() => sf.SFrameContext.create(s, new Uint8Array(16), 1n)))?.code,
            (await caught(() => new sf.FrameSender(s, 'vp8')))?.code,
            (await caught(() => new sf.FrameReceiver(s, 'opus')))?.code,
          ];
        }
        return { suites: sf.SUITES, refused };
        """,
    )
    assert sorted(got["suites"]) == ["5", "6"]
    for n in SUITES:
        meta, suite = got["suites"][str(n)], CipherSuite(n)
        assert (meta["id"], meta["name"]) == (n, suite.name)
        assert (meta["nk"], meta["nn"], meta["nt"], meta["nh"]) == (
            suite.nk,
            suite.nn,
            suite.nt,
            suite.nh,
        )
    assert (got["suites"]["5"]["aead"], got["suites"]["6"]["aead"]) == ("gcm", "ctr-hmac")
    assert set(got["refused"]) == {"0", "1", "2", "3", "4", "7", "8", "9", "6", "6.5", "null"}
    for codes in got["refused"].values():
        assert codes == ["UnsupportedCipherSuite"] * 3


async def test_header_vectors_encode_and_decode(page: Any) -> None:
    vectors = [[str(v["kid"]), str(v["ctr"]), v["encoded"]] for v in RFC9605["header"]]
    assert len(vectors) == 289
    failures = await js(
        page,
        """
        const failures = [];
        for (const [kid, ctr, encoded] of arg) {
          const got = hex(sf.encodeHeader(BigInt(kid), BigInt(ctr)));
          if (got !== encoded) failures.push(['encode', kid, ctr, got]);
          // at offset 0, and behind two other bytes, with a byte after it
          const placed = [[unhex(encoded), 0], [unhex('aabb' + encoded + 'cc'), 2]];
          for (const [bytes, offset] of placed) {
            const h = sf.decodeHeader(bytes, offset);
            const want = [BigInt(kid), BigInt(ctr), encoded.length / 2];
            if (!h || h.kid !== want[0] || h.ctr !== want[1] || h.length !== want[2]) {
              failures.push(['decode', kid, ctr, offset]);
            }
          }
          for (let cut = 0; cut < encoded.length / 2; cut++) {
            const h = sf.decodeHeader(unhex(encoded).subarray(0, cut));
            if (h !== null) failures.push(['cut', encoded, cut]);
          }
        }
        return failures;
        """,
        vectors,
    )
    assert failures == []


async def test_headers_match_the_core_and_only_minimal_ones_decode(page: Any) -> None:
    rng = random.Random(9605)
    edges = [0, 5, 7, 8, 16, 0xFF, 0x100, 0xFFFF, 0x10000, 2**24 - 1, 2**24, 2**32 - 1, 2**32]
    edges += [2**48 - 1, 2**48, 2**56 - 1, 2**56, 2**64 - 1]
    values = edges + [rng.getrandbits(rng.randrange(1, 65)) for _ in range(40)]
    pairs = [(kid, ctr) for kid in values[::3] for ctr in values]
    # Non-minimal forms: each value below 2^56 in one byte more than it needs, as the KID
    # (CTR 0) and as the CTR (KID 0).
    non_minimal = []
    for v in values:
        n = 0 if v < 8 else (v.bit_length() + 7) // 8
        if n < 8:
            half, field = 0x08 | n, v.to_bytes(n + 1, "big")
            non_minimal += [(bytes([half << 4]) + field).hex(), (bytes([half]) + field).hex()]
    # Random short byte strings, biased to announce extended fields.
    blobs = [bytes([rng.choice([0x80, 0x08, 0x88, 0]) | rng.randrange(256)]) for _ in range(600)]
    blobs = [b + rng.randbytes(rng.randrange(0, 18)) for b in blobs]

    got = await js(
        page,
        """
        const encoded = arg.pairs.map(([k, c]) => hex(sf.encodeHeader(BigInt(k), BigInt(c))));
        const nonMinimal = arg.nonMinimal.map((h) => sf.decodeHeader(unhex(h)));
        const blobs = arg.blobs.map((h) => {
          const d = sf.decodeHeader(unhex(h));
          return d && [String(d.kid), String(d.ctr), d.length];
        });
        const bad = [];
        for (const [k, c] of [[-1n, 0n], [0n, 1n << 64n], [1, 0n], [0n, '0']]) {
          bad.push((await caught(() => sf.encodeHeader(k, c)))?.name);
        }
        return { encoded, nonMinimal, blobs, bad };
        """,
        {
            "pairs": [[str(k), str(c)] for k, c in pairs],
            "nonMinimal": non_minimal,
            "blobs": [b.hex() for b in blobs],
        },
    )
    assert got["encoded"] == [encode_header(k, c).hex() for k, c in pairs]
    assert got["nonMinimal"] == [None] * len(non_minimal)
    assert {"8005", "090010"} <= set(non_minimal)
    for blob, js_result in zip(blobs, got["blobs"], strict=True):
        try:
            kid, ctr, length = decode_header(blob)
            expected = [str(kid), str(ctr), length]
        except ValueError:
            expected = None
        assert js_result == expected, blob.hex()
    assert sum(r is not None for r in got["blobs"]) > 100  # both outcomes are exercised
    assert got["bad"] == ["RangeError", "RangeError", "TypeError", "TypeError"]


@pytest.mark.parametrize(
    "vector",
    [v for _, v in SFRAME_VECTORS],
    ids=[f"{name}-suite{v['cipher_suite']}" for name, v in SFRAME_VECTORS],
)
async def test_sframe_vectors(page: Any, vector: dict[str, Any]) -> None:
    assert {v["cipher_suite"] for _, v in SFRAME_VECTORS} == set(SUITES)
    got = await js(
        page,
        """
        const v = arg, suite = v.cipher_suite, kid = BigInt(v.kid), ctr = BigInt(v.ctr);
        const baseKey = unhex(v.base_key), metadata = unhex(v.metadata), ct = unhex(v.ct);
        const { key, salt } = await sf.deriveKeySalt(suite, baseKey, kid);
        const ctx = await sf.SFrameContext.create(suite, baseKey, kid);
        const sealed = await ctx.encrypt(ctr, metadata, unhex(v.pt));
        const opened = await ctx.decrypt(metadata, ct);
        // Every byte after the header, and every metadata byte, is authenticated.
        const headerLength = sf.decodeHeader(ct).length;
        const tampered = [];
        for (let i = headerLength; i < ct.length; i++) {
          const bad = ct.slice();
          bad[i] ^= 0x01;
          tampered.push((await caught(() => ctx.decrypt(metadata, bad)))?.code);
        }
        for (let i = 0; i < metadata.length; i++) {
          const bad = metadata.slice();
          bad[i] ^= 0x80;
          tampered.push((await caught(() => ctx.decrypt(bad, ct)))?.code);
        }
        const cut = ct.subarray(0, ct.length - 1);
        tampered.push((await caught(() => ctx.decrypt(metadata, cut)))?.code);
        const otherKid = hex(sf.encodeHeader(kid + 1n, ctr)) + hex(ct.subarray(headerLength));
        return {
          key: hex(key), salt: hex(salt), sealed: hex(sealed), opened: hex(opened), tampered,
          otherKid: (await caught(() => ctx.decrypt(metadata, unhex(otherKid))))?.code,
          headerLength,
        };
        """,
        vector,
    )
    assert got["key"] == vector["sframe_key"]
    assert got["salt"] == vector["sframe_salt"]
    assert got["sealed"] == vector["ct"]
    assert got["opened"] == vector["pt"]
    n_tampered = len(vector["ct"]) // 2 - got["headerLength"] + len(vector["metadata"]) // 2 + 1
    assert got["tampered"] == ["AuthenticationFailed"] * n_tampered
    assert got["otherKid"] == "UnknownKeyId"


@pytest.mark.parametrize(
    "vector",
    [v for _, v in AEAD_VECTORS],
    ids=[f"{name}-suite{v['cipher_suite']}" for name, v in AEAD_VECTORS],
)
async def test_ctr_hmac_aead_vectors(page: Any, vector: dict[str, Any]) -> None:
    assert AEAD_VECTORS, "the draft has a suite-6 AEAD vector"
    got = await js(
        page,
        """
        const v = arg, s = v.cipher_suite;
        const [key, nonce, aad, ct] = [v.key, v.nonce, v.aad, v.ct].map(unhex);
        const sealed = await sf.aeadEncrypt(s, key, nonce, aad, unhex(v.pt));
        const opened = await sf.aeadDecrypt(s, key, nonce, aad, ct);
        const tampered = [];
        for (let i = 0; i < ct.length; i++) {
          const bad = ct.slice();
          bad[i] ^= 0x40;
          tampered.push((await caught(() => sf.aeadDecrypt(s, key, nonce, aad, bad)))?.code);
        }
        return { sealed: hex(sealed), opened: hex(opened), tampered };
        """,
        vector,
    )
    assert got["sealed"] == vector["ct"]
    assert got["opened"] == vector["pt"]
    assert got["tampered"] == ["AuthenticationFailed"] * (len(vector["ct"]) // 2)


async def test_webcrypto_hmac_verify_refuses_truncated_tags(page: Any) -> None:
    # Why sframe.js compares CTR-HMAC tags itself: Chromium's HMAC verify only accepts a
    # full-length MAC, so an 80-bit tag can never verify through it.
    got = await js(
        page,
        """
        const key = await crypto.subtle.importKey(
          'raw', new Uint8Array(64), { name: 'HMAC', hash: 'SHA-512' }, false, ['sign', 'verify']);
        const data = new Uint8Array([1, 2, 3]);
        const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, data));
        return [
          mac.length,
          await crypto.subtle.verify('HMAC', key, mac, data),
          await crypto.subtle.verify('HMAC', key, mac.slice(0, 10), data),
        ];
        """,
    )
    assert got == [64, True, False]


# -- Secret to keys (protocol.md §2) -----------------------------------------------------

KEY_SCHEDULE_CASES = [
    ("correct horse battery staple", "session-1", 1000),
    ("caf\u00e9 au lait secret", "s", 10),  # precomposed
    ("cafe\u0301 au lait secret", "s", 10),  # decomposed: the same key after NFC
    ("\u212b" * 8, "s", 1),  # ANGSTROM SIGN, NFC -> U+00C5
    ("e\u0301" * 8, "s", 1),  # 16 code points, 8 after NFC
    ("\U0001f600" * 8, "s", 1),  # 8 code points in 16 UTF-16 units
    ("\u30d1\u30b9\u30ef\u30fc\u30c9\u306f\u79d8\u5bc6", "\u30bb\u30c3\u30b7\u30e7\u30f3", 2000),
    ("x" * 256, "\u00e9" * 512, 1),  # longest secret, 1024-byte session id
    (SECRET, "sess\u00e3o-\u00fc", 600),
]


@pytest.mark.parametrize(("secret", "session_id", "iterations"), KEY_SCHEDULE_CASES)
async def test_key_schedule_matches_the_core(
    page: Any, secret: str, session_id: str, iterations: int
) -> None:
    got = await js(
        page,
        """
        const key = await sf.deriveSecretKey(arg.secret, arg.session, arg.iterations);
        const id = await sf.secretId(key);
        return { key: hex(key), id, normalized: sf.normalizeSecret(arg.secret) };
        """,
        {"secret": secret, "session": session_id, "iterations": iterations},
    )
    key = e2ee.derive_secret_key(secret, session_id, iterations=iterations)
    assert got["key"] == key.hex()
    assert got["id"] == e2ee.secret_id(key)
    assert got["normalized"] == e2ee.normalize_secret(secret)


async def test_nfc_equivalent_secrets_give_one_key(page: Any) -> None:
    got = await js(
        page,
        """
        return Promise.all(['caf\\u00e9 secret', 'cafe\\u0301 secret'].map(
          async (s) => hex(await sf.deriveSecretKey(s, 's1', 10))));
        """,
    )
    assert got[0] == got[1] == e2ee.derive_secret_key("caf\u00e9 secret", "s1", iterations=10).hex()


@pytest.mark.parametrize(
    "secret",
    ["", "short", "seven77", "e\u0301" * 7, "\U0001f600" * 7, "x" * 257, "\u00e9" * 257],
    ids=["empty", "5", "7", "7-after-nfc", "7-astral", "257", "257-non-ascii"],
)
async def test_bad_secrets_are_refused_like_the_core(page: Any, secret: str) -> None:
    with pytest.raises(InvalidEncryptionSecret):
        e2ee.derive_secret_key(secret, "s", iterations=1)
    got = await js(page, "return caught(() => sf.deriveSecretKey(arg, 's', 1));", secret)
    assert got["code"] == "InvalidEncryptionSecret"
    assert got["name"] == "InvalidEncryptionSecret"
    assert secret == "" or secret not in got["message"], "the message never shows the secret"


async def test_bad_arguments_to_the_key_schedule_are_refused(page: Any) -> None:
    got = await js(
        page,
        """
        const ok = 'correct horse battery';
        const r = {};
        const lone = '\\ud800'.repeat(8);
        r.loneSurrogate = (await caught(() => sf.deriveSecretKey(lone, 's', 1)))?.code;
        r.notString = (await caught(() => sf.deriveSecretKey(12345678, 's', 1)))?.code;
        for (const it of [0, -1, 10000001, 1.5, '1000', NaN]) {
          r['it' + String(it)] = (await caught(() => sf.deriveSecretKey(ok, 's', it)))?.name;
        }
        r.maxIterations = sf.MAX_ITERATIONS;
        r.emptySession = (await caught(() => sf.deriveSecretKey(ok, '', 1)))?.name;
        const long = '\\u00e9'.repeat(513);
        r.longSession = (await caught(() => sf.deriveSecretKey(ok, long, 1)))?.name;
        r.shortKey = (await caught(() => sf.secretId(new Uint8Array(31))))?.code;
        return r;
        """,
    )
    assert got == {
        "loneSurrogate": "InvalidEncryptionSecret",
        "notString": "InvalidEncryptionSecret",
        "it0": "RangeError",
        "it-1": "RangeError",
        "it10000001": "RangeError",
        "it1.5": "RangeError",
        "it1000": "RangeError",
        "itNaN": "RangeError",
        "maxIterations": 10_000_000,
        "emptySession": "RangeError",
        "longSession": "RangeError",
        "shortKey": "InvalidLength",
    }
    for session_id in ("", "\u00e9" * 513):
        with pytest.raises(ValueError, match="session id"):
            e2ee.derive_secret_key(SECRET, session_id, iterations=1)


async def test_new_kids_carry_the_secret_id_and_48_random_bits(page: Any) -> None:
    got = await js(
        page,
        """
        const kids = Array.from({ length: 64 }, () => sf.newKid(0xbeef));
        const low = kids.reduce((acc, k) => acc | (k & ((1n << 48n) - 1n)), 0n);
        const bad = [];
        for (const id of [-1, 65536, 1.5, '1']) bad.push((await caught(() => sf.newKid(id)))?.name);
        bad.push((await caught(() => sf.kidSecretId(5)))?.name);
        return {
          kids: kids.map(String), ids: kids.map(sf.kidSecretId),
          lowBitsSeen: String(low), zero: String(sf.newKid(0) >> 48n), bad,
        };
        """,
    )
    assert set(got["ids"]) == {0xBEEF}
    assert len(set(got["kids"])) == 64
    assert [e2ee.kid_secret_id(int(k)) for k in got["kids"]] == got["ids"]
    assert int(got["lowBitsSeen"]) == 2**48 - 1, "every one of the 48 bits is drawn"
    assert got["zero"] == "0"
    assert got["bad"] == ["RangeError"] * 4 + ["TypeError"]


# -- Frame format (protocol.md §4) -------------------------------------------------------


async def test_clear_prefix_lengths(page: Any) -> None:
    captured = sorted(FIXTURES.glob("vp8_*.bin")) + sorted(FIXTURES.glob("opus_*.bin"))
    expected = [
        1 if p.name.startswith("opus") else 10 if p.name.endswith("_key.bin") else 3
        for p in captured
    ]
    assert expected == [clear_len(p.name[:4].rstrip("_"), p.read_bytes()) for p in captured]
    got = await js(
        page,
        """
        const lengths = arg.map(([codec, f]) => sf.clearPrefixLength(codec, unhex(f)));
        const short = [];
        const tooShort = [['vp8', ''], ['vp8', '00'.repeat(9)], ['vp8', '0100'], ['opus', '']];
        for (const [codec, f] of tooShort) {
          short.push((await caught(() => sf.clearPrefixLength(codec, unhex(f))))?.code);
        }
        return {
          lengths, short,
          exact: [
            sf.clearPrefixLength('vp8', unhex('00'.repeat(10))),
            sf.clearPrefixLength('vp8', unhex('010000')),
          ],
          mime: [
            sf.clearPrefixLength('video/VP8', unhex('010000')),
            sf.clearPrefixLength('audio/opus', unhex('fc')),
          ],
          h264: (await caught(() => sf.clearPrefixLength('h264', unhex('00'))))?.code,
        };
        """,
        [[p.name[:4].rstrip("_"), p.read_bytes().hex()] for p in captured],
    )
    assert got["lengths"] == expected
    assert set(expected) == {10, 3, 1}
    assert got["short"] == ["FrameTooShort"] * 4
    assert got["exact"] == [10, 3]
    assert got["mime"] == [3, 1]
    assert got["h264"] == "UnsupportedCodec"


@pytest.mark.parametrize("codec", ["vp8", "opus"])
@pytest.mark.parametrize("suite", SUITES)
async def test_browser_frames_decrypt_in_python(page: Any, suite: int, codec: str) -> None:
    originals = frames(codec) * 2
    got = await js(
        page,
        """
        const key = await sf.deriveSecretKey(arg.secret, arg.session, arg.iterations);
        const kid = sf.newKid(await sf.secretId(key));
        const tx = new sf.FrameSender(arg.suite, arg.codec);
        await tx.setKey(key, kid);
        const wires = [];
        for (const f of arg.frames) wires.push(hex(await tx.encrypt(unhex(f))));
        // One more, never delivered, to tamper with.
        const spare = hex(await tx.encrypt(unhex(arg.frames[0])));
        return { kid: String(kid), txKid: String(tx.kid), wires, spare };
        """,
        {
            "secret": SECRET,
            "session": SESSION,
            "iterations": ITERATIONS,
            "suite": suite,
            "codec": codec,
            "frames": [f.hex() for f in originals],
        },
    )
    kid, nt = int(got["kid"]), CipherSuite(suite).nt
    assert int(got["txKid"]) == kid
    assert e2ee.kid_secret_id(kid) == ring(suite).secret_id
    dec = FrameDecryptor(ring(suite), codec)
    wires = [bytes.fromhex(w) for w in got["wires"]]
    spare = bytes.fromhex(got["spare"])
    for ctr, (frame, wire) in enumerate(zip(originals, wires, strict=True)):
        n = clear_len(codec, frame)
        assert wire[:n] == frame[:n], "the codec prefix stays in clear"
        assert decode_header(wire[n:])[:2] == (kid, ctr), "KID as set, CTR from 0"
        assert len(wire) == len(frame) + decode_header(wire[n:])[2] + nt
        if len(frame) > n + 8:
            assert frame[n:] not in wire
        assert dec.decrypt(wire) == frame
    with pytest.raises(DecryptionInternalError) as replayed:
        dec.decrypt(wires[0])
    assert replayed.value.reason == "replayed"
    tampered = bytearray(spare)
    tampered[0] ^= 0x80  # a clear byte: readable, but authenticated
    with pytest.raises(DecryptionInternalError) as forged:
        dec.decrypt(bytes(tampered))
    assert forged.value.reason == "authentication"
    assert dec.stats["frames_ok"] == len(originals)
    assert dec.stats["frames_replayed"] == dec.stats["frames_failed"] == 1


@pytest.mark.parametrize("codec", ["vp8", "opus"])
@pytest.mark.parametrize("suite", SUITES)
async def test_python_frames_decrypt_in_the_browser(page: Any, suite: int, codec: str) -> None:
    originals = frames(codec) * 2
    enc = FrameEncryptor(ring(suite), codec)
    wires = [enc.encrypt(f) for f in originals]
    spare = enc.encrypt(originals[0])
    got = await js(
        page,
        """
        const key = await sf.deriveSecretKey(arg.secret, arg.session, arg.iterations);
        const rx = new sf.FrameReceiver(arg.suite, arg.codec);
        await rx.setSecrets([{ key }]);
        const out = [];
        for (const w of arg.wires) {
          const { frame, kid, ctr } = await rx.decrypt(unhex(w));
          out.push([hex(frame), String(kid), String(ctr)]);
        }
        const again = await caught(() => rx.decrypt(unhex(arg.wires[0])));
        const bad = unhex(arg.spare); // never delivered: a tampered tag fails authentication
        bad[bad.length - 1] ^= 1;
        const forged = await caught(() => rx.decrypt(bad));
        return { out, again, forged, stats: rx.stats, kids: rx.kids.map(String) };
        """,
        {
            "secret": SECRET,
            "session": SESSION,
            "iterations": ITERATIONS,
            "suite": suite,
            "codec": codec,
            "wires": [w.hex() for w in wires],
            "spare": spare.hex(),
        },
    )
    assert got["out"] == [[f.hex(), str(enc.kid), str(ctr)] for ctr, f in enumerate(originals)]
    assert (got["again"]["code"], got["again"]["reason"]) == ("DecryptionInternalError", "replayed")
    assert got["forged"]["reason"] == "authentication"
    assert got["stats"] == {
        "frames_ok": len(originals),
        "frames_mismatched": 0,
        "frames_failed": 1,
        "frames_replayed": 1,
        "frames_missing": 0,
    }
    assert got["kids"] == [str(enc.kid)]


@pytest.mark.parametrize("codec", ["vp8", "opus"])
@pytest.mark.parametrize("suite", SUITES)
async def test_both_senders_give_the_same_bytes(page: Any, suite: int, codec: str) -> None:
    # The same secret and KID: the two implementations must agree byte for byte.
    rand48 = random.Random(suite).getrandbits(48)
    enc = FrameEncryptor(ring(suite, kid_source=lambda sid: sid << 48 | rand48), codec)
    originals = frames(codec)
    expected = [enc.encrypt(f).hex() for f in originals]
    got = await js(
        page,
        """
        const key = await sf.deriveSecretKey(arg.secret, arg.session, arg.iterations);
        const tx = new sf.FrameSender(arg.suite, arg.codec);
        await tx.setKey(key, BigInt(arg.kid));
        const wires = [];
        for (const f of arg.frames) wires.push(hex(await tx.encrypt(unhex(f))));
        return wires;
        """,
        {
            "secret": SECRET,
            "session": SESSION,
            "iterations": ITERATIONS,
            "suite": suite,
            "codec": codec,
            "kid": str(enc.kid),
            "frames": [f.hex() for f in originals],
        },
    )
    assert got == expected


# -- FrameSender -------------------------------------------------------------------------


async def test_frame_sender_rules(page: Any) -> None:
    got = await js(
        page,
        """
        const key = await sf.deriveSecretKey('correct horse battery', 's', 10);
        const id = await sf.secretId(key);
        const tx = new sf.FrameSender(6, 'vp8');
        const frame = unhex('01' + '00'.repeat(40));
        const r = { before: (await caught(() => tx.encrypt(frame)))?.code, kidBefore: tx.kid };
        const [k1, k2, k3] = [sf.newKid(id), sf.newKid(id), sf.newKid(id)];
        await tx.setKey(key, k1);
        const ctrs = async (count) => {
          const out = [];
          for (let i = 0; i < count; i++) {
            out.push(String(sf.decodeHeader(await tx.encrypt(frame), 3).ctr));
          }
          return out;
        };
        r.first = await ctrs(3);
        r.kid1 = tx.kid === k1;
        await tx.setKey(key, k2);
        r.second = await ctrs(2);
        r.reused = (await caught(() => tx.setKey(key, k1)))?.code;
        r.kidAfterRefusal = tx.kid === k2;
        // Concurrent calls never share a CTR.
        const wires = await Promise.all(Array.from({ length: 50 }, () => tx.encrypt(frame)));
        r.concurrent = new Set(wires.map((w) => String(sf.decodeHeader(w, 3).ctr))).size;
        // The last setKey call wins, whichever derivation ends first.
        const a = tx.setKey(key, k3), b = tx.setKey(key, sf.newKid(id));
        await Promise.all([a, b]);
        r.lastWins = tx.kid !== k3 && sf.kidSecretId(tx.kid) === id;
        r.tooShort = (await caught(() => tx.encrypt(unhex('00'.repeat(9)))))?.code;
        r.empty = (await caught(() => tx.encrypt(new Uint8Array(0))))?.code;
        const viaBuffer = await tx.encrypt(frame.buffer);
        const headerLength = sf.decodeHeader(viaBuffer, 3).length;
        r.arrayBuffer = viaBuffer.length === frame.length + headerLength + 10;
        tx.clearKey();
        r.cleared = [(await caught(() => tx.encrypt(frame)))?.code, tx.kid];
        r.badKey = (await caught(() => tx.setKey(new Uint8Array(16), sf.newKid(1))))?.code;
        r.badCodec = (await caught(() => new sf.FrameSender(6, 'h264')))?.code;
        return r;
        """,
    )
    assert got == {
        "before": "EncryptionSecretMissing",
        "kidBefore": None,
        "first": ["0", "1", "2"],
        "kid1": True,
        "second": ["0", "1"],
        "reused": "KidReused",
        "kidAfterRefusal": True,
        "concurrent": 50,
        "lastWins": True,
        "tooShort": "EncryptionInternalError",
        "empty": "EncryptionInternalError",
        "arrayBuffer": True,  # clear, header, ciphertext, 10-byte tag
        "cleared": ["EncryptionSecretMissing", None],
        "badKey": "InvalidLength",
        "badCodec": "UnsupportedCodec",
    }


# -- FrameReceiver (protocol.md §6) ------------------------------------------------------

# Shared set-up for the receiver tests: window.key/keyB/keyC (three secrets), window.make
# (a FrameSender under a key, with a fresh or given KID), window.frame (a VP8 delta).
RECEIVER_SETUP = """
window.key = await sf.deriveSecretKey('the secret A!', 's', 10);
window.keyB = await sf.deriveSecretKey('the secret B!', 's', 10);
window.keyC = await sf.deriveSecretKey('the secret C!', 's', 10);
window.make = async (k, kid) => {
  const tx = new sf.FrameSender(6, 'vp8');
  await tx.setKey(k, kid ?? sf.newKid(await sf.secretId(k)));
  return tx;
};
window.frame = unhex('010203' + '55'.repeat(30));
"""


async def test_replay_window(page: Any) -> None:
    await js(page, RECEIVER_SETUP)
    got = await js(
        page,
        """
        const tx = await make(key);
        const w = [];
        for (let i = 0; i < 300; i++) w.push(await tx.encrypt(frame));
        const rx = new sf.FrameReceiver(6, 'vp8');
        await rx.setSecrets([{ key }]);
        const flip = (wire) => { const b = wire.slice(); b[b.length - 1] ^= 1; return b; };
        const steps = [
          ['0', w[0]], ['0 again', w[0]], ['200', w[200]], ['73 (127 back)', w[73]],
          ['72 (128 back)', w[72]], ['73 again', w[73]], ['199', w[199]], ['201', w[201]],
          ['199 again', w[199]], ['250 forged', flip(w[250])], ['250', w[250]],
          ['200 forged', flip(w[200])],
        ];
        const out = [];
        for (const [name, wire] of steps) out.push([name, await outcome(() => rx.decrypt(wire))]);
        const narrow = new sf.FrameReceiver(6, 'vp8', { replayWindow: 4 });
        await narrow.setSecrets([{ key }]);
        const narrowOut = [];
        for (const i of [10, 6, 7, 7, 9, 299, 10]) {
          narrowOut.push(await outcome(() => narrow.decrypt(w[i])));
        }
        const off = new sf.FrameReceiver(6, 'vp8', { replayWindow: 0 });
        await off.setSecrets([{ key }]);
        const offOut = [];
        for (let i = 0; i < 2; i++) offOut.push(await outcome(() => off.decrypt(w[5])));
        // Concurrent copies of one frame: exactly one is accepted.
        const fresh = new sf.FrameReceiver(6, 'vp8');
        await fresh.setSecrets([{ key }]);
        const copies = Array.from({ length: 20 }, () => outcome(() => fresh.decrypt(w[3])));
        const burst = await Promise.all(copies);
        const badWidth = [];
        for (const width of [-1, 129, 1.5]) {
          const make = () => new sf.FrameReceiver(6, 'vp8', { replayWindow: width });
          badWidth.push((await caught(make))?.name);
        }
        return { out, stats: rx.stats, narrowOut, offOut, burst, badWidth };
        """,
    )
    assert got["out"] == [
        ["0", "ok"],
        ["0 again", "replayed"],
        ["200", "ok"],
        ["73 (127 back)", "ok"],
        ["72 (128 back)", "replayed"],
        ["73 again", "replayed"],
        ["199", "ok"],
        ["201", "ok"],
        ["199 again", "replayed"],
        ["250 forged", "authentication"],
        ["250", "ok"],  # a forged frame does not move the window
        ["200 forged", "replayed"],  # judged from the header, before authentication
    ]
    assert got["stats"] == {
        "frames_ok": 6,
        "frames_mismatched": 0,
        "frames_failed": 1,
        "frames_replayed": 5,
        "frames_missing": 0,
    }
    assert got["narrowOut"] == ["ok", "replayed", "ok", "replayed", "ok", "ok", "replayed"]
    assert got["offOut"] == ["ok", "ok"]
    assert sorted(got["burst"]) == ["ok"] + ["replayed"] * 19
    assert got["badWidth"] == ["RangeError"] * 3


@pytest.mark.parametrize("width", [128, 16, 1])
async def test_replay_decisions_match_the_core(page: Any, width: int) -> None:
    # One sequence of wire frames (reordered, duplicated, forged, far behind) through
    # the browser's FrameReceiver and Python's FrameDecryptor: the same outcome each time.
    rng = random.Random(width)
    count = 400
    order: list[tuple[int, bool]] = []
    top = 0
    for _ in range(900):
        r = rng.random()
        if r < 0.5:  # the next frame
            i, forged = min(count - 1, top + 1), False
        elif r < 0.75:  # any frame
            i, forged = rng.randrange(count), False
        elif r < 0.9:  # a little or far behind
            i, forged = max(0, top - rng.randrange(0, 2 * width + 2)), False
        else:  # forged: a new CTR or any
            i, forged = rng.choice([min(count - 1, top + 1), rng.randrange(count)]), True
        order.append((i, forged))
        top = max(top, i) if not forged else top
    got = await js(
        page,
        """
        const key = await sf.deriveSecretKey(arg.secret, arg.session, arg.iterations);
        const tx = new sf.FrameSender(6, 'vp8');
        await tx.setKey(key, sf.newKid(await sf.secretId(key)));
        const frame = unhex('01020304050607');
        const wires = [];
        for (let i = 0; i < arg.count; i++) wires.push(await tx.encrypt(frame));
        const rx = new sf.FrameReceiver(6, 'vp8', { replayWindow: arg.width });
        await rx.setSecrets([{ key }]);
        const outcomes = [];
        for (const [i, forged] of arg.order) {
          const wire = wires[i].slice();
          if (forged) wire[wire.length - 2] ^= 4;
          outcomes.push(await outcome(() => rx.decrypt(wire)));
        }
        return { wires: wires.map(hex), outcomes, stats: rx.stats };
        """,
        {
            "secret": SECRET,
            "session": SESSION,
            "iterations": ITERATIONS,
            "count": count,
            "width": width,
            "order": order,
        },
    )
    dec = FrameDecryptor(ring(6), "vp8", replay_window=width)
    expected = []
    for i, forged in order:
        wire = bytearray.fromhex(got["wires"][i])
        if forged:
            wire[-2] ^= 4
        try:
            dec.decrypt(bytes(wire))
            expected.append("ok")
        except DecryptionInternalError as exc:
            expected.append(exc.reason)
    assert got["outcomes"] == expected
    assert got["stats"] == dec.stats
    assert {"ok", "replayed", "authentication"} <= set(expected)


async def test_mismatch_missing_and_expiry(page: Any) -> None:
    await js(page, RECEIVER_SETUP)
    got = await js(
        page,
        """
        const tx = await make(key);
        const next = () => tx.encrypt(frame);
        const rx = new sf.FrameReceiver(6, 'vp8');
        const r = {};
        r.missing = await caught(async () => rx.decrypt(await next()));
        r.malformedWithoutSecrets = (await caught(() => rx.decrypt(unhex('0102039f'))))?.reason;
        await rx.setSecrets([{ key: keyB }]);
        r.mismatch = await caught(async () => rx.decrypt(await next()));
        r.kid = String(tx.kid);
        await rx.setSecrets([{ key: keyB }, { key, id: await sf.secretId(key) }]);
        r.matched = await outcome(async () => rx.decrypt(await next()));
        // The old secret within its grace period, then past it.
        await rx.setSecrets([{ key: keyB }, { key, expiresAt: performance.now() + 60000 }]);
        r.inGrace = await outcome(async () => rx.decrypt(await next()));
        await rx.setSecrets([{ key: keyB }, { key, expiresAt: performance.now() + 150 }]);
        r.beforeExpiry = await outcome(async () => rx.decrypt(await next()));
        await new Promise((resolve) => setTimeout(resolve, 300));
        r.afterExpiry = (await caught(async () => rx.decrypt(await next())))?.code;
        r.kidsAfterExpiry = rx.kids.length;
        // Held only past its expiry, the secret counts as not held at all.
        await rx.setSecrets([{ key, expiresAt: performance.now() - 1 }]);
        r.onlyExpired = (await caught(async () => rx.decrypt(await next())))?.code;
        await rx.setSecrets([]);
        r.none = (await caught(async () => rx.decrypt(await next())))?.code;
        const wrongId = ((await sf.secretId(key)) + 1) & 0xffff;
        r.wrongId = (await caught(() => rx.setSecrets([{ key, id: wrongId }])))?.name;
        r.stats = rx.stats;
        return r;
        """,
    )
    assert got["missing"]["code"] == "EncryptionSecretMissing"
    assert got["malformedWithoutSecrets"] == "malformed"
    assert got["mismatch"]["code"] == "EncryptionSecretMismatch"
    assert got["mismatch"]["kid"] == got["kid"]
    assert got["matched"] == got["inGrace"] == got["beforeExpiry"] == "ok"
    assert got["afterExpiry"] == "EncryptionSecretMismatch"
    assert got["kidsAfterExpiry"] == 0
    assert got["onlyExpired"] == "EncryptionSecretMissing"
    assert got["none"] == "EncryptionSecretMissing"
    assert got["wrongId"] == "RangeError"
    assert got["stats"] == {
        "frames_ok": 3,
        "frames_mismatched": 2,
        "frames_failed": 1,
        "frames_replayed": 0,
        "frames_missing": 3,
    }


async def test_keys_are_cached_only_after_authentication(page: Any) -> None:
    await js(page, RECEIVER_SETUP)
    got = await js(
        page,
        """
        const id = await sf.secretId(key);
        const rx = new sf.FrameReceiver(6, 'vp8');
        await rx.setSecrets([{ key }]);
        const genuine = await make(key);
        const first = await genuine.encrypt(frame);
        const r = { first: await outcome(() => rx.decrypt(first)) };
        const cached = rx.kids.map(String);
        // Forgeries: made-up KIDs with the right (public) secret id, under another key.
        r.forged = [];
        for (let i = 0; i < 40; i++) {
          const forger = await make(keyC, sf.newKid(id));
          r.forged.push(await outcome(async () => rx.decrypt(await forger.encrypt(frame))));
        }
        r.kidsUnchanged = JSON.stringify(rx.kids.map(String)) === JSON.stringify(cached);
        r.firstAgain = await outcome(() => rx.decrypt(first));
        // A forged frame under a KID leaves no window behind: the genuine CTR 0 still passes.
        const kid = sf.newKid(id);
        const forger = await make(keyC, kid);
        r.forgedKid = await outcome(async () => rx.decrypt(await forger.encrypt(frame)));
        const genuineOnKid = await make(key, kid);
        r.genuineKid = await outcome(async () => rx.decrypt(await genuineOnKid.encrypt(frame)));
        r.stats = rx.stats;
        return r;
        """,
    )
    assert got["first"] == "ok"
    assert got["forged"] == ["authentication"] * 40
    assert got["kidsUnchanged"] is True
    assert got["firstAgain"] == "replayed"
    assert got["forgedKid"] == "authentication"
    assert got["genuineKid"] == "ok"
    assert got["stats"]["frames_failed"] == 41


async def test_evicted_kids_never_accept_old_frames(page: Any) -> None:
    await js(page, RECEIVER_SETUP)
    got = await js(
        page,
        """
        const rx = new sf.FrameReceiver(6, 'vp8');
        await rx.setSecrets([{ key }]);
        const first = await make(key);
        const old = [];
        for (let i = 0; i < 5; i++) old.push(await first.encrypt(frame));
        const r = { old: [] };
        for (const i of [0, 1, 3]) r.old.push(await outcome(() => rx.decrypt(old[i])));
        for (let i = 0; i < sf.LIVE_KIDS; i++) {
          r.old.push(await outcome(async () => rx.decrypt(await (await make(key)).encrypt(frame))));
        }
        r.live = rx.kids.length;
        r.evicted = !rx.kids.includes(first.kid);
        // Old frames of the evicted KID stay refused, even CTR 2, never delivered (its
        // bitmap went with its key); its next frame brings it back.
        r.afterEviction = [];
        for (const i of [0, 2]) r.afterEviction.push(await outcome(() => rx.decrypt(old[i])));
        r.next = await outcome(() => rx.decrypt(old[4]));
        r.readmitted = rx.kids.includes(first.kid);
        r.oldAgain = await outcome(() => rx.decrypt(old[3]));
        // Dropping the secret retires its KIDs too.
        await rx.setSecrets([{ key: keyB }, { key }]);
        r.keptOnChange = rx.kids.includes(first.kid);
        await rx.setSecrets([{ key: keyB }]);
        r.retiredOnDrop = rx.kids.length;
        await rx.setSecrets([{ key }]);
        r.dropOld = await outcome(() => rx.decrypt(old[4]));
        return r;
        """,
    )
    assert got["old"] == ["ok"] * (3 + 16)
    assert got["live"] == 16
    assert got["evicted"] is True
    assert got["afterEviction"] == ["replayed", "replayed"]
    assert got["next"] == "ok"
    assert got["readmitted"] is True
    assert got["oldAgain"] == "replayed"
    assert got["keptOnChange"] is True
    assert got["retiredOnDrop"] == 0
    assert got["dropOld"] == "replayed"


async def test_malformed_frames(page: Any) -> None:
    await js(page, RECEIVER_SETUP)
    got = await js(
        page,
        """
        const tx = await make(key);
        const wire = await tx.encrypt(frame);
        const rx = new sf.FrameReceiver(6, 'vp8');
        await rx.setSecrets([{ key }]);
        const cases = {
          empty: new Uint8Array(0),
          shortPrefix: wire.subarray(0, 2),
          noHeader: wire.subarray(0, 3),
          truncatedHeader: wire.subarray(0, 6),
          noTag: wire.subarray(0, 3 + sf.decodeHeader(wire, 3).length + 9),
          nonMinimal: unhex('010203' + '8005' + '00'.repeat(20)),
          keyFrameTooShort: unhex('00'.repeat(9)),
          oneByteShort: wire.subarray(0, wire.length - 1),
        };
        const out = {};
        for (const [name, w] of Object.entries(cases)) {
          out[name] = await outcome(() => rx.decrypt(w));
        }
        out.stillFine = await outcome(() => rx.decrypt(wire));
        out.notBytes = (await caught(() => rx.decrypt('abc')))?.name;
        return out;
        """,
    )
    assert got == {
        "empty": "malformed",
        "shortPrefix": "malformed",
        "noHeader": "malformed",
        "truncatedHeader": "malformed",
        "noTag": "malformed",
        "nonMinimal": "malformed",
        "keyFrameTooShort": "malformed",
        "oneByteShort": "authentication",
        "stillFine": "ok",
        "notBytes": "TypeError",
    }
