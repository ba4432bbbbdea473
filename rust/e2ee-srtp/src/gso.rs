//! Which packets of a frame may leave in one UDP generic segmentation offload send (Linux
//! `UDP_SEGMENT`, 4.18 and later): the kernel cuts one send into datagrams of the
//! segment size, the last one possibly shorter (`udp_send_skb`, `udp_gso_segment`).  So a
//! run is packets of equal length, optionally closed by one shorter packet; the router's
//! packets of one frame to one subscriber are mostly such runs (a packetizer cuts a frame
//! into pieces of one size and a remainder).  Pure: lengths in, runs out; the send is the
//! binding's.

/// Segments one GSO send may hold: the kernel's `UDP_MAX_SEGMENTS` was 64 before Linux 5.5
/// (128 since); the smaller works on every kernel with `UDP_SEGMENT`.
pub const MAX_SEGMENTS: usize = 64;
/// Bytes one GSO send may hold: it is one IP packet until the kernel segments it, so it
/// must stay under 65,535 with its IPv6 and UDP headers.
pub const MAX_BYTES: usize = 65_000;

/// Consecutive packets sent together: `packets[start..end]`; `segment` is their
/// common length when the run has more than one packet (the send then carries the
/// `UDP_SEGMENT` option), 0 when it is a single packet (a plain datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub end: usize,
    pub segment: usize,
}

/// Splits packets of the given lengths, in order, into the fewest runs a greedy cut
/// finds: each run equal lengths, then at most one shorter packet, at most
/// `max_segments` packets and `max_bytes` bytes.  With `max_segments` 1 every packet is
/// its own run (no GSO).  Zero-length packets are always their own run (a segment size
/// of 0 means "no GSO" to the kernel).
pub fn runs(lens: &[usize], max_segments: usize, max_bytes: usize) -> Vec<Run> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&size) = lens.get(i) {
        let mut end = i + 1;
        let mut bytes = size;
        if size > 0 {
            while let Some(&next) = lens.get(end) {
                if end - i >= max_segments || next > size || bytes + next > max_bytes {
                    break;
                }
                end += 1;
                bytes += next;
                if next < size {
                    break; // only the last segment may be shorter
                }
            }
        }
        out.push(Run {
            start: i,
            end,
            segment: if end - i > 1 { size } else { 0 },
        });
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(lens: &[usize]) -> Vec<(usize, usize, usize)> {
        runs(lens, MAX_SEGMENTS, MAX_BYTES)
            .into_iter()
            .map(|r| (r.start, r.end, r.segment))
            .collect()
    }

    #[test]
    fn equal_sizes_then_a_shorter_one_are_one_run() {
        assert_eq!(cut(&[]), vec![]);
        assert_eq!(cut(&[1200]), vec![(0, 1, 0)]);
        assert_eq!(cut(&[1200, 1200, 1200, 40]), vec![(0, 4, 1200)]);
        // A longer packet starts a new run; so does anything after the shorter one.
        assert_eq!(
            cut(&[1000, 1001, 1001, 7, 7]),
            vec![(0, 1, 0), (1, 4, 1001), (4, 5, 0)]
        );
        // A balanced packetizer (sizes differing by one): a run per size.
        assert_eq!(
            cut(&[1101, 1101, 1100, 1100]),
            vec![(0, 3, 1101), (3, 4, 0)]
        );
        assert_eq!(cut(&[0, 0, 5]), vec![(0, 1, 0), (1, 2, 0), (2, 3, 0)]);
    }

    #[test]
    fn runs_stay_within_the_kernels_limits() {
        let lens = vec![1000; 150];
        let got = runs(&lens, MAX_SEGMENTS, MAX_BYTES);
        assert_eq!(
            got.iter().map(|r| r.end - r.start).collect::<Vec<_>>(),
            vec![64, 64, 22]
        );
        let got = runs(&[30_000, 30_000, 30_000], MAX_SEGMENTS, MAX_BYTES);
        assert_eq!(got.len(), 2);
        assert_eq!(runs(&[9, 9, 9], 1, MAX_BYTES).len(), 3);
        for r in runs(&[1200; 200], MAX_SEGMENTS, MAX_BYTES) {
            assert!(r.end - r.start <= MAX_SEGMENTS);
            assert!((r.end - r.start) * 1200 <= MAX_BYTES);
        }
    }

    #[test]
    fn every_packet_is_in_exactly_one_run_in_order() {
        let lens: Vec<usize> = (0..300)
            .map(|i| [1200, 1200, 900, 0, 1200][i % 5])
            .collect();
        let got = runs(&lens, MAX_SEGMENTS, MAX_BYTES);
        let mut next = 0;
        for r in &got {
            assert_eq!(r.start, next);
            assert!(r.end > r.start);
            let run = &lens[r.start..r.end];
            if r.segment > 0 {
                assert!(run[..run.len() - 1].iter().all(|&l| l == r.segment));
                assert!(run[run.len() - 1] <= r.segment);
            }
            next = r.end;
        }
        assert_eq!(next, lens.len());
    }
}
