"""Every exception e2ee raises.

The Rust core raises the SFrame errors below directly (it imports this module), so a
caller catches the same classes whichever layer failed.  Authentication failures are
deliberately opaque: :class:`AuthenticationFailed` never says which byte or check
failed, so it cannot serve as an oracle.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "CodecError",
    "CounterExhausted",
    "DecryptionInternalError",
    "E2eeError",
    "EncryptionInternalError",
    "EncryptionSecretMismatch",
    "EncryptionSecretMissing",
    "FrameTooShort",
    "InvalidEncryptionSecret",
    "InvalidLength",
    "MalformedHeader",
    "OpusParseError",
    "ReplayedFrame",
    "SFrameError",
    "UnknownKeyId",
    "UnsupportedCipherSuite",
    "UnsupportedCodec",
    "Vp8ParseError",
    "WeakSessionParameters",
]


class E2eeError(Exception):
    """Base class of every error raised by e2ee."""


# -- SFrame core (RFC 9605) -------------------------------------------------------------


class SFrameError(E2eeError):
    """Base class of the errors of the SFrame core."""


class MalformedHeader(SFrameError, ValueError):
    """The bytes are not a valid SFrame header (RFC 9605 §4.3): truncated or non-minimal."""


class UnknownKeyId(SFrameError, LookupError):
    """No key is registered for the frame's KID."""

    def __init__(self, message: str, kid: int) -> None:
        super().__init__(message)
        self.kid = kid


class AuthenticationFailed(SFrameError):
    """The frame did not authenticate.  Opaque on purpose: no detail is given."""


class ReplayedFrame(SFrameError):
    """The (KID, CTR) pair was already accepted, or is older than the replay window."""

    def __init__(self, message: str, kid: int, ctr: int) -> None:
        super().__init__(message)
        self.kid = kid
        self.ctr = ctr


class InvalidLength(SFrameError, ValueError):
    """A length is out of range: a key, an output buffer, or a ciphertext too short."""


class UnsupportedCipherSuite(SFrameError, ValueError):
    """The cipher suite number is not one of 1 to 8."""


class CounterExhausted(SFrameError):
    """The encryptor has used every CTR value of its KID; a new KID is needed."""


# -- Media layer (the product's error codes) --------------------------------------------


class InvalidEncryptionSecret(E2eeError, ValueError):
    """The secret is not a str of 8 to 256 characters after NFC normalization."""


class EncryptionSecretMissing(E2eeError):
    """Connect, publish, subscribe or a frame operation in an E2EE session without a secret."""


class EncryptionSecretMismatch(E2eeError):
    """Frames arrive under a secret this client does not hold."""

    def __init__(self, message: str, kid: int | None = None) -> None:
        super().__init__(message)
        self.kid = kid


class DecryptionInternalError(E2eeError):
    """The secret matches but a frame failed authentication or parsing, or was replayed.

    ``reason`` is ``"authentication"``, ``"malformed"`` or ``"replayed"``.
    """

    def __init__(self, message: str, reason: str = "authentication") -> None:
        super().__init__(message)
        self.reason = reason


class EncryptionInternalError(E2eeError):
    """A frame could not be encrypted (it is dropped, never sent in clear)."""


class WeakSessionParameters(E2eeError):
    """The server asked for a cipher suite or PBKDF2 iteration count this client's
    :class:`~e2ee.wire.params.SessionPolicy` refuses.  ``suite`` and ``kdf_iterations``
    are what the server asked."""

    def __init__(self, message: str, suite: object = None, kdf_iterations: object = None) -> None:
        super().__init__(message)
        self.suite = suite
        self.kdf_iterations = kdf_iterations


# -- Codecs (VP8 and Opus only in E2EE sessions) ----------------------------------------


class CodecError(E2eeError, ValueError):
    """Base class of the errors of :mod:`e2ee.wire` and of the codec rules of the core."""


class UnsupportedCodec(CodecError):
    """The codec is neither VP8 nor Opus, the only codecs allowed in an E2EE session."""


class FrameTooShort(CodecError):
    """The frame is shorter than the bytes its codec keeps in clear.

    Such a frame is invalid for its codec: the sender drops it (it never goes out in clear)
    and the receiver treats it as corrupt.
    """

    def __init__(self, message: str, codec: str, length: int, needed: int) -> None:
        super().__init__(message)
        self.codec = codec
        self.length = length
        self.needed = needed


class Vp8ParseError(CodecError):
    """The bytes are not a valid VP8 payload descriptor or frame header.

    Raised on truncated input and on a key frame with a wrong start code.
    """


class OpusParseError(CodecError):
    """The input is not an Opus TOC byte (empty packet, or an int outside 0..255)."""
