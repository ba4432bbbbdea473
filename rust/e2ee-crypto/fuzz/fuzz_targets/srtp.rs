//! `e2ee-srtp`, the router's SRTP sender, on arbitrary bytes.  Byte 0 picks the profile.
//! *protect*: the rest is an RTP packet; it is protected or refused, never a panic; a
//! protected packet keeps its header in clear, grows by exactly the tag, and the same
//! packet again is refused (an index is used once).  *frame*: the rest gives b0, the
//! payload type, a sequence number, an extension block and payloads; `FrameHeader::new`
//! accepts or refuses them, and an accepted header protects exactly as the parsed packet
//! it writes would.
#![no_main]

use e2ee_srtp::{Error, FrameHeader, Profile, SrtpSender, rtp};
use libfuzzer_sys::fuzz_target;

fn sender(profile: Profile) -> Option<SrtpSender> {
    let key = vec![0x42; profile.master_key_len()];
    let salt = vec![0x24; profile.master_salt_len()];
    SrtpSender::new(profile, &key, &salt).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let profile = Profile::ALL[usize::from(choice % 3)];
    let Some(mut s) = sender(profile) else {
        panic!("a valid key was refused");
    };
    if choice & 0x80 == 0 {
        match s.protect(rest) {
            Ok(out) => {
                let header = rtp::parse(rest).expect("protect parsed it");
                assert_eq!(out.len(), rest.len() + profile.tag_len());
                assert_eq!(&out[..header.len], &rest[..header.len]);
                assert!(matches!(s.protect(rest), Err(Error::IndexReused { .. })));
            }
            Err(Error::MalformedRtp(_) | Error::TooLong(_)) => {}
            Err(e) => panic!("protect: unexpected {e:?}"),
        }
        return;
    }
    // frame: b0, pt, seq (2), extension length (1, in bytes), extension, then payloads
    // split at every 0xff byte.
    let [b0, pt, s0, s1, ext_len, tail @ ..] = rest else {
        return;
    };
    let (ext, payloads) = tail.split_at(usize::from(*ext_len).min(tail.len()));
    let Ok(header) = FrameHeader::new(*b0, *pt, 0x0102_0304, 0xfeed_beef, ext) else {
        return;
    };
    let mut parsed = sender(profile).expect("keyed");
    let mut seq = u16::from_be_bytes([*s0, *s1]);
    let parts: Vec<&[u8]> = payloads.split(|&b| b == 0xff).collect();
    for (i, payload) in parts.iter().enumerate() {
        let marker = i + 1 == parts.len();
        let mut out = vec![0u8; s.protected_len(header.len() + payload.len())];
        s.protect_packet(&header, seq, marker, payload, &mut out)
            .expect("a valid header and payload protect");
        let mut plain = out[..header.len()].to_vec();
        plain.extend_from_slice(payload);
        assert_eq!(
            rtp::parse(&plain).map(|h| (h.len, h.seq)),
            Ok((header.len(), seq))
        );
        assert_eq!(parsed.protect(&plain).as_deref(), Ok(&out[..]));
        seq = seq.wrapping_add(1);
    }
});
