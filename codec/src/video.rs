//! A demuxed video: its source, stream info, packet index and decoder configuration.

use std::path::Path;

use crate::bitstream::nal;
use crate::demux::{self, CodecConfig};
use crate::index::PacketIndex;
use crate::source::Source;
use crate::stream::{Packet, StreamInfo};
use crate::{Error, Result};

/// An opened video stream, ready to plan and decode.
#[derive(Clone, Debug)]
pub struct Video {
    source: Source,
    info: StreamInfo,
    index: PacketIndex,
    config: CodecConfig,
}

impl Video {
    /// Opens and demuxes a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_source(Source::open(path)?, Some(path))
    }

    /// Demuxes bytes in memory; `name` (a file name) helps recognize raw streams.
    pub fn from_bytes(bytes: Vec<u8>, name: Option<&str>) -> Result<Self> {
        Self::from_source(Source::from_bytes(bytes), name.map(Path::new))
    }

    /// Demuxes a source.
    pub fn from_source(source: Source, path: Option<&Path>) -> Result<Self> {
        if source.is_empty() {
            return Err(Error::Empty);
        }
        let demuxed = demux::demux(&source, path)?;
        Ok(Self {
            index: PacketIndex::new(demuxed.packets),
            info: demuxed.info,
            config: demuxed.config,
            source,
        })
    }

    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    pub fn index(&self) -> &PacketIndex {
        &self.index
    }

    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Packets whose bytes lie (partly) past the end of the source: a truncated file.
    pub fn missing_packets(&self) -> usize {
        let len = self.source.len();
        self.index
            .packets()
            .iter()
            .filter(|p| p.offset.saturating_add(u64::from(p.size)) > len)
            .count()
    }

    fn packet(&self, index: usize) -> Result<&Packet> {
        let p = &self.index.packets()[index];
        if p.offset.saturating_add(u64::from(p.size)) > self.source.len() {
            return Err(Error::Truncated {
                index,
                offset: p.offset,
                size: p.size.into(),
                len: self.source.len(),
            });
        }
        Ok(p)
    }

    /// The packet's stored bytes.
    pub fn read_packet(&self, index: usize, out: &mut Vec<u8>) -> Result<()> {
        let p = self.packet(index)?;
        out.resize(p.size as usize, 0);
        self.source.read_exact_at(p.offset, out)
    }

    /// The packet as a decoder wants it: H.264/HEVC as Annex-B with the parameter sets
    /// in front of every key frame, VP9/AV1 as stored. `scratch` is reused between calls.
    pub fn decoder_packet(
        &self,
        index: usize,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let keyframe = self.packet(index)?.keyframe || index == 0;
        match &self.config {
            CodecConfig::LengthPrefixed {
                length_size,
                parameter_sets,
            } => {
                self.read_packet(index, scratch)?;
                let prefix = keyframe.then_some(parameter_sets.as_slice());
                nal::length_prefixed_to_annexb(scratch, *length_size, prefix, out).map_err(
                    |reason| {
                        Error::bitstream(
                            self.info.codec.name(),
                            format!("packet {index}: {reason}"),
                        )
                    },
                )
            }
            CodecConfig::AnnexB { parameter_sets } => {
                self.read_packet(index, scratch)?;
                out.clear();
                if keyframe {
                    out.extend_from_slice(parameter_sets);
                }
                out.extend_from_slice(scratch);
                Ok(())
            }
            CodecConfig::Vp9 | CodecConfig::Av1 { .. } => self.read_packet(index, out),
        }
    }
}
