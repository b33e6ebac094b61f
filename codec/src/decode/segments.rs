//! Cutting decode ranges into independently decodable pieces, and grouping the pieces
//! into one segment per decoder session, balanced by expected decode cost.

use crate::index::PacketIndex;
use crate::plan::DecodeRange;

/// One decoder session's work: independently decodable ranges, decoded in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ranges: Vec<DecodeRange>,
}

impl Segment {
    /// Packets in the segment.
    pub fn packets(&self) -> usize {
        self.ranges.iter().map(|r| r.packets.len()).sum()
    }
}

/// Expected decode cost of a range: its pictures plus its bytes, each relative to the
/// stream's mean packet (decode time grows with both).
fn cost(index: &PacketIndex, range: &DecodeRange, mean_bytes: f64) -> f64 {
    let packets = &index.packets()[range.packets.clone()];
    let bytes: f64 = packets.iter().map(|p| f64::from(p.size)).sum();
    packets.len() as f64 + bytes / mean_bytes
}

/// Groups the independent ranges of [`split_at_gops`] (in order) into at most `sessions`
/// contiguous segments whose largest expected cost (pictures + bytes) is as small as
/// possible; never more segments than ranges, and every boundary is a range boundary, so
/// a key frame where decoding can restart.
pub fn partition(index: &PacketIndex, ranges: Vec<DecodeRange>, sessions: usize) -> Vec<Segment> {
    if ranges.is_empty() {
        return Vec::new();
    }
    let total_bytes: f64 = index.packets().iter().map(|p| f64::from(p.size)).sum();
    let mean_bytes = (total_bytes / index.len().max(1) as f64).max(1.0);
    let costs: Vec<f64> = ranges.iter().map(|r| cost(index, r, mean_bytes)).collect();
    let groups = |limit: f64| -> Vec<usize> {
        // Greedy: a new segment whenever the next range would pass the limit.
        let mut starts = vec![0];
        let mut sum = 0.0;
        for (i, &c) in costs.iter().enumerate() {
            if sum + c > limit && sum > 0.0 {
                starts.push(i);
                sum = 0.0;
            }
            sum += c;
        }
        starts
    };
    // The smallest limit whose greedy grouping needs at most `sessions` segments.
    let (mut lo, mut hi) = (
        costs.iter().copied().fold(0.0, f64::max),
        costs.iter().sum::<f64>(),
    );
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        if groups(mid).len() <= sessions.max(1) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let starts = groups(hi);
    let mut ranges = ranges;
    let mut out: Vec<Segment> = Vec::with_capacity(starts.len());
    for &start in starts.iter().rev() {
        out.push(Segment {
            ranges: ranges.split_off(start),
        });
    }
    out.reverse();
    out
}

/// Splits ranges at GOP starts where decoding can restart, so segments can run on
/// separate decoders in parallel. A GOP whose wanted frames include a leading
/// picture (which references the previous GOP) stays joined to its predecessor.
/// Each segment ends right after its last wanted packet.
pub fn split_at_gops(
    index: &PacketIndex,
    ranges: &[DecodeRange],
    frames: &[usize],
) -> Vec<DecodeRange> {
    let mut chained = vec![false; index.gop_count()];
    let mut wanted: Vec<usize> = frames
        .iter()
        .map(|&f| {
            let p = index.frame_packet(f);
            if index.is_leading(p) {
                chained[index.gop_of(p)] = true;
            }
            p
        })
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = Vec::new();
    let mut emit = |start: usize, end: usize| {
        // Last wanted packet before `end`.
        let last = wanted.partition_point(|&p| p < end);
        if last > 0 && wanted[last - 1] >= start {
            out.push(DecodeRange {
                packets: start..wanted[last - 1] + 1,
            });
        }
    };
    for range in ranges {
        let mut start = range.packets.start;
        for (gop, &joined) in chained.iter().enumerate().skip(index.gop_of(start) + 1) {
            let gop_start = index.gop_start(gop);
            if gop_start >= range.packets.end {
                break;
            }
            if !joined {
                emit(start, gop_start);
                start = gop_start;
            }
        }
        emit(start, range.packets.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Packet;

    fn index(keys: &[usize], n: usize) -> PacketIndex {
        PacketIndex::new(
            (0..n)
                .map(|i| Packet {
                    pts: i as i64,
                    dts: i as i64,
                    offset: 0,
                    size: 1,
                    keyframe: keys.contains(&i),
                })
                .collect(),
        )
    }

    #[test]
    fn splits_closed_gops_and_trims_tails() {
        let idx = index(&[0, 10, 20], 30);
        let ranges = [DecodeRange { packets: 0..26 }];
        let segs = split_at_gops(&idx, &ranges, &[3, 12, 25]);
        let got: Vec<_> = segs.iter().map(|s| s.packets.clone()).collect();
        assert_eq!(got, [0..4, 10..13, 20..26]);
    }

    /// The smallest possible largest-segment cost (exhaustive, for small inputs).
    fn best_max(costs: &[f64], parts: usize) -> f64 {
        if parts == 1 || costs.len() <= 1 {
            return costs.iter().sum();
        }
        (1..costs.len())
            .map(|cut| {
                let head: f64 = costs[..cut].iter().sum();
                head.max(best_max(&costs[cut..], parts - 1))
            })
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn partition_is_contiguous_balanced_and_starts_at_key_frames() {
        // GOPs of varying length and packet size, every GOP wanted.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for case in 0..40 {
            let gops = 1 + next() % 9;
            let mut keys = Vec::new();
            let mut n = 0;
            for _ in 0..gops {
                keys.push(n);
                n += 1 + next() % 40;
            }
            let packets: Vec<Packet> = (0..n)
                .map(|i| Packet {
                    pts: i as i64,
                    dts: i as i64,
                    offset: 0,
                    size: 1 + (next() % 5000) as u32,
                    keyframe: keys.contains(&i),
                })
                .collect();
            let idx = PacketIndex::new(packets);
            // Every frame wanted: one range per GOP.
            let all: Vec<usize> = (0..n).collect();
            let ranges = split_at_gops(&idx, &[DecodeRange { packets: 0..n }], &all);
            assert_eq!(ranges.len(), gops);
            let mean = idx.packets().iter().map(|p| f64::from(p.size)).sum::<f64>() / n as f64;
            let costs: Vec<f64> = ranges.iter().map(|r| cost(&idx, r, mean)).collect();
            for sessions in 1..=8 {
                let segs = partition(&idx, ranges.clone(), sessions);
                assert!(segs.len() <= sessions.min(ranges.len()), "case {case}");
                let flat: Vec<DecodeRange> = segs.iter().flat_map(|s| s.ranges.clone()).collect();
                assert_eq!(
                    flat, ranges,
                    "case {case}: segments cover the ranges in order"
                );
                for s in &segs {
                    assert!(
                        idx.packets()[s.ranges[0].packets.start].keyframe,
                        "case {case}"
                    );
                }
                let worst = segs
                    .iter()
                    .map(|s| s.ranges.iter().map(|r| cost(&idx, r, mean)).sum::<f64>())
                    .fold(0.0, f64::max);
                let best = best_max(&costs, sessions);
                assert!(
                    worst <= best * (1.0 + 1e-9),
                    "case {case}, {sessions} sessions: {worst} vs best {best}"
                );
            }
        }
    }

    #[test]
    fn partition_of_nothing_is_empty() {
        let idx = index(&[0], 5);
        assert!(partition(&idx, Vec::new(), 4).is_empty());
        let one = partition(&idx, vec![DecodeRange { packets: 0..5 }], 4);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].packets(), 5);
    }
}
