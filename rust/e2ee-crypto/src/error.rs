//! The one error type of the crate.  The Python binding maps it to exceptions in one place.

use core::fmt;

/// Everything that can go wrong.  No variant carries secret material, and
/// [`Error::Authentication`] carries nothing at all: a failed tag says only that it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a valid SFrame header (RFC 9605 §4.3).
    MalformedHeader(&'static str),
    /// No key registered for this KID.
    UnknownKeyId(u64),
    /// The frame did not authenticate (opaque by design).
    Authentication,
    /// The (KID, CTR) pair was already accepted or fell behind the replay window.
    Replayed { kid: u64, ctr: u64 },
    /// A length out of range; the message says which.
    InvalidLength(String),
    /// Cipher suite number not in 1..=8.
    UnsupportedSuite(i64),
    /// Every CTR value of this KID has been used.
    CounterExhausted,
    /// The encryption secret fails validation; the message says why (never the secret).
    InvalidSecret(String),
    /// Another argument out of range.
    InvalidArgument(String),
    /// The operating system's random generator failed.
    Rng,
    /// No encryption secret is set (the media layer's `EncryptionSecretMissing`).
    SecretMissing,
    /// The frame's KID names a secret this side does not hold.
    SecretMismatch { kid: u64 },
    /// The frame is shorter than the bytes its codec keeps in clear.
    FrameTooShort {
        codec: &'static str,
        len: usize,
        needed: usize,
    },
    /// A codec other than VP8 and Opus.
    UnsupportedCodec(String),
}

pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MalformedHeader(why) => write!(f, "malformed SFrame header: {why}"),
            Error::UnknownKeyId(kid) => write!(f, "no key for KID {kid:#x}"),
            Error::Authentication => f.write_str("frame authentication failed"),
            Error::Replayed { kid, ctr } => {
                write!(f, "replayed or too old frame: KID {kid:#x}, CTR {ctr}")
            }
            Error::InvalidLength(why) => f.write_str(why),
            Error::UnsupportedSuite(s) => {
                write!(f, "unsupported cipher suite {s} (supported: 1 to 8)")
            }
            Error::CounterExhausted => {
                f.write_str("every CTR value of this KID is used; start a new KID")
            }
            Error::InvalidSecret(why) => write!(f, "invalid encryption secret: {why}"),
            Error::InvalidArgument(why) => f.write_str(why),
            Error::Rng => f.write_str("the operating system's random generator failed"),
            Error::SecretMissing => f.write_str("no encryption secret is set"),
            Error::SecretMismatch { kid } => write!(
                f,
                "frame under a secret this side does not hold (KID {kid:#x}, secret id {:#06x})",
                kid >> 48
            ),
            Error::FrameTooShort { codec, len, needed } => write!(
                f,
                "{codec} frame of {len} bytes is shorter than its {needed} clear bytes"
            ),
            Error::UnsupportedCodec(name) => write!(
                f,
                "codec {name:?} is not supported in E2EE sessions (only VP8 and Opus)"
            ),
        }
    }
}

impl std::error::Error for Error {}
