//! Deterministic, bounded mutation testing of the demuxers.
//!
//! Every fixture in `tests/data/video` is mutated many times (bit flips, random
//! overwrites, inserted/deleted/duplicated runs, truncation, zeroed ranges, huge values
//! written into box sizes, table counts, EBML sizes and NAL headers, swapped box types
//! and element ids) and then opened, indexed, read packet by packet and planned (by
//! `reel_codec::robustness::exercise`, which the fuzz targets in `fuzz/` run too). Bad
//! input must give a typed error: a panic, a case that allocates more than
//! [`SOFT_LIMIT`] bytes at its peak, or a case slower than [`SLOW_CASE`] fails the test,
//! which then lists every failing case with its fixture and seed.
//!
//! A second test runs hand-made inputs: a specific extreme value in a specific field
//! (Exp-Golomb fields of 2^32-2, 64-bit times and offsets near the limits, a `trun`
//! claiming millions of samples, absurd sizes), which random mutation rarely hits.
//!
//! Reproduce one case (prints the mutations and lets the panic through, so
//! `RUST_BACKTRACE=1` gives the backtrace):
//!
//! ```text
//! REEL_MUTATION_CASE=h264_frag.mp4:0x0123456789abcdef \
//!     cargo test -p reel-codec --test mutation mutated -- --nocapture
//! ```
//!
//! Other knobs: `REEL_MUTATION_CASES` (cases per fixture, default 200),
//! `REEL_MUTATION_FIXTURE` (only fixtures whose name contains this),
//! `REEL_MUTATION_DUMP` (a folder: each failing input is written there, for the
//! fuzz targets in `fuzz/`).
//!
//! If the process aborts with "memory allocation of N bytes failed", a case went over
//! the hard limit ([`HARD_LIMIT`]); the line printed just before names it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use reel_codec::robustness::{exercise, Limits, Outcome};
use reel_codec::{Error, Video};

/// Default number of mutated inputs per fixture (27 fixtures: about 5400 cases).
const CASES_PER_FIXTURE: usize = 200;
/// Most bytes a single case may have allocated at once (on top of its input).
const SOFT_LIMIT: isize = 64 << 20;
/// Allocations past this are refused while a case runs (the process aborts, after
/// printing the case): keeps a runaway allocation from taking the CI machine down.
const HARD_LIMIT: isize = 1 << 30;
/// A case slower than this (debug build) is reported: bad input must fail fast.
const SLOW_CASE: Duration = Duration::from_secs(10);
/// Packets read through `decoder_packet` per opened case.
const MAX_PACKETS_READ: usize = 64;

// ---------------------------------------------------------------------------------
// Allocation accounting: a per-thread count of live bytes and its peak.

struct Tracking;

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Live bytes when the current case started; `None` outside cases.
    static BASE: Cell<Option<isize>> = const { Cell::new(None) };
    /// The running case, printed if it hits the hard limit.
    static CURRENT: RefCell<String> = const { RefCell::new(String::new()) };
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Accounts `n` more bytes; false refuses the allocation (hard limit).
fn charge(n: usize) -> bool {
    let n = n as isize;
    LIVE.try_with(|live| {
        let now = live.get() + n;
        if let Some(base) = BASE.get() {
            if now - base > HARD_LIMIT {
                report_hard_limit(n);
                return false;
            }
        }
        live.set(now);
        PEAK.set(PEAK.get().max(now));
        true
    })
    .unwrap_or(true)
}

fn uncharge(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - n as isize));
}

/// Charges `size` bytes and allocates them with `alloc`: null if over the hard limit,
/// refunded if `alloc` fails.
fn charged(size: usize, alloc: impl FnOnce() -> *mut u8) -> *mut u8 {
    if !charge(size) {
        return std::ptr::null_mut();
    }
    let p = alloc();
    if p.is_null() {
        uncharge(size);
    }
    p
}

/// Writes straight to fd 2: no allocation on this path.
fn report_hard_limit(request: isize) {
    // SAFETY: fd 2 (stderr) stays open for the whole process; ManuallyDrop keeps this
    // File from closing it.
    let mut stderr = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = stderr.write_all(b"\nmutation test: allocation over the hard limit (");
    let _ = stderr.write_all(itoa(request).as_slice());
    let _ = stderr.write_all(b" more bytes asked for) in case ");
    let _ = CURRENT.try_with(|c| {
        if let Ok(c) = c.try_borrow() {
            let _ = stderr.write_all(c.as_bytes());
        }
    });
    let _ = stderr.write_all(b"\n");
}

/// Decimal digits without allocating.
fn itoa(mut v: isize) -> ArrayBuf {
    let mut buf = ArrayBuf([0; 24], 0);
    let mut digits = [0u8; 24];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf.0[i] = digits[n - 1 - i];
    }
    buf.1 = n;
    buf
}

struct ArrayBuf([u8; 24], usize);

impl ArrayBuf {
    fn as_slice(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (or
// returns null, which `GlobalAlloc` allows, to refuse an allocation); the accounting
// around it only touches thread-locals and never allocates or unwinds.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `alloc` contract (non-zero size) passed on as is.
        charged(layout.size(), || unsafe { System.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `alloc_zeroed` contract (non-zero size) passed on as is.
        charged(layout.size(), || unsafe { System.alloc_zeroed(layout) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        uncharge(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            if !charge(new_size - old) {
                return std::ptr::null_mut();
            }
        } else {
            uncharge(old - new_size);
        }
        // SAFETY: `ptr` came from `System` through this allocator with `layout`, and
        // the caller's `realloc` contract on `new_size` passed on as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                uncharge(new_size - old);
            } else {
                charge(old - new_size);
            }
        }
        p
    }
}

// ---------------------------------------------------------------------------------
// A tiny deterministic PRNG.

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn case_seed(fixture: &str, case: usize) -> u64 {
    let mut r = Rng(fnv1a(fixture) ^ (case as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    r.next()
}

// ---------------------------------------------------------------------------------
// Where the structure is: positions worth aiming at in each fixture.

#[derive(Default)]
struct Hotspots {
    /// 4-byte fields: box sizes, table counts, version/flags, NAL length prefixes.
    words: Vec<usize>,
    /// Single bytes: configuration records, parameter sets, block headers.
    bytes: Vec<usize>,
    /// MP4 box types (4 bytes).
    fourccs: Vec<usize>,
    /// Matroska element sizes: (position, vint length).
    vints: Vec<(usize, usize)>,
    /// Matroska element ids: (position, length).
    ids: Vec<(usize, usize)>,
    /// 8-byte fields: 64-bit times and offsets (tfdt, tfhd, co64, elst, mdhd).
    wide: Vec<usize>,
    /// Payloads of MP4 full boxes (version byte, 24-bit flags).
    full_boxes: Vec<usize>,
    /// Bytes inside H.264/HEVC parameter sets (and avcC/hvcC), where Exp-Golomb
    /// fields are.
    golomb: Vec<usize>,
    /// Matroska unsigned-integer leaf elements that can be widened to 8 bytes.
    uints: Vec<MkvLeaf>,
}

/// A Matroska leaf element and the sized ancestors to fix when it grows.
#[derive(Clone)]
struct MkvLeaf {
    /// Position of its size vint and that vint's length.
    size_at: (usize, usize),
    payload: usize,
    len: usize,
    /// (size position, size length, size value) of every ancestor with a known size.
    ancestors: Vec<(usize, usize, u64)>,
}

impl Hotspots {
    fn find(name: &str, data: &[u8]) -> Self {
        let mut hot = Hotspots::default();
        if data.len() >= 8 && is_mp4_type(&data[4..8]) {
            mp4_boxes(data, 0, data.len(), 0, &mut hot);
        } else if data.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
            mkv_elements(data, 0, data.len(), &mut Vec::new(), &mut hot);
        } else {
            annexb_units(data, &mut hot);
        }
        // The first bytes of packets: NAL length prefixes, VP9/AV1 frame headers. (A
        // fixture that fails to open, or panics, is the other tests' business.)
        let opened = panic::catch_unwind(|| Video::from_bytes(data.to_vec(), Some(name)));
        if let Ok(Ok(video)) = opened {
            for p in video.index().packets().iter().take(MAX_PACKETS_READ) {
                let at = p.offset as usize;
                if at + 4 <= data.len() {
                    hot.words.push(at);
                    hot.bytes.extend(at..(at + 8).min(data.len()));
                }
            }
        }
        hot
    }
}

fn is_mp4_type(t: &[u8]) -> bool {
    matches!(
        t,
        b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide" | b"styp" | b"moof" | b"sidx"
    )
}

fn be32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
}

fn mp4_boxes(data: &[u8], start: usize, end: usize, depth: usize, hot: &mut Hotspots) {
    let mut pos = start;
    while pos + 8 <= end && depth < 12 {
        let size32 = be32(data, pos) as usize;
        let kind: [u8; 4] = data[pos + 4..pos + 8].try_into().unwrap();
        let (header, size) = match size32 {
            0 => (8, end - pos),
            1 if pos + 16 <= end => {
                let large = u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap());
                (16, usize::try_from(large).unwrap_or(usize::MAX))
            }
            s => (8, s),
        };
        if size < header || size > end - pos {
            break;
        }
        hot.words.push(pos);
        hot.fourccs.push(pos + 4);
        if header == 16 {
            hot.words.extend([pos + 8, pos + 12]);
        }
        let payload = pos + header;
        let box_end = pos + size;
        let words = |hot: &mut Hotspots, from: usize, n: usize| {
            for i in 0..n {
                if from + 4 * i + 4 <= box_end {
                    hot.words.push(from + 4 * i);
                }
            }
        };
        match &kind {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"mvex" | b"moof"
            | b"traf" | b"dinf" | b"mfra" => mp4_boxes(data, payload, box_end, depth + 1, hot),
            b"stsd" => {
                words(hot, payload, 2);
                mp4_boxes(data, payload + 8, box_end, depth + 1, hot);
            }
            b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"vp09" | b"av01" | b"mp4a" => {
                // Visual sample entry: width and height at +24, children at +78.
                hot.bytes
                    .extend((payload + 24..payload + 28).filter(|&p| p < box_end));
                words(hot, payload + 24, 1);
                mp4_boxes(data, payload + 78, box_end, depth + 1, hot);
            }
            b"stts" | b"ctts" | b"stss" | b"stsz" | b"stz2" | b"stco" | b"co64" | b"stsc"
            | b"elst" | b"trun" | b"tfhd" | b"tfdt" | b"mdhd" | b"tkhd" | b"trex" | b"hdlr"
            | b"mvhd" | b"sidx" | b"mehd" | b"mfhd" => {
                words(hot, payload, 8);
                hot.full_boxes.push(payload);
                if payload + 4 <= box_end {
                    let version = data[payload];
                    let flags = be32(data, payload) & 0xff_ffff;
                    let mut wide = |at: usize| {
                        if at + 8 <= box_end {
                            hot.wide.push(at);
                        }
                    };
                    match &kind {
                        b"tfdt" | b"mdhd" | b"mvhd" if version == 1 => wide(payload + 4),
                        b"tfhd" if flags & 1 != 0 => wide(payload + 8),
                        b"co64" => (0..16).for_each(|i| wide(payload + 8 + 8 * i)),
                        b"elst" if version == 1 => (0..2).for_each(|i| wide(payload + 8 + 8 * i)),
                        _ => {}
                    }
                }
                // And a few entries further into the table.
                let mut at = payload + 32;
                while at + 4 <= box_end && at < payload + 32 + 64 * 4 {
                    hot.words.push(at);
                    at += 28;
                }
            }
            b"avcC" | b"hvcC" | b"av1C" | b"vpcC" | b"colr" | b"pasp" => {
                hot.bytes.extend(payload..box_end.min(payload + 48));
                if &kind == b"avcC" || &kind == b"hvcC" {
                    hot.golomb.extend(payload..box_end.min(payload + 96));
                }
                words(hot, payload, 4);
            }
            _ => {}
        }
        pos = box_end;
    }
}

fn vint(data: &[u8]) -> Option<(u64, usize)> {
    let first = *data.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || data.len() < len {
        return None;
    }
    let mut v = u64::from(first) & ((1u64 << (8 - len)) - 1);
    for &b in &data[1..len] {
        v = (v << 8) | u64::from(b);
    }
    Some((v, len))
}

/// Walks Matroska elements; `ancestors` holds the sized masters around `start`.
fn mkv_elements(
    data: &[u8],
    start: usize,
    end: usize,
    ancestors: &mut Vec<(usize, usize, u64)>,
    hot: &mut Hotspots,
) {
    const MASTERS: [u32; 9] = [
        0x1A45_DFA3, // EBML
        0x1853_8067, // Segment
        0x1549_A966, // Info
        0x1654_AE6B, // Tracks
        0xAE,        // TrackEntry
        0xE0,        // Video
        0x55B0,      // Colour
        0x1F43_B675, // Cluster
        0xA0,        // BlockGroup
    ];
    /// Unsigned-integer elements reel reads: Timecode, DefaultDuration, TimecodeScale,
    /// PixelWidth/Height, TrackNumber, TrackType, colour fields.
    const UINTS: [u32; 10] = [
        0xE7, 0x23_E383, 0x2A_D7B1, 0xB0, 0xBA, 0xD7, 0x83, 0x55B1, 0x55B9, 0x55BB,
    ];
    let mut pos = start;
    let mut blocks = 0;
    while pos < end && ancestors.len() < 8 {
        let Some((_, id_len)) = vint(&data[pos..end]) else {
            break;
        };
        if id_len > 4 {
            break;
        }
        let id = data[pos..pos + id_len]
            .iter()
            .fold(0u32, |a, &b| (a << 8) | u32::from(b));
        let Some((size, size_len)) = vint(&data[pos + id_len..end]) else {
            break;
        };
        hot.ids.push((pos, id_len));
        hot.vints.push((pos + id_len, size_len));
        let payload = pos + id_len + size_len;
        let unknown = size == (1u64 << (7 * size_len)) - 1;
        let elem_end = if unknown {
            end
        } else {
            match usize::try_from(size)
                .ok()
                .and_then(|s| payload.checked_add(s))
            {
                Some(e) if e <= end => e,
                _ => break,
            }
        };
        if MASTERS.contains(&id) {
            let sized = !unknown;
            if sized {
                ancestors.push((pos + id_len, size_len, size));
            }
            mkv_elements(data, payload, elem_end, ancestors, hot);
            if sized {
                ancestors.pop();
            }
        } else if id == 0xA3 || id == 0xA1 {
            // (Simple)Block header: track number, timecode, flags. Every block would
            // drown the rest; take the first few per parent.
            if blocks < 24 {
                hot.bytes
                    .extend((payload..payload + 4).filter(|&p| p < elem_end));
                hot.words.push(payload);
            }
            blocks += 1;
        } else {
            if !ancestors.is_empty() && id != 0xEC && id != 0xBF {
                // Leaf elements of headers: track number/type, codec id, sizes, CodecPrivate.
                hot.bytes.extend(payload..elem_end.min(payload + 24));
            }
            if id == 0x63A2 {
                // CodecPrivate: avcC/hvcC with parameter sets.
                hot.golomb.extend(payload..elem_end.min(payload + 96));
            }
            if UINTS.contains(&id) && !unknown && hot.uints.len() < 64 {
                hot.uints.push(MkvLeaf {
                    size_at: (pos + id_len, size_len),
                    payload,
                    len: elem_end - payload,
                    ancestors: ancestors.clone(),
                });
            }
        }
        pos = elem_end;
    }
}

fn annexb_units(data: &[u8], hot: &mut Hotspots) {
    let mut i = 0;
    let mut units = 0;
    while i + 3 <= data.len() && units < 400 {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let nal = i + 3;
            hot.words.push(i.saturating_sub(1));
            // Header bytes, and for parameter sets and slices their first fields.
            hot.bytes.extend(nal..(nal + 24).min(data.len()));
            if let Some(&h) = data.get(nal) {
                let parameter_set = matches!(h & 0x1f, 7 | 8) // H.264 SPS/PPS
                    || (h & 0x81 == 0 && matches!((h >> 1) & 0x3f, 32..=34)); // HEVC
                let n = if parameter_set { 96 } else { 8 };
                hot.golomb.extend(nal..(nal + n).min(data.len()));
            }
            units += 1;
            i = nal;
        } else {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------------
// Mutations.

const HUGE32: [u32; 14] = [
    0xFFFF_FFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0x0000_0001,
    0x0000_0000,
    0xFFFF_FFFE,
    0x0000_0008,
    0x0000_0007,
    0x0000_FFFF,
    0x0001_0000,
    0x4000_0000,
    0x00FF_FFFF,
    0x0100_0000,
    0x8000_0001,
];

const HUGE64: [u64; 6] = [
    u64::MAX,
    i64::MAX as u64,
    1 << 63,
    1 << 32,
    u64::MAX - 7,
    (1 << 40) + 3,
];

const INTERESTING: [u8; 9] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x03, 0x1F, 0x20, 0xC1];

const FOURCCS: [&[u8; 4]; 38] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"stsz", b"stz2", b"stco", b"co64",
    b"stsc", b"stts", b"ctts", b"stss", b"avc1", b"avc3", b"hvc1", b"hev1", b"vp09", b"av01",
    b"avcC", b"hvcC", b"av1C", b"vpcC", b"moof", b"traf", b"tfhd", b"trun", b"tfdt", b"mvex",
    b"trex", b"edts", b"elst", b"free", b"mdat", b"vide", b"colr", b"tkhd",
];

/// Same-length swaps for Matroska ids.
const IDS1: [u8; 14] = [
    0xA3, 0xA0, 0xA1, 0xFB, 0xE7, 0xAE, 0xD7, 0x83, 0x86, 0xE0, 0xB0, 0xBA, 0xEC, 0xBF,
];
const IDS2: [[u8; 2]; 6] = [
    [0x42, 0x82],
    [0x44, 0x89],
    [0x63, 0xA2],
    [0x6D, 0x80],
    [0x55, 0xB0],
    [0x55, 0xB9],
];
const IDS4: [[u8; 4]; 5] = [
    [0x1F, 0x43, 0xB6, 0x75],
    [0x16, 0x54, 0xAE, 0x6B],
    [0x15, 0x49, 0xA9, 0x66],
    [0x18, 0x53, 0x80, 0x67],
    [0x1C, 0x53, 0xBB, 0x6B],
];

/// Tokens inserted or written anywhere: container magic and start codes.
const TOKENS: [&[u8]; 10] = [
    &[0, 0, 0, 1],
    &[0, 0, 1],
    &[0, 0, 0, 1, 0x67],
    &[0, 0, 0, 1, 0x40, 0x01],
    &[0x1A, 0x45, 0xDF, 0xA3],
    &[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ],
    b"\0\0\0\x08moov",
    b"\0\0\0\x10ftypisom\0\0\0\0",
    b"\0\0\0\x01mdat\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF",
    &[0x7F, 0xFF, 0xFF, 0xFF],
];

fn pick_pos(rng: &mut Rng, hot: &[usize], len: usize) -> usize {
    debug_assert!(len > 0);
    if !hot.is_empty() && rng.below(3) != 0 {
        (*rng.pick(hot)).min(len - 1)
    } else {
        rng.below(len)
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    let end = (at + bytes.len()).min(buf.len());
    if at < end {
        buf[at..end].copy_from_slice(&bytes[..end - at]);
    }
}

/// Applies one random mutation; returns its description.
fn mutate_once(buf: &mut Vec<u8>, hot: &Hotspots, rng: &mut Rng) -> String {
    let len = buf.len();
    if len == 0 {
        let bytes = if rng.below(2) == 0 {
            rng.pick(&TOKENS).to_vec()
        } else {
            let n = rng.range(1, 64);
            rng.bytes(n)
        };
        buf.extend_from_slice(&bytes);
        return format!(
            "insert {} bytes {:02x?} into the empty input",
            bytes.len(),
            bytes
        );
    }
    // Weighted choice of the mutation kind.
    const WEIGHTS: [usize; 17] = [3, 3, 1, 1, 1, 1, 4, 1, 2, 3, 2, 2, 2, 1, 3, 2, 2];
    let total: usize = WEIGHTS.iter().sum();
    let mut roll = rng.below(total);
    let mut kind = 0;
    while roll >= WEIGHTS[kind] {
        roll -= WEIGHTS[kind];
        kind += 1;
    }
    match kind {
        0 => {
            let at = pick_pos(rng, &hot.bytes, len);
            let mask = 1u8 << rng.below(8)
                | if rng.below(4) == 0 {
                    1 << rng.below(8)
                } else {
                    0
                };
            buf[at] ^= mask;
            format!("flip bits {mask:#04x} at {at}")
        }
        1 => {
            let at = rng.below(len);
            let n = rng.range(1, 16).min(len - at);
            let bytes = rng.bytes(n);
            put(buf, at, &bytes);
            format!("overwrite {n} random bytes at {at}")
        }
        2 => {
            let at = rng.range(0, len);
            let n = rng.range(1, 64);
            let bytes = if rng.below(2) == 0 {
                rng.bytes(n)
            } else {
                vec![*rng.pick(&INTERESTING); n]
            };
            buf.splice(at..at, bytes);
            format!("insert {n} bytes at {at}")
        }
        3 => {
            let at = rng.below(len);
            let n = rng.range(1, 256).min(len - at);
            buf.drain(at..at + n);
            format!("delete {n} bytes at {at}")
        }
        4 => {
            let at = rng.below(len);
            buf.truncate(at);
            format!("truncate to {at} bytes")
        }
        5 => {
            let from = rng.below(len);
            let n = rng.range(1, 4096).min(len - from);
            let to = rng.range(0, len);
            let chunk = buf[from..from + n].to_vec();
            buf.splice(to..to, chunk);
            format!("duplicate {n} bytes from {from} to {to}")
        }
        6 => {
            let at = if !hot.words.is_empty() && rng.below(4) != 0 {
                *rng.pick(&hot.words)
            } else {
                rng.below(len) & !3
            };
            let value = match rng.below(6) {
                0 => len as u32,
                1 => (len as u32).wrapping_add(rng.range(1, 16) as u32),
                _ => *rng.pick(&HUGE32),
            };
            put(buf, at, &value.to_be_bytes());
            format!("write u32 {value:#010x} at {at}")
        }
        7 => {
            let at = rng.below(len);
            let n = rng.range(1, 64).min(len - at);
            buf[at..at + n].fill(0);
            format!("zero {n} bytes at {at}")
        }
        8 => {
            let at = if !hot.wide.is_empty() && rng.below(2) == 0 {
                *rng.pick(&hot.wide)
            } else if !hot.words.is_empty() && rng.below(2) == 0 {
                *rng.pick(&hot.words)
            } else {
                rng.below(len) & !3
            };
            let value = *rng.pick(&HUGE64);
            put(buf, at, &value.to_be_bytes());
            format!("write u64 {value:#018x} at {at}")
        }
        9 => {
            let at = pick_pos(rng, &hot.bytes, len);
            let value = *rng.pick(&INTERESTING);
            buf[at] = value;
            format!("set byte {at} to {value:#04x}")
        }
        10 => {
            // Matroska element size: same length, a different (often huge) value.
            let Some(&(at, n)) = (!hot.vints.is_empty()).then(|| rng.pick(&hot.vints)) else {
                return mutate_once(buf, hot, rng);
            };
            if at + n > len {
                return mutate_once(buf, hot, rng);
            }
            let max = (1u64 << (7 * n)) - 1; // all ones: "unknown size"
            let old = vint(&buf[at..]).map_or(0, |v| v.0);
            let value = match rng.below(8) {
                0 => max,
                1 => max - 1,
                2 => 0,
                3 => 1,
                4 => (len as u64).min(max - 1),
                5 => old.saturating_mul(2).min(max - 1),
                6 => old.saturating_sub(rng.range(1, 8) as u64),
                _ => (old + rng.range(1, 8) as u64).min(max - 1),
            };
            let mut bytes = value.to_be_bytes()[8 - n..].to_vec();
            bytes[0] |= 0x80 >> (n - 1);
            put(buf, at, &bytes);
            format!("set element size ({n}-byte vint) at {at} to {value:#x}")
        }
        11 => {
            // Box type confusion (MP4) or element id confusion (Matroska).
            if !hot.fourccs.is_empty() {
                let at = *rng.pick(&hot.fourccs);
                let t = rng.pick(&FOURCCS);
                put(buf, at, &t[..]);
                format!(
                    "set box type at {at} to '{}'",
                    String::from_utf8_lossy(&t[..])
                )
            } else if !hot.ids.is_empty() {
                let &(at, n) = rng.pick(&hot.ids);
                let id: Vec<u8> = match n {
                    1 => vec![*rng.pick(&IDS1)],
                    2 => rng.pick(&IDS2).to_vec(),
                    4 => rng.pick(&IDS4).to_vec(),
                    _ => return mutate_once(buf, hot, rng),
                };
                put(buf, at, &id);
                format!("set element id at {at} to {id:02x?}")
            } else {
                // Annex-B: a random NAL header.
                let at = pick_pos(rng, &hot.bytes, len);
                let value = rng.next() as u8 & 0x7f;
                buf[at] = value;
                format!("set byte {at} to {value:#04x}")
            }
        }
        12 => {
            let token = rng.pick(&TOKENS);
            let at = pick_pos(rng, &hot.words, len);
            if rng.below(2) == 0 {
                buf.splice(at..at, token.iter().copied());
                format!("insert token {token:02x?} at {at}")
            } else {
                put(buf, at, token);
                format!("write token {token:02x?} at {at}")
            }
        }
        13 => {
            // Swap two runs of equal length.
            let n = rng.range(1, 64).min(len / 2).max(1);
            let a = rng.below(len - n + 1);
            let b = rng.below(len - n + 1);
            let first = buf[a..a + n].to_vec();
            let second = buf[b..b + n].to_vec();
            put(buf, a, &second);
            put(buf, b, &first);
            format!("swap {n} bytes at {a} and {b}")
        }
        14 => {
            // An extreme Exp-Golomb code: 2 or 3 zero bytes, a 1 bit at a random
            // position of the next byte, then ones. Where a ue(v) starts at the right
            // bit, it decodes to (nearly) 2^32 - 2.
            let at = pick_pos(rng, &hot.golomb, len);
            let zeros = rng.range(2, 3);
            let mut bytes = vec![0u8; zeros];
            bytes.push(1 << rng.below(8));
            bytes.extend([0xFF; 4]);
            put(buf, at, &bytes);
            format!("write Exp-Golomb run {bytes:02x?} at {at}")
        }
        15 => {
            // MP4 full box: another version, or flags that select other fields.
            if hot.full_boxes.is_empty() {
                return mutate_once(buf, hot, rng);
            }
            let at = *rng.pick(&hot.full_boxes);
            if at + 4 > len {
                return mutate_once(buf, hot, rng);
            }
            const FLAGS: [u32; 10] = [
                0, 0x01, 0x05, 0x0F01, 0x0205, 0x0A05, 0x02_0000, 0x02_0001, 0x3B, 0xFF_FFFF,
            ];
            let (what, value) = if rng.below(2) == 0 {
                let v = *rng.pick(&[0u8, 1, 2, 255]);
                buf[at] = v;
                ("version", u32::from(v))
            } else {
                let f = if rng.below(4) == 0 {
                    rng.next() as u32 & 0xff_ffff
                } else {
                    *rng.pick(&FLAGS)
                };
                put(buf, at + 1, &f.to_be_bytes()[1..]);
                ("flags", f)
            };
            format!("set full box {what} at {at} to {value:#x}")
        }
        16 => {
            // Matroska: widen an unsigned element to 8 bytes holding a huge value,
            // growing the sizes of its ancestors to match.
            if hot.uints.is_empty() {
                return mutate_once(buf, hot, rng);
            }
            let leaf = rng.pick(&hot.uints).clone();
            if leaf.payload + leaf.len > len {
                return mutate_once(buf, hot, rng);
            }
            let value = match rng.below(4) {
                0 => (i64::MAX as u64) - rng.range(0, 1 << 16) as u64,
                1 => 1 << rng.range(32, 63),
                _ => *rng.pick(&HUGE64),
            };
            let delta = 8 - leaf.len as i64;
            let vint_bytes = |value: u64, n: usize| {
                let mut b = value.to_be_bytes()[8 - n..].to_vec();
                b[0] |= 0x80 >> (n - 1);
                b
            };
            // Ancestors first (they come before the leaf, so positions hold).
            for &(at, n, size) in &leaf.ancestors {
                let new = size as i64 + delta;
                if new < 0 || new as u64 >= (1u64 << (7 * n)) - 1 {
                    return format!("(widen skipped: ancestor size at {at} does not fit)");
                }
                put(buf, at, &vint_bytes(new as u64, n));
            }
            put(buf, leaf.size_at.0, &vint_bytes(8, leaf.size_at.1));
            buf.splice(leaf.payload..leaf.payload + leaf.len, value.to_be_bytes());
            format!(
                "widen element at {} to 8 bytes = {value:#x}",
                leaf.size_at.0
            )
        }
        _ => unreachable!(),
    }
}

/// The mutated input for a case: bytes, whether the file name is given, and what
/// was done.
fn mutate(data: &[u8], hot: &Hotspots, seed: u64) -> (Vec<u8>, bool, Vec<String>) {
    let mut rng = Rng(seed);
    let count = match rng.below(10) {
        0..=4 => 1,
        5..=7 => 2,
        _ => rng.range(3, 6),
    };
    let with_name = rng.below(8) != 0;
    let mut buf = data.to_vec();
    let steps = (0..count)
        .map(|_| mutate_once(&mut buf, hot, &mut rng))
        .collect();
    (buf, with_name, steps)
}

// ---------------------------------------------------------------------------------
// Running a case.

/// How far each case walks an opened input: deeper into the index than the fuzz
/// targets go, fewer packets read.
const LIMITS: Limits = Limits {
    frames: 1 << 20,
    packets: MAX_PACKETS_READ,
};

/// The error's variant name ("Malformed", "Truncated", ...).
fn error_kind(e: &Error) -> String {
    format!("{e:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

struct Failure {
    fixture: String,
    seed: u64,
    steps: Vec<String>,
    what: String,
}

struct Ran {
    outcome: Option<Outcome>,
    failure: Option<String>,
    elapsed: Duration,
    peak: isize,
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.get() {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "(non-string panic payload)".to_string()
                };
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                LAST_PANIC.with_borrow_mut(|p| *p = Some(format!("panic at {at}: {msg}")));
            } else {
                default(info);
            }
        }));
    });
}

fn run(fixture: &str, bytes: Vec<u8>, with_name: bool, quiet: bool) -> Ran {
    let name = with_name.then_some(fixture);
    LAST_PANIC.with_borrow_mut(|p| *p = None);
    QUIET.set(quiet);
    let base = LIVE.get();
    PEAK.set(base);
    BASE.set(Some(base));
    let start = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| exercise(bytes, name, LIMITS)));
    let elapsed = start.elapsed();
    BASE.set(None);
    QUIET.set(false);
    let peak = PEAK.get() - base;
    let mut failure = None;
    let outcome = match result {
        Ok(o) => Some(o),
        Err(_) => {
            failure = Some(
                LAST_PANIC
                    .with_borrow_mut(Option::take)
                    .unwrap_or_else(|| "panic".into()),
            );
            None
        }
    };
    if failure.is_none() && peak > SOFT_LIMIT {
        failure = Some(format!(
            "allocated {:.1} MiB at its peak (limit {} MiB)",
            peak as f64 / (1 << 20) as f64,
            SOFT_LIMIT >> 20
        ));
    }
    if failure.is_none() && elapsed > SLOW_CASE {
        failure = Some(format!("took {elapsed:.1?} (limit {SLOW_CASE:?})"));
    }
    Ran {
        outcome,
        failure,
        elapsed,
        peak,
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(common::video_dir())
        .expect("tests/data/video")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            p.is_file()
                && !matches!(name.as_ref(), "README.md" | "expected.json")
                && !name.starts_with("make_")
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("fixture"))
        })
        .collect();
    out.sort();
    out
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("bad seed '{s}'"))
}

/// Replays one case verbosely: REEL_MUTATION_CASE=<fixture>:<seed>.
fn replay(spec: &str) {
    let (fixture, seed) = spec
        .rsplit_once(':')
        .expect("REEL_MUTATION_CASE=<fixture>:<seed>");
    let seed = parse_seed(seed);
    let data = fixture_bytes(fixture);
    let hot = Hotspots::find(fixture, &data);
    let (bytes, with_name, steps) = mutate(&data, &hot, seed);
    eprintln!("{fixture} seed {seed:#018x} (name hint: {with_name}):");
    for s in &steps {
        eprintln!("  - {s}");
    }
    eprintln!("  input: {} bytes", bytes.len());
    dump(fixture, seed, &bytes);
    install_hook();
    let ran = run(fixture, bytes, with_name, false);
    match &ran.outcome {
        Some(Outcome::Opened { planned }) => eprintln!("  opened, planned: {planned}"),
        Some(Outcome::Rejected(e)) => eprintln!("  error: {} ({e})", error_kind(e)),
        None => {}
    }
    eprintln!(
        "  {:.1?}, peak {:.2} MiB",
        ran.elapsed,
        ran.peak as f64 / (1 << 20) as f64
    );
    if let Some(f) = ran.failure {
        panic!("{fixture} seed {seed:#018x}: {f}");
    }
}

fn dump(fixture: &str, seed: u64, bytes: &[u8]) {
    if let Ok(dir) = std::env::var("REEL_MUTATION_DUMP") {
        let _ = std::fs::create_dir_all(&dir);
        let path = PathBuf::from(dir).join(format!("{fixture}-{seed:016x}"));
        let _ = std::fs::write(&path, bytes);
        eprintln!("  written to {}", path.display());
    }
}

#[test]
fn mutated_fixtures_give_typed_errors_with_bounded_memory() {
    if let Ok(spec) = std::env::var("REEL_MUTATION_CASE") {
        replay(&spec);
        return;
    }
    install_hook();
    let per_fixture = env_usize("REEL_MUTATION_CASES", CASES_PER_FIXTURE);
    let filter = std::env::var("REEL_MUTATION_FIXTURE").unwrap_or_default();
    let all = fixtures();
    assert!(all.len() >= 20, "only {} fixtures found", all.len());
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut cases, mut opened, mut planned) = (0usize, 0usize, 0usize);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut biggest = (0isize, String::new());
    for (fixture, data) in all.iter().filter(|(n, _)| n.contains(&filter)) {
        let hot = Hotspots::find(fixture, data);
        for case in 0..per_fixture {
            let seed = case_seed(fixture, case);
            let (bytes, with_name, steps) = mutate(data, &hot, seed);
            let id = format!("{fixture}:{seed:#018x}");
            CURRENT.with_borrow_mut(|c| {
                c.clear();
                c.push_str(&id);
            });
            let copy = std::env::var_os("REEL_MUTATION_DUMP").map(|_| bytes.clone());
            let ran = run(fixture, bytes, with_name, true);
            cases += 1;
            match &ran.outcome {
                Some(Outcome::Opened { planned: p }) => {
                    opened += 1;
                    planned += usize::from(*p);
                }
                Some(Outcome::Rejected(e)) => *errors.entry(error_kind(e)).or_default() += 1,
                None => {}
            }
            if ran.elapsed > slowest.0 {
                slowest = (ran.elapsed, id.clone());
            }
            if ran.peak > biggest.0 {
                biggest = (ran.peak, id.clone());
            }
            if let Some(what) = ran.failure {
                if let Some(copy) = copy {
                    dump(fixture, seed, &copy);
                }
                failures.push(Failure {
                    fixture: fixture.clone(),
                    seed,
                    steps,
                    what,
                });
            }
        }
    }
    eprintln!(
        "mutation test: {cases} cases in {:.1?}: {opened} opened ({planned} planned), errors {errors:?}",
        started.elapsed()
    );
    eprintln!(
        "  slowest case {:.1?} ({}), largest peak {:.2} MiB ({})",
        slowest.0,
        slowest.1,
        biggest.0 as f64 / (1 << 20) as f64,
        biggest.1
    );
    if !failures.is_empty() {
        let mut report = format!(
            "{} of {cases} mutated inputs failed (reproduce one with REEL_MUTATION_CASE=<fixture>:<seed>):\n",
            failures.len()
        );
        for f in &failures {
            report.push_str(&format!(
                "\n{}:{:#018x}\n  {}\n  mutations: {}\n",
                f.fixture,
                f.seed,
                f.what,
                f.steps.join("; ")
            ));
        }
        panic!("{report}");
    }
}

// ---------------------------------------------------------------------------------
// Hand-made inputs: the cases random mutation rarely reaches (a specific value in a
// specific field, or two fields at once), each a minimal edit of a fixture or a tiny
// stream built from scratch. All must give typed errors, quickly, in bounded memory.

/// Writes bits MSB first; `finish` adds the RBSP stop bit and emulation prevention.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    n: usize,
}

impl Bits {
    fn put(&mut self, value: u64, count: u32) -> &mut Self {
        for i in (0..count).rev() {
            if self.n % 8 == 0 {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            *self.bytes.last_mut().unwrap() |= bit << (7 - self.n % 8);
            self.n += 1;
        }
        self
    }

    /// Exp-Golomb ue(v), for any v < 2^32 - 1.
    fn ue(&mut self, v: u64) -> &mut Self {
        let v = v + 1;
        let len = 64 - v.leading_zeros();
        self.put(0, len - 1).put(v, len)
    }

    fn rbsp(&mut self) -> Vec<u8> {
        self.put(1, 1);
        let mut out = Vec::new();
        let mut zeros = 0;
        for &b in &self.bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }

    /// Raw bytes, no stop bit (VP9 headers).
    fn raw(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// ue(v) that decodes to 2^32 - 2, the largest value BitReader::ue returns.
const UE_MAX: u64 = (1 << 32) - 2;

fn annexb(nals: &[Vec<u8>]) -> Vec<u8> {
    nals.iter()
        .flat_map(|n| [0, 0, 0, 1].into_iter().chain(n.iter().copied()))
        .collect()
}

/// An H.264 SPS: `header` writes its first fields, then `build` the rest.
fn h264_sps(header: impl FnOnce(&mut Bits), build: impl FnOnce(&mut Bits)) -> Vec<u8> {
    let mut b = Bits::default();
    header(&mut b);
    build(&mut b);
    let mut nal = vec![0x67];
    nal.extend(b.rbsp());
    annexb(&[nal])
}

/// Baseline profile, level 3.0, seq_parameter_set_id 0; `build` writes the rest, from
/// log2_max_frame_num_minus4 on.
fn h264_baseline_sps(build: impl FnOnce(&mut Bits)) -> Vec<u8> {
    h264_sps(
        |b| {
            b.put(66, 8).put(0, 8).put(30, 8).ue(0);
        },
        build,
    )
}

/// A Baseline SPS with 4-bit frame_num and POC lsb (pic_order_cnt_type 0), one
/// reference frame and no gaps; `build` writes the rest, from pic_width_in_mbs_minus1
/// on.
fn h264_baseline_sps_from_size(build: impl FnOnce(&mut Bits)) -> Vec<u8> {
    h264_baseline_sps(|b| {
        b.ue(0).ue(0).ue(0).ue(1).put(0, 1);
        build(b);
    })
}

/// High profile, level 4.0, seq_parameter_set_id 0, 4:2:0; `build` writes the rest,
/// from bit_depth_luma_minus8 on.
fn h264_high_sps(build: impl FnOnce(&mut Bits)) -> Vec<u8> {
    h264_sps(
        |b| {
            b.put(100, 8).put(0, 8).put(40, 8).ue(0).ue(1);
        },
        build,
    )
}

fn hevc_sps(build: impl FnOnce(&mut Bits)) -> Vec<u8> {
    let mut b = Bits::default();
    b.put(0, 4).put(0, 3).put(1, 1); // vps id, max_sub_layers_minus1, nesting
    b.put(0, 3)
        .put(1, 5)
        .put(0x6000_0000, 32)
        .put(0, 48)
        .put(93, 8); // PTL
    b.ue(0).ue(1).ue(64).ue(64); // sps id, 4:2:0, 64x64
    build(&mut b);
    let mut nal = vec![0x42, 0x01];
    nal.extend(b.rbsp());
    annexb(&[nal])
}

/// A Matroska element with an 8-byte size.
fn el(id: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.push(0x01);
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

fn el_uint(id: &[u8], v: u64) -> Vec<u8> {
    el(id, &v.to_be_bytes())
}

fn vp9_key_frame() -> Vec<u8> {
    let mut b = Bits::default();
    b.put(2, 2)
        .put(0, 2)
        .put(0, 1)
        .put(0, 1)
        .put(1, 1)
        .put(0, 1); // profile 0 key frame
    b.put(0x49_83_42, 24)
        .put(2, 3)
        .put(0, 1)
        .put(63, 16)
        .put(47, 16);
    let mut f = b.raw();
    f.extend([0u8; 16]);
    f
}

/// A cluster: its timecode and its blocks as (relative timecode, payload).
type Cluster = (u64, Vec<(i16, Vec<u8>)>);

struct Mkv {
    timecode_scale: u64,
    default_duration: Option<u64>,
    size: (u64, u64),
    clusters: Vec<Cluster>,
}

impl Mkv {
    fn vp9(clusters: Vec<Cluster>) -> Self {
        Mkv {
            timecode_scale: 1_000_000,
            default_duration: Some(33_333_333),
            size: (64, 48),
            clusters,
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut out = el(&[0x1A, 0x45, 0xDF, 0xA3], &el(&[0x42, 0x82], b"webm"));
        let mut segment = el(
            &[0x15, 0x49, 0xA9, 0x66],
            &el_uint(&[0x2A, 0xD7, 0xB1], self.timecode_scale),
        );
        let video = [el_uint(&[0xB0], self.size.0), el_uint(&[0xBA], self.size.1)].concat();
        let mut entry = [
            el_uint(&[0xD7], 1),
            el_uint(&[0x83], 1),
            el(&[0x86], b"V_VP9"),
            el(&[0xE0], &video),
        ]
        .concat();
        if let Some(d) = self.default_duration {
            entry.extend(el_uint(&[0x23, 0xE3, 0x83], d));
        }
        segment.extend(el(&[0x16, 0x54, 0xAE, 0x6B], &el(&[0xAE], &entry)));
        for (timecode, blocks) in &self.clusters {
            let mut cluster = el_uint(&[0xE7], *timecode);
            for (relative, payload) in blocks {
                let mut block = vec![0x81];
                block.extend(relative.to_be_bytes());
                block.push(0x80);
                block.extend(payload);
                cluster.extend(el(&[0xA3], &block));
            }
            segment.extend(el(&[0x1F, 0x43, 0xB6, 0x75], &cluster));
        }
        out.extend(el(&[0x18, 0x53, 0x80, 0x67], &segment));
        out
    }
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(common::fixture(name)).expect("fixture")
}

/// Where children start inside a box's payload.
fn children_at(kind: &[u8]) -> usize {
    match kind {
        b"stsd" => 8,
        b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"vp09" | b"av01" => 78,
        _ => 0,
    }
}

/// Start offsets of the boxes along `path`, inside the `nth` top-level box of type
/// `path[0]`. Only 32-bit box sizes (all the fixtures have).
fn mp4_chain(data: &[u8], nth: usize, path: &[&[u8; 4]]) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut start, mut end) = (0, data.len());
    for (depth, kind) in path.iter().enumerate() {
        let mut pos = start;
        let mut skip = if depth == 0 { nth } else { 0 };
        loop {
            assert!(
                pos + 8 <= end,
                "no '{}' box",
                String::from_utf8_lossy(&kind[..])
            );
            let size = be32(data, pos) as usize;
            assert!(size >= 8 && pos + size <= end, "odd box size at {pos}");
            if data[pos + 4..pos + 8] == kind[..] {
                if skip == 0 {
                    out.push(pos);
                    start = pos + 8 + children_at(&kind[..]);
                    end = pos + size;
                    break;
                }
                skip -= 1;
            }
            pos += size;
        }
    }
    out
}

/// Payload offset of the last box on the path.
fn mp4_payload_at(data: &[u8], nth: usize, path: &[&[u8; 4]]) -> usize {
    mp4_chain(data, nth, path).last().unwrap() + 8
}

/// Replaces the last box on the path (type and payload), fixing its ancestors' sizes.
fn mp4_replace(
    data: &[u8],
    nth: usize,
    path: &[&[u8; 4]],
    kind: &[u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let chain = mp4_chain(data, nth, path);
    let last = *chain.last().unwrap();
    let old = be32(data, last) as usize;
    let delta = (payload.len() + 8) as i64 - old as i64;
    let mut out = data[..last].to_vec();
    out.extend(((payload.len() + 8) as u32).to_be_bytes());
    out.extend(kind);
    out.extend(payload);
    out.extend(&data[last + old..]);
    for &b in &chain[..chain.len() - 1] {
        let size = (i64::from(be32(&out, b)) + delta) as u32;
        out[b..b + 4].copy_from_slice(&size.to_be_bytes());
    }
    out
}

/// Offset of the first sample's composition offset field in a trun payload.
fn trun_first_cts(data: &[u8], trun: usize) -> usize {
    let flags = be32(data, trun) & 0xff_ffff;
    assert!(flags & 0x800 != 0, "trun without composition offsets");
    let mut at = trun + 8;
    at += 4 * usize::from(flags & 0x01 != 0) + 4 * usize::from(flags & 0x04 != 0);
    at + 4 * [0x100, 0x200, 0x400]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count()
}

const TRAF_TFDT: [&[u8; 4]; 3] = [b"moof", b"traf", b"tfdt"];
const TRAF_TRUN: [&[u8; 4]; 3] = [b"moof", b"traf", b"trun"];
const TRAF_TFHD: [&[u8; 4]; 3] = [b"moof", b"traf", b"tfhd"];
const STBL: [&[u8; 4]; 5] = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];

fn stbl(child: &[u8; 4]) -> Vec<&[u8; 4]> {
    let mut p = STBL.to_vec();
    p.push(child);
    p
}

/// (name, input, file-name hint).
fn crafted() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut cases = Vec::new();
    let mut add = |name, data, hint| cases.push((name, data, hint));

    // --- H.264 / HEVC parameter sets (raw Annex-B streams)
    add(
        "H.264 SPS: bit_depth_luma_minus8 = 2^32-2",
        h264_high_sps(|b| {
            b.ue(UE_MAX);
        }),
        "x.h264",
    );
    add(
        "H.264 SPS: bit_depth_chroma_minus8 = 2^32-2",
        h264_high_sps(|b| {
            b.ue(0).ue(UE_MAX);
        }),
        "x.h264",
    );
    add(
        "H.264 SPS: log2_max_pic_order_cnt_lsb_minus4 = 2^32-2",
        h264_baseline_sps(|b| {
            b.ue(0).ue(0).ue(UE_MAX);
        }),
        "x.h264",
    );
    add(
        "H.264 SPS: log2_max_frame_num_minus4 = 2^32-2",
        h264_baseline_sps(|b| {
            b.ue(UE_MAX);
        }),
        "x.h264",
    );
    add(
        "H.264 SPS: scaling list delta_scale = 2^31-1",
        h264_high_sps(|b| {
            b.ue(0).ue(0);
            b.put(0, 1).put(1, 1).put(1, 1).ue(UE_MAX - 1); // se = +(2^31 - 1)
        }),
        "x.h264",
    );
    add(
        "H.264 SPS: frame_crop_left+right overflow u32",
        h264_baseline_sps_from_size(|b| {
            b.ue(19).ue(14).put(1, 1).put(1, 1).put(1, 1);
            b.ue(UE_MAX).ue(1).ue(0).ue(0).put(0, 1);
        }),
        "x.h264",
    );
    add(
        "HEVC SPS: bit_depth_luma_minus8 = 2^32-2",
        hevc_sps(|b| {
            b.put(0, 1).ue(UE_MAX);
        }),
        "x.hevc",
    );
    add(
        "HEVC SPS: conformance window left+right overflow u32",
        hevc_sps(|b| {
            b.put(1, 1).ue(UE_MAX).ue(1).ue(0).ue(0).ue(0).ue(0);
        }),
        "x.hevc",
    );
    {
        // SPS 16384x16, PPS, one IDR slice: opens as far as the geometry check.
        let mut stream = h264_baseline_sps_from_size(|b| {
            b.ue(1023).ue(0).put(1, 1).put(1, 1).put(0, 1).put(0, 1);
        });
        let mut pps = vec![0x68];
        pps.extend(Bits::default().ue(0).ue(0).put(0, 2).rbsp());
        let mut idr = vec![0x65];
        idr.extend(
            Bits::default()
                .ue(0)
                .ue(7)
                .ue(0)
                .put(0, 4)
                .ue(0)
                .put(0, 4)
                .rbsp(),
        );
        stream.extend(annexb(&[pps, idr]));
        add(
            "H.264: 16384x16 picture (aspect ratio 1024)",
            stream,
            "x.h264",
        );
    }

    // --- Matroska
    add(
        "Matroska VP9: first key block has an empty payload",
        Mkv::vp9(vec![(0, vec![(0, Vec::new()), (33, vp9_key_frame())])]).build(),
        "x.webm",
    );
    add(
        "Matroska: cluster timecode i64::MAX - 10, block +100",
        Mkv::vp9(vec![((i64::MAX - 10) as u64, vec![(100, vp9_key_frame())])]).build(),
        "x.webm",
    );
    add(
        "Matroska: DefaultDuration 2^62 ns at TimecodeScale 1, reordered blocks",
        Mkv {
            timecode_scale: 1,
            default_duration: Some(1 << 62),
            ..Mkv::vp9(vec![(
                0,
                vec![
                    (0, vp9_key_frame()),
                    (3, vp9_key_frame()),
                    (2, vp9_key_frame()),
                    (1, vp9_key_frame()),
                ],
            )])
        }
        .build(),
        "x.webm",
    );
    let far_apart = || {
        Mkv::vp9(vec![
            (0, vec![(-100, vp9_key_frame())]),
            ((i64::MAX - 10) as u64, vec![(5, vp9_key_frame())]),
        ])
    };
    add(
        "Matroska: block timecodes -100 and i64::MAX - 5",
        far_apart().build(),
        "x.webm",
    );
    add(
        "Matroska: no DefaultDuration, block timecodes -100 and i64::MAX - 5",
        Mkv {
            default_duration: None,
            ..far_apart()
        }
        .build(),
        "x.webm",
    );
    add(
        "Matroska: 16000x10 picture (aspect ratio 1600)",
        Mkv {
            size: (16000, 10),
            ..Mkv::vp9(vec![(0, vec![(0, vp9_key_frame()), (33, vp9_key_frame())])])
        }
        .build(),
        "x.webm",
    );

    // --- fragmented MP4 (h264_frag.mp4: tfhd default-base-is-moof, trun v0 with sizes
    // and composition offsets, tfdt v1)
    let frag = fixture_bytes("h264_frag.mp4");
    {
        let mut d = frag.clone();
        let tfdt = mp4_payload_at(&d, 0, &TRAF_TFDT);
        assert_eq!(d[tfdt], 1, "tfdt version 1");
        put(&mut d, tfdt + 4, &(i64::MAX as u64).to_be_bytes());
        add("fMP4: tfdt base media decode time = i64::MAX", d, "x.mp4");
    }
    {
        let mut d = frag.clone();
        let tfdt = mp4_payload_at(&d, 0, &TRAF_TFDT);
        put(&mut d, tfdt + 4, &((i64::MAX - 100) as u64).to_be_bytes());
        let trun = mp4_payload_at(&d, 0, &TRAF_TRUN);
        d[trun] = 1;
        let cts = trun_first_cts(&d, trun);
        put(&mut d, cts, &(-1024i32).to_be_bytes());
        add(
            "fMP4: tfdt = i64::MAX - 100, decode times run past i64::MAX",
            d,
            "x.mp4",
        );
    }
    {
        let mut d = frag.clone();
        let trun = mp4_payload_at(&d, 0, &TRAF_TRUN);
        // Flags: data offset only (no per-sample fields), 4M samples.
        put(&mut d, trun, &0x0000_0001u32.to_be_bytes());
        put(&mut d, trun + 4, &0x0040_0000u32.to_be_bytes());
        add(
            "fMP4: trun without per-sample fields claiming 4M samples (memory)",
            d,
            "x.mp4",
        );
    }
    {
        let tfhd = mp4_payload_at(&frag, 0, &TRAF_TFHD);
        let end = mp4_chain(&frag, 0, &TRAF_TFHD)[2] + be32(&frag, tfhd - 8) as usize;
        let flags = (be32(&frag, tfhd) & !0x02_0000) | 0x01;
        let mut payload = flags.to_be_bytes().to_vec();
        payload.extend(&frag[tfhd + 4..tfhd + 8]); // track id
        payload.extend((u64::MAX - 0x1000).to_be_bytes()); // base data offset
        payload.extend(&frag[tfhd + 8..end]);
        let d = mp4_replace(&frag, 0, &TRAF_TFHD, b"tfhd", &payload);
        add("fMP4: tfhd base_data_offset = 2^64 - 4097", d, "x.mp4");
    }
    {
        let mut d = frag.clone();
        let tfdt = mp4_payload_at(&d, 0, &TRAF_TFDT);
        put(
            &mut d,
            tfdt + 4,
            &((i64::MAX - 1_000_000) as u64).to_be_bytes(),
        );
        let trun = mp4_payload_at(&d, 1, &TRAF_TRUN);
        d[trun] = 1; // version 1: signed composition offsets
        let cts = trun_first_cts(&d, trun);
        put(&mut d, cts, &0x8000_0000u32.to_be_bytes());
        add(
            "fMP4: fragment 1 at i64::MAX - 10^6, fragment 2 with cts = i32::MIN (pts span > i64::MAX)",
            d,
            "x.mp4",
        );
    }

    // --- progressive MP4
    {
        let base = fixture_bytes("h264_baseline.mp4");
        let stco = mp4_payload_at(&base, 0, &stbl(b"stco"));
        let count = be32(&base, stco + 4) as usize;
        let mut payload = base[stco..stco + 8].to_vec();
        for i in 0..count {
            let offset = if i == 0 {
                u64::MAX - 16
            } else {
                u64::from(be32(&base, stco + 8 + 4 * i))
            };
            payload.extend(offset.to_be_bytes());
        }
        let d = mp4_replace(&base, 0, &stbl(b"stco"), b"co64", &payload);
        add("MP4: co64 chunk offset 2^64 - 17", d, "x.mp4");
    }
    {
        let mut d = fixture_bytes("h264_main_bframes.mp4");
        let ctts = mp4_payload_at(&d, 0, &stbl(b"ctts"));
        put(&mut d, ctts + 12, &0xFFFF_FFF0u32.to_be_bytes()); // first offset: -16
        let mut elst = vec![1, 0, 0, 0, 0, 0, 0, 1];
        elst.extend(1000u64.to_be_bytes());
        elst.extend((i64::MAX as u64).to_be_bytes());
        elst.extend([0, 1, 0, 0]);
        let d = mp4_replace(&d, 0, &[b"moov", b"trak", b"edts", b"elst"], b"elst", &elst);
        add(
            "MP4: elst v1 media_time = i64::MAX with a negative ctts",
            d,
            "x.mp4",
        );
    }
    {
        let mut d = fixture_bytes("h264_baseline.mp4");
        let moov = mp4_chain(&d, 0, &[b"moov"])[0];
        put(&mut d, moov, &0x7FFF_FFFFu32.to_be_bytes());
        add("MP4: moov claims 2 GB", d, "x.mp4");
    }
    {
        let mut d = fixture_bytes("h264_baseline.mp4");
        let stsz = mp4_payload_at(&d, 0, &stbl(b"stsz"));
        put(&mut d, stsz + 4, &1u32.to_be_bytes()); // constant size 1
        put(&mut d, stsz + 8, &0x00FF_FFFFu32.to_be_bytes());
        add("MP4: stsz 16M samples of 1 byte", d, "x.mp4");
    }
    {
        let mut d = fixture_bytes("vp9.mp4");
        let entry = mp4_payload_at(
            &d,
            0,
            &stbl(b"stsd")
                .into_iter()
                .chain([b"vp09"])
                .collect::<Vec<_>>(),
        );
        put(&mut d, entry + 24, &[0x3E, 0x80, 0x00, 0x0A]); // 16000x10
        add(
            "MP4 VP9: sample entry 16000x10 (aspect ratio 1600)",
            d,
            "x.mp4",
        );
    }
    cases
}

#[test]
fn crafted_inputs_give_typed_errors_with_bounded_memory() {
    install_hook();
    let mut failures = Vec::new();
    for (name, data, hint) in crafted() {
        CURRENT.with_borrow_mut(|c| {
            c.clear();
            c.push_str(name);
        });
        let ran = run(hint, data, true, true);
        let outcome = match &ran.outcome {
            Some(Outcome::Opened { .. }) => "opened".to_string(),
            Some(Outcome::Rejected(e)) => format!("{:?}", error_kind(e)),
            None => "panicked".to_string(),
        };
        eprintln!(
            "{name}: {outcome} ({:.1?}, peak {:.2} MiB)",
            ran.elapsed,
            ran.peak as f64 / (1 << 20) as f64
        );
        if let Some(f) = ran.failure {
            failures.push(format!("{name}\n  {f}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} crafted input(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
