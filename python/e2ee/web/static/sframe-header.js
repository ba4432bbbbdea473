// e2ee v1 frame format in the browser (sframe.js): the SFrame header (RFC 9605 §4.3)
// and the codecs' clear prefix (docs/protocol.md §4, §5).  Internal: applications import
// sframe.js, which re-exports the public names.

import {
  bigEndian,
  checkU64,
  concat,
  fail,
  parseCodec,
  readBigEndian,
  toBytes,
} from "./sframe-base.js";

// ---------------------------------------------------------------------------------------
// Header encoding, RFC 9605 §4.3 (protocol.md §5)
//
//  0 1 2 3 4 5 6 7
// +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
// |X|  K  |Y|  C  |   KID (0 or K+1 bytes)    |   CTR (0 or C+1 bytes)    |
// +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
// ---------------------------------------------------------------------------------------

/** Bytes a value takes after the config byte: 0 below 8, else 1 to 8 (the fewest). */
function extraLen(v) {
  if (v < 8n) return 0;
  let n = 0;
  for (; v > 0n; v >>= 8n) n++;
  return n;
}

/** The 4-bit half of the config byte for a value of `n` extra bytes. */
const nibble = (v, n) => (n === 0 ? Number(v) : 0x08 | (n - 1));

/**
 * The SFrame header for (kid, ctr), in its minimal encoding (RFC 9605 §4.3): a value
 * below 8 sits in the config byte, a larger one follows big-endian in the fewest bytes.
 *
 * @param {bigint} kid 0 to 2^64 - 1
 * @param {bigint} ctr 0 to 2^64 - 1
 * @returns {Uint8Array} 1 to 17 bytes
 */
export function encodeHeader(kid, ctr) {
  checkU64(kid, "kid");
  checkU64(ctr, "ctr");
  const kn = extraLen(kid);
  const cn = extraLen(ctr);
  const config = Uint8Array.of((nibble(kid, kn) << 4) | nibble(ctr, cn));
  return concat(config, bigEndian(kid, kn), bigEndian(ctr, cn));
}

/** One field announced by a config nibble: `{value, n}`, or null if truncated or not
 * minimal. */
function decodeField(half, bytes, at) {
  if ((half & 0x08) === 0) return { value: BigInt(half), n: 0 };
  const n = (half & 0x07) + 1;
  if (at + n > bytes.length) return null; // truncated
  const value = readBigEndian(bytes, at, n);
  if (extraLen(value) !== n) return null; // non-minimal (protocol.md §5)
  return { value, n };
}

/**
 * Parses the SFrame header at `bytes[offset]`.  Only the minimal encoding is accepted,
 * as by the core (protocol.md §5): `80 05` and `09 00 10` are refused.
 *
 * @param {Uint8Array} bytes
 * @param {number} [offset=0]
 * @returns {{kid: bigint, ctr: bigint, length: number} | null} `length` is the header's
 *   size in bytes; null when the header is empty, truncated or not minimal
 */
export function decodeHeader(bytes, offset = 0) {
  bytes = toBytes(bytes);
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError("offset must be a non-negative integer");
  }
  if (offset >= bytes.length) return null;
  const config = bytes[offset];
  const kid = decodeField(config >> 4, bytes, offset + 1);
  if (!kid) return null;
  const ctr = decodeField(config & 0x0f, bytes, offset + 1 + kid.n);
  if (!ctr) return null;
  return { kid: kid.value, ctr: ctr.value, length: 1 + kid.n + ctr.n };
}

// ---------------------------------------------------------------------------------------
// Codec clear prefix (protocol.md §4)
// ---------------------------------------------------------------------------------------

/**
 * How many leading bytes of an encoded frame stay in clear (and are authenticated as
 * SFrame metadata), protocol.md §4:
 * - VP8 key frame (`frame[0] & 1 == 0`, RFC 6386 §9.1): 10 (frame tag, start code,
 *   dimensions);
 * - VP8 inter frame: 3 (frame tag);
 * - Opus: 1 (the TOC byte, RFC 6716 §3.1).
 *
 * @param {"vp8"|"opus"} codec (the MIME forms `video/VP8`, `audio/opus` work too)
 * @param {Uint8Array} frame
 * @returns {number}
 * @throws {E2eeError} `code = "FrameTooShort"` for a frame shorter than its prefix
 *   (an empty frame never fits)
 */
export function clearPrefixLength(codec, frame) {
  codec = parseCodec(codec);
  frame = toBytes(frame, "frame");
  let needed = 1;
  if (codec === "vp8") needed = frame.length > 0 && (frame[0] & 0x01) === 0 ? 10 : 3;
  if (frame.length < needed) {
    throw fail("FrameTooShort", `${codec} frame of ${frame.length} bytes, ${needed} are needed`);
  }
  return needed;
}
