//! The one error type of the crate.  The Python binding maps every variant to
//! `ValueError`, in one place.

use core::fmt;

/// Everything that can go wrong.  No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A protection profile this crate does not implement.
    UnknownProfile(String),
    /// A master key or salt of the wrong length for the profile.
    KeyLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Not a well-formed RTP packet (RFC 3550 §5.1); the message says why.
    MalformedRtp(&'static str),
    /// An argument out of range; the message says which.
    InvalidArgument(&'static str),
    /// The packet is larger than one UDP datagram can carry.
    TooLong(usize),
    /// The packet's index is not above every index this sender has protected for its
    /// SSRC: protecting it would reuse a keystream (AES-CM) or a GCM nonce.
    IndexReused { ssrc: u32, index: u64 },
    /// All 2^48 indices of this SSRC are used (RFC 3711 §9.2): the master key must change.
    IndexExhausted { ssrc: u32 },
    /// More SSRCs than one sender tracks.
    TooManyStreams(usize),
    /// The AEAD refused its input (cannot happen for a packet that passed the checks).
    Crypto,
}

pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownProfile(name) => write!(
                f,
                "unknown SRTP profile {name:?} (known: {})",
                crate::Profile::ALL.map(crate::Profile::name).join(", ")
            ),
            Error::KeyLength {
                what,
                expected,
                got,
            } => write!(f, "SRTP {what} must be {expected} bytes, got {got}"),
            Error::MalformedRtp(why) => write!(f, "malformed RTP packet: {why}"),
            Error::InvalidArgument(why) => f.write_str(why),
            Error::TooLong(len) => write!(
                f,
                "RTP packet of {len} bytes is larger than a UDP datagram (max {})",
                crate::MAX_PACKET_LEN
            ),
            Error::IndexReused { ssrc, index } => write!(
                f,
                "SRTP index {index} of SSRC {ssrc:#010x} is not above the last one protected \
                 (a repeat would reuse the keystream)"
            ),
            Error::IndexExhausted { ssrc } => write!(
                f,
                "every SRTP index of SSRC {ssrc:#010x} is used (2^48 packets): re-key"
            ),
            Error::TooManyStreams(max) => {
                write!(f, "an SRTP sender tracks at most {max} SSRCs")
            }
            Error::Crypto => f.write_str("SRTP encryption failed"),
        }
    }
}

impl std::error::Error for Error {}
