//! NAL unit framing: Annex-B start codes and ISO/IEC 14496-15 length prefixes.

/// The 4-byte Annex-B start code reel writes in front of every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Iterates the NAL units of an Annex-B byte stream (without their start codes).
pub fn annexb_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start_code(data, 0).map(|(_, end)| end);
    std::iter::from_fn(move || {
        let start = pos?;
        match find_start_code(data, start) {
            Some((next_start, next_end)) => {
                pos = Some(next_end);
                Some(trim_trailing_zeros(&data[start..next_start]))
            }
            None => {
                pos = None;
                Some(trim_trailing_zeros(&data[start..]))
            }
        }
    })
    .filter(|nal| !nal.is_empty())
}

/// Finds the next `00 00 01` at or after `from`; returns (start of the code, first byte after it).
pub fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        // Skip ahead quickly: a start code needs data[i + 2] == 1 and two zeros before it.
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i + 2] == 1 && data[i] == 0 && data[i + 1] == 0 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

/// Iterates length-prefixed NAL units (MP4/Matroska samples). Stops at the first
/// malformed length and reports it through the returned `Err`.
pub fn length_prefixed_units(
    data: &[u8],
    length_size: usize,
) -> impl Iterator<Item = Result<&[u8], String>> {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= data.len() {
            return None;
        }
        if pos + length_size > data.len() {
            failed = true;
            return Some(Err(format!(
                "NAL length field at byte {pos} runs past the sample ({} bytes)",
                data.len()
            )));
        }
        let len = data[pos..pos + length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let start = pos + length_size;
        if len > data.len() - start {
            failed = true;
            return Some(Err(format!(
                "NAL of {len} bytes at byte {start} runs past the sample ({} bytes)",
                data.len()
            )));
        }
        pos = start + len;
        Some(Ok(&data[start..start + len]))
    })
}

/// Rewrites a length-prefixed sample as Annex-B into `out`, optionally preceded by
/// `prefix` (parameter sets, already in Annex-B form).
pub fn length_prefixed_to_annexb(
    sample: &[u8],
    length_size: usize,
    prefix: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    out.reserve(sample.len() + prefix.map_or(0, <[u8]>::len) + 16);
    if let Some(prefix) = prefix {
        out.extend_from_slice(prefix);
    }
    for nal in length_prefixed_units(sample, length_size) {
        let nal = nal?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(())
}

/// Joins NAL units into one Annex-B buffer.
pub fn join_annexb<'a>(units: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in units {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_annexb_with_3_and_4_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 0,
        ];
        let units: Vec<&[u8]> = annexb_units(&data).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
    }

    #[test]
    fn converts_length_prefixed_samples() {
        let sample = [0, 0, 0, 2, 0x65, 9, 0, 0, 0, 1, 0x06];
        let mut out = Vec::new();
        length_prefixed_to_annexb(&sample, 4, Some(&[0, 0, 0, 1, 0x67]), &mut out).unwrap();
        assert_eq!(
            out,
            [0, 0, 0, 1, 0x67, 0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x06]
        );
    }

    #[test]
    fn rejects_lengths_past_the_sample() {
        let mut out = Vec::new();
        let err = length_prefixed_to_annexb(&[0, 0, 0, 9, 1, 2], 4, None, &mut out).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        assert!(length_prefixed_to_annexb(&[0, 0], 4, None, &mut out).is_err());
    }
}
