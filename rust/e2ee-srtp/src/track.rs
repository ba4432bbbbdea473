//! Frames from RTP headers alone, for the load generator of `e2ee bench router` (its
//! light subscribers, `python/e2ee/tools/bench/router_worker/light.py`, whose per-packet
//! path this is, moved out of Python: the native receiver of `e2ee._srtp` runs it on
//! every datagram it reads).  Nothing here decrypts: the SRTP header is in clear (RFC 3711
//! §3.1), and the relay it listens to sends whole frames, in order.
//!
//! [`classify`] separates RTP from RTCP and the rest (STUN, DTLS) exactly as the Python
//! path does; [`FrameTracker`] counts a track's packets, finds its frames (a new RTP
//! timestamp starts one, the marker bit ends it) and keeps the packets of the frames the
//! caller wants to decrypt (its probes).

/// What one datagram on a subscriber's ICE socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// RTP: its payload type and SSRC (RFC 3550 §5.1).
    Rtp { payload_type: u8, ssrc: u32 },
    /// RTCP (RFC 5761 §4: packet types 192 to 223 on a muxed socket).
    Rtcp,
    /// Anything else: STUN, DTLS (or too short to be RTP).
    Other,
}

/// RFC 7983 §7: a first byte of 128 to 191 is RTP or RTCP, told apart by the second byte
/// (RFC 5761 §4).  Longer than the 12-byte fixed header, as the Python path requires.
pub fn classify(data: &[u8]) -> Datagram {
    match data {
        [b0, b1, _, _, _, _, _, _, s0, s1, s2, s3, _, ..] if (128..192).contains(b0) => {
            if (192..224).contains(b1) {
                Datagram::Rtcp
            } else {
                Datagram::Rtp {
                    payload_type: b1 & 0x7f,
                    ssrc: u32::from_be_bytes([*s0, *s1, *s2, *s3]),
                }
            }
        }
        _ => Datagram::Other,
    }
}

/// A track's counters since they were last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    /// RTP packets missing (sequence numbers skipped).
    pub seq_gaps: u64,
    /// Video frames not delivered: a packet missing by the marker, or no marker at all.
    pub incomplete: u64,
    /// Packets older than one already seen (ignored: their frame was judged already).
    pub late: u64,
}

/// One frame, complete as far as the headers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub timestamp: u32,
    /// When its last packet (the marker, or audio's only one) arrived.
    pub arrival_ns: i64,
    /// Its packets, whole, when it is to be decrypted: the caller wanted a probe, or
    /// (video) packets went missing right before it, which may have been its own first
    /// ones: only decrypting tells then.
    pub packets: Option<Vec<Vec<u8>>>,
    /// Video: packets were missing right before it (or it is the first frame seen).
    pub uncertain: bool,
}

/// One published track at one subscriber: the per-packet half of the Python
/// `LightTrack.packet`, statement for statement.
#[derive(Debug)]
pub struct FrameTracker {
    video: bool,
    want_probe: bool,
    next_seq: Option<u16>,
    timestamp: Option<u32>,
    /// The sequence number after the last marker seen.
    after: Option<u16>,
    ended: bool,
    intact: bool,
    uncertain: bool,
    parts: Option<Vec<Vec<u8>>>,
    counters: Counters,
}

impl FrameTracker {
    /// A video (VP8: frames of many packets) or audio (Opus: a packet is a frame) track;
    /// it keeps the packets of its first frame.
    pub fn new(video: bool) -> Self {
        FrameTracker {
            video,
            want_probe: true,
            next_seq: None,
            timestamp: None,
            after: None,
            ended: true,
            intact: false,
            uncertain: true,
            parts: None,
            counters: Counters::default(),
        }
    }

    /// Keep the packets of the next frame (`true`: once; the next [`Frame`] returned
    /// with its packets, uncertain or not, uses the request up) or only of uncertain ones
    /// (`false`).  Once, so that a caller who learns of frames in batches never gets two
    /// probes where it asked for one.
    pub fn set_want_probe(&mut self, on: bool) {
        self.want_probe = on;
    }

    /// The counters since the last call; they restart from zero.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    /// One RTP packet of this track (whole, as received); the frame it completes, if any.
    /// Shorter than the fixed header: counted, nothing else.
    pub fn packet(&mut self, data: &[u8], arrival_ns: i64) -> Option<Frame> {
        self.counters.packets += 1;
        self.counters.bytes += data.len() as u64;
        let &[_, b1, q0, q1, t0, t1, t2, t3] = data.first_chunk()?;
        let seq = u16::from_be_bytes([q0, q1]);
        let ts = u32::from_be_bytes([t0, t1, t2, t3]);
        if Some(seq) != self.next_seq && !self.jump(seq) {
            return None;
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if !self.video {
            let packets = self.want_probe.then(|| vec![data.to_vec()]);
            self.want_probe = false;
            return Some(Frame {
                timestamp: ts,
                arrival_ns,
                packets,
                uncertain: false,
            });
        }
        if Some(ts) != self.timestamp {
            self.start(data, seq, ts);
        } else if let Some(parts) = &mut self.parts {
            parts.push(data.to_vec());
        }
        if b1 & 0x80 == 0 {
            return None;
        }
        // The marker: the frame's last packet.
        self.ended = true;
        self.after = Some(seq.wrapping_add(1));
        let packets = self.parts.take();
        if !self.intact {
            self.counters.incomplete += 1;
            return None;
        }
        if packets.is_some() {
            self.want_probe = false;
        }
        Some(Frame {
            timestamp: ts,
            arrival_ns,
            packets,
            uncertain: self.uncertain,
        })
    }

    /// A packet out of sequence: count the gap; `false` if it is late (its frame was
    /// judged already) and to be ignored.
    fn jump(&mut self, seq: u16) -> bool {
        let Some(expected) = self.next_seq else {
            return true;
        };
        let gap = seq.wrapping_sub(expected);
        if gap >= 0x8000 {
            self.counters.late += 1;
            return false;
        }
        self.counters.seq_gaps += u64::from(gap);
        self.intact = false;
        true
    }

    /// The first packet of a new video frame (a new RTP timestamp).
    fn start(&mut self, data: &[u8], seq: u16, ts: u32) {
        if !self.ended {
            self.counters.incomplete += 1; // the previous frame never got its marker
        }
        self.timestamp = Some(ts);
        self.ended = false;
        self.uncertain = self.after != Some(seq);
        self.intact = true;
        self.parts = (self.uncertain || self.want_probe).then(|| vec![data.to_vec()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: u8 = 0x80;

    fn rtp(marker: bool, seq: u16, ts: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, if marker { MARKER | 96 } else { 96 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234u32.to_be_bytes());
        p.resize(len.max(12), 0xab);
        p
    }

    /// Frame `n` of `k` packets from sequence number `seq`.
    fn frame(seq: u16, n: u32, k: u16) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| rtp(i + 1 == k, seq.wrapping_add(i), 1000 + 3000 * n, 100))
            .collect()
    }

    fn feed(t: &mut FrameTracker, packets: &[Vec<u8>], at: i64) -> Vec<Frame> {
        packets.iter().filter_map(|p| t.packet(p, at)).collect()
    }

    #[test]
    fn classifies_as_the_python_path() {
        assert_eq!(
            classify(&rtp(false, 1, 2, 20)),
            Datagram::Rtp {
                payload_type: 96,
                ssrc: 0x1234
            }
        );
        let mut rtcp = rtp(false, 1, 2, 28);
        rtcp[1] = 200; // a sender report
        assert_eq!(classify(&rtcp), Datagram::Rtcp);
        rtcp[1] = 223;
        assert_eq!(classify(&rtcp), Datagram::Rtcp);
        rtcp[1] = 224; // payload type 96 with the marker bit
        assert!(matches!(classify(&rtcp), Datagram::Rtp { .. }));
        // STUN (0..3), DTLS (20..63), and RTP no longer than its fixed header.
        assert_eq!(
            classify(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]),
            Datagram::Other
        );
        assert_eq!(classify(&[22; 40]), Datagram::Other);
        assert_eq!(classify(&rtp(false, 1, 2, 12)), Datagram::Other);
        assert_eq!(classify(&[192; 40]), Datagram::Other);
        assert_eq!(classify(&[]), Datagram::Other);
    }

    #[test]
    fn whole_frames_are_delivered_at_the_marker() {
        let mut t = FrameTracker::new(true);
        let first = feed(&mut t, &frame(65534, 0, 3), 7);
        assert_eq!(first.len(), 1);
        // The first frame is uncertain (nothing before it was seen) and kept whole.
        assert!(first[0].uncertain);
        assert_eq!(first[0].packets.as_ref().map(Vec::len), Some(3));
        assert_eq!(first[0].arrival_ns, 7);
        let next = feed(&mut t, &frame(1, 1, 4), 9); // across the wrap of the sequence
        assert_eq!(
            next,
            vec![Frame {
                timestamp: 4000,
                arrival_ns: 9,
                packets: None,
                uncertain: false
            }]
        );
        let c = t.take_counters();
        assert_eq!(
            (c.packets, c.bytes, c.seq_gaps, c.incomplete),
            (7, 700, 0, 0)
        );
        assert_eq!(t.take_counters(), Counters::default());
    }

    #[test]
    fn a_missing_packet_withholds_its_frame_and_marks_the_next_uncertain() {
        let mut t = FrameTracker::new(true);
        t.set_want_probe(false);
        feed(&mut t, &frame(10, 0, 3), 0);
        let mut lost = frame(13, 1, 3);
        lost.remove(1);
        assert!(feed(&mut t, &lost, 1).is_empty());
        let after = feed(&mut t, &frame(16, 2, 2), 2);
        assert_eq!(after.len(), 1);
        assert!(!after[0].uncertain); // it follows the marker of frame 1
        // A frame whose first packet is lost follows a gap: uncertain, kept for a probe
        // (decrypting it tells whether the packets missing were its own).
        let mut headless = frame(18, 3, 3);
        headless.remove(0);
        let got = feed(&mut t, &headless, 3);
        assert!(got[0].uncertain);
        assert_eq!(got[0].packets.as_ref().map(Vec::len), Some(2));
        let got = feed(&mut t, &frame(21, 4, 2), 4);
        assert!(!got[0].uncertain);
        let mut gap = frame(30, 6, 2); // frame 5 lost whole
        let got = feed(&mut t, &gap, 5);
        assert!(got[0].uncertain);
        assert_eq!(got[0].packets.as_ref().map(Vec::len), Some(2));
        let c = t.take_counters();
        assert_eq!((c.seq_gaps, c.incomplete, c.late), (1 + 1 + 7, 1, 0));
        // A late repeat is ignored and counted.
        gap.truncate(1);
        assert!(feed(&mut t, &gap, 6).is_empty());
        assert_eq!(t.take_counters().late, 1);
    }

    #[test]
    fn a_frame_without_its_marker_is_incomplete() {
        let mut t = FrameTracker::new(true);
        let mut f = frame(0, 0, 3);
        f.pop();
        feed(&mut t, &f, 0);
        // The next packet (seq 2, a new frame) is the marker's number: a gap of 1 there.
        assert_eq!(feed(&mut t, &frame(3, 1, 2), 1).len(), 1);
        let c = t.take_counters();
        assert_eq!((c.incomplete, c.seq_gaps), (1, 1));
    }

    #[test]
    fn a_probe_request_waits_for_a_frame_that_is_returned() {
        let mut t = FrameTracker::new(true);
        feed(&mut t, &frame(0, 0, 2), 0); // the first frame: kept
        t.set_want_probe(true);
        let mut lost = frame(2, 1, 3);
        lost.remove(1);
        assert!(feed(&mut t, &lost, 1).is_empty()); // kept, but incomplete
        let got = feed(&mut t, &frame(5, 2, 2), 2);
        assert!(!got[0].uncertain);
        assert!(got[0].packets.is_some()); // the request still stands
        let got = feed(&mut t, &frame(7, 3, 2), 3);
        assert_eq!(got[0].packets, None); // and is used up
    }

    #[test]
    fn audio_packets_are_frames_kept_only_for_a_probe() {
        let mut t = FrameTracker::new(false);
        let got = feed(
            &mut t,
            &[rtp(false, 5, 960, 60), rtp(false, 6, 1920, 60)],
            3,
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].packets.as_ref().map(Vec::len), Some(1));
        assert_eq!(got[1].packets, None); // the request was for one frame
        t.set_want_probe(true);
        t.set_want_probe(false);
        let got = feed(&mut t, &[rtp(false, 7, 2880, 60)], 4);
        assert_eq!(got[0].packets, None);
        assert_eq!(got[0].timestamp, 2880);
    }

    #[test]
    fn short_packets_are_only_counted() {
        let mut t = FrameTracker::new(true);
        assert_eq!(t.packet(&[0x80, 0x80, 0, 1], 0), None);
        assert_eq!(t.take_counters().packets, 1);
    }
}
