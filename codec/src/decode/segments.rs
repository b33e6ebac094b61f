//! Cutting decode ranges into independently decodable segments.

use crate::index::PacketIndex;
use crate::plan::DecodeRange;

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
}
