//! Cipher suites: RFC 9605 §4.5 (1 to 5) and draft-barnes-sframe-iana-256 (6 to 8).

use crate::error::{Error, Result};

/// The hash of a suite's HKDF (and of its HMAC, for the CTR-HMAC suites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

/// How a suite encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    /// AES-CTR with a truncated HMAC, RFC 9605 §4.5.1.
    CtrHmac,
    /// AES-GCM.
    Gcm,
}

/// An SFrame cipher suite and its parameters (the IANA registry's columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    Aes128CtrHmacSha256_80 = 1,
    Aes128CtrHmacSha256_64 = 2,
    Aes128CtrHmacSha256_32 = 3,
    Aes128GcmSha256_128 = 4,
    Aes256GcmSha512_128 = 5,
    Aes256CtrHmacSha512_80 = 6,
    Aes256CtrHmacSha512_64 = 7,
    Aes256CtrHmacSha512_32 = 8,
}

use CipherSuite::*;

impl CipherSuite {
    /// Every suite, in registry order.
    pub const ALL: [CipherSuite; 8] = [
        Aes128CtrHmacSha256_80,
        Aes128CtrHmacSha256_64,
        Aes128CtrHmacSha256_32,
        Aes128GcmSha256_128,
        Aes256GcmSha512_128,
        Aes256CtrHmacSha512_80,
        Aes256CtrHmacSha512_64,
        Aes256CtrHmacSha512_32,
    ];

    /// The registry value.
    pub const fn id(self) -> u16 {
        self as u16
    }

    pub const fn hash(self) -> Hash {
        match self {
            Aes128CtrHmacSha256_80
            | Aes128CtrHmacSha256_64
            | Aes128CtrHmacSha256_32
            | Aes128GcmSha256_128 => Hash::Sha256,
            _ => Hash::Sha512,
        }
    }

    pub const fn aead(self) -> Aead {
        match self {
            Aes128GcmSha256_128 | Aes256GcmSha512_128 => Aead::Gcm,
            _ => Aead::CtrHmac,
        }
    }

    /// Nh: output length of the hash.
    pub const fn nh(self) -> usize {
        match self.hash() {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// Nka: the AES key length inside a CTR-HMAC key (the AES key length for GCM).
    pub const fn nka(self) -> usize {
        match self {
            Aes128CtrHmacSha256_80
            | Aes128CtrHmacSha256_64
            | Aes128CtrHmacSha256_32
            | Aes128GcmSha256_128 => 16,
            _ => 32,
        }
    }

    /// Nk: the AEAD key length (for CTR-HMAC, the AES key and the HMAC key together).
    pub const fn nk(self) -> usize {
        match self.aead() {
            Aead::CtrHmac => self.nka() + self.nh(),
            Aead::Gcm => self.nka(),
        }
    }

    /// Nn: the nonce length.
    pub const fn nn(self) -> usize {
        12
    }

    /// Nt: the tag length.
    pub const fn nt(self) -> usize {
        match self {
            Aes128CtrHmacSha256_80 | Aes256CtrHmacSha512_80 => 10,
            Aes128CtrHmacSha256_64 | Aes256CtrHmacSha512_64 => 8,
            Aes128CtrHmacSha256_32 | Aes256CtrHmacSha512_32 => 4,
            Aes128GcmSha256_128 | Aes256GcmSha512_128 => 16,
        }
    }

    /// The registry name.
    pub const fn name(self) -> &'static str {
        match self {
            Aes128CtrHmacSha256_80 => "AES_128_CTR_HMAC_SHA256_80",
            Aes128CtrHmacSha256_64 => "AES_128_CTR_HMAC_SHA256_64",
            Aes128CtrHmacSha256_32 => "AES_128_CTR_HMAC_SHA256_32",
            Aes128GcmSha256_128 => "AES_128_GCM_SHA256_128",
            Aes256GcmSha512_128 => "AES_256_GCM_SHA512_128",
            Aes256CtrHmacSha512_80 => "AES_256_CTR_HMAC_SHA512_80",
            Aes256CtrHmacSha512_64 => "AES_256_CTR_HMAC_SHA512_64",
            Aes256CtrHmacSha512_32 => "AES_256_CTR_HMAC_SHA512_32",
        }
    }
}

impl TryFrom<u16> for CipherSuite {
    type Error = Error;

    fn try_from(v: u16) -> Result<Self> {
        CipherSuite::ALL
            .into_iter()
            .find(|s| s.id() == v)
            .ok_or(Error::UnsupportedSuite(i64::from(v)))
    }
}
