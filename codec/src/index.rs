//! The packet index: decode order, presentation order and GOP boundaries.

use crate::stream::{Packet, Rational};

/// Packets of one stream in decode order, with presentation order and GOPs derived.
///
/// "Frame `f`" always means the `f`-th frame in presentation order, the numbering
/// qwen-vl-utils samples from.
#[derive(Clone, Debug)]
pub struct PacketIndex {
    packets: Vec<Packet>,
    /// Presentation position → packet.
    display: Vec<u32>,
    /// Packet → presentation position.
    rank: Vec<u32>,
    /// Packets that start a GOP (key frames; packet 0 always), ascending.
    gop_starts: Vec<u32>,
    first_pts: i64,
}

impl PacketIndex {
    /// Builds the index from packets in decode order. `packets` must not be empty.
    pub fn new(packets: Vec<Packet>) -> Self {
        assert!(!packets.is_empty(), "a packet index needs packets");
        let mut display: Vec<u32> = (0..packets.len() as u32).collect();
        display.sort_by_key(|&i| (packets[i as usize].pts, i));
        let mut rank = vec![0u32; packets.len()];
        for (pos, &p) in display.iter().enumerate() {
            rank[p as usize] = pos as u32;
        }
        let gop_starts = packets
            .iter()
            .enumerate()
            .filter(|(i, p)| *i == 0 || p.keyframe)
            .map(|(i, _)| i as u32)
            .collect();
        let first_pts = packets[display[0] as usize].pts;
        Self {
            packets,
            display,
            rank,
            gop_starts,
            first_pts,
        }
    }

    /// Number of packets, which is the number of frames.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Always false: an index holds at least one packet.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// All packets in decode order.
    pub fn packets(&self) -> &[Packet] {
        &self.packets
    }

    /// The packet that codes frame `frame`.
    pub fn frame_packet(&self, frame: usize) -> usize {
        self.display[frame] as usize
    }

    /// The frame (presentation position) that packet `packet` codes.
    pub fn packet_frame(&self, packet: usize) -> usize {
        self.rank[packet] as usize
    }

    /// Presentation time of frame `frame` in seconds, from the first frame.
    pub fn frame_time(&self, frame: usize, time_base: Rational) -> f64 {
        let pts = self.packets[self.frame_packet(frame)].pts;
        (pts - self.first_pts) as f64 * time_base.as_f64()
    }

    /// Packets where GOPs start.
    pub fn gop_starts(&self) -> impl Iterator<Item = usize> + '_ {
        self.gop_starts.iter().map(|&p| p as usize)
    }

    /// Index of the GOP holding `packet`.
    pub fn gop_of(&self, packet: usize) -> usize {
        self.gop_starts.partition_point(|&s| s as usize <= packet) - 1
    }

    /// First packet of GOP `gop`.
    pub fn gop_start(&self, gop: usize) -> usize {
        self.gop_starts[gop] as usize
    }

    /// Number of GOPs.
    pub fn gop_count(&self) -> usize {
        self.gop_starts.len()
    }

    /// A leading picture: decoded after its GOP's key frame but shown before it. In an
    /// open GOP it references the previous GOP, so decoding must start there.
    pub fn is_leading(&self, packet: usize) -> bool {
        let start = self.gop_start(self.gop_of(packet));
        self.packets[packet].pts < self.packets[start].pts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pts: i64, keyframe: bool) -> Packet {
        Packet {
            pts,
            dts: 0,
            offset: 0,
            size: 1,
            keyframe,
        }
    }

    #[test]
    fn orders_frames_and_finds_leading_pictures() {
        // Decode order: I0 P3 B1 B2 | I6(open) B4 B5 P7
        let index = PacketIndex::new(vec![
            packet(0, true),
            packet(3, false),
            packet(1, false),
            packet(2, false),
            packet(6, true),
            packet(4, false),
            packet(5, false),
            packet(7, false),
        ]);
        assert_eq!(
            (0..8).map(|f| index.frame_packet(f)).collect::<Vec<_>>(),
            [0, 2, 3, 1, 5, 6, 4, 7]
        );
        assert_eq!(index.packet_frame(1), 3);
        assert_eq!(index.gop_count(), 2);
        assert_eq!(index.gop_of(5), 1);
        assert!(index.is_leading(5) && index.is_leading(6));
        assert!(!index.is_leading(7) && !index.is_leading(2));
    }
}
