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
    UnsupportedSuite(u16),
    /// Every CTR value of this KID has been used.
    CounterExhausted,
    /// The encryption secret fails validation; the message says why (never the secret).
    InvalidSecret(String),
    /// Another argument out of range.
    InvalidArgument(String),
    /// The operating system's random generator failed.
    Rng,
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
        }
    }
}

impl std::error::Error for Error {}
