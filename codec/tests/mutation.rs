//! Deterministic, bounded mutation testing of the demuxers.
//!
//! Every fixture in `tests/data/video` is mutated many times (bit flips, random
//! overwrites, inserted/deleted/duplicated runs, truncation, zeroed ranges, huge values
//! written into box sizes, table counts, EBML sizes and NAL headers, swapped box types
//! and element ids) and then opened, indexed, read packet by packet and planned. Bad
//! input must give a typed error: a panic, a case that allocates more than
//! [`SOFT_LIMIT`] bytes at its peak, or a case slower than [`SLOW_CASE`] fails the test,
//! which then lists every failing case with its fixture and seed.
//!
//! Reproduce one case (prints the mutations and lets the panic through, so
//! `RUST_BACKTRACE=1` gives the backtrace):
//!
//! ```text
//! REEL_MUTATION_CASE=h264_frag.mp4:0x0123456789abcdef \
//!     cargo test -p reel-codec --test mutation -- --nocapture
//! ```
//!
//! Other knobs: `REEL_MUTATION_CASES` (cases per fixture, default 200),
//! `REEL_MUTATION_FIXTURE` (only fixtures whose name contains this),
//! `REEL_MUTATION_DUMP` (a folder: each failing input is written there, for the
//! fuzz targets in `fuzz/`).
//!
//! If the process aborts with "memory allocation of N bytes failed", a case went over
//! the hard limit ([`HARD_LIMIT`]); the line printed just before names it.

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

use reel_codec::{SamplePlan, SamplingOptions, Video};

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

/// Writes straight to fd 2: no allocation on this path.
fn report_hard_limit(request: isize) {
    let mut stderr = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = stderr.write_all(b"\nmutation test: allocation over the hard limit (");
    let _ = stderr.write_all(itoa(request).as_slice());
    let _ = stderr.write_all(b" bytes requested) in case ");
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

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !charge(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            uncharge(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !charge(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            uncharge(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
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
}

impl Hotspots {
    fn find(name: &str, data: &[u8]) -> Self {
        let mut hot = Hotspots::default();
        if data.len() >= 8 && is_mp4_type(&data[4..8]) {
            mp4_boxes(data, 0, data.len(), 0, &mut hot);
        } else if data.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
            mkv_elements(data, 0, data.len(), 0, &mut hot);
        } else {
            annexb_units(data, &mut hot);
        }
        // The first bytes of packets: NAL length prefixes, VP9/AV1 frame headers.
        if let Ok(video) = Video::from_bytes(data.to_vec(), Some(name)) {
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
                // And a few entries further into the table.
                let mut at = payload + 32;
                while at + 4 <= box_end && at < payload + 32 + 64 * 4 {
                    hot.words.push(at);
                    at += 28;
                }
            }
            b"avcC" | b"hvcC" | b"av1C" | b"vpcC" | b"colr" | b"pasp" => {
                hot.bytes.extend(payload..box_end.min(payload + 48));
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

fn mkv_elements(data: &[u8], start: usize, end: usize, depth: usize, hot: &mut Hotspots) {
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
    let mut pos = start;
    let mut blocks = 0;
    while pos < end && depth < 8 {
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
            mkv_elements(data, payload, elem_end, depth + 1, hot);
        } else if id == 0xA3 || id == 0xA1 {
            // (Simple)Block header: track number, timecode, flags. Every block would
            // drown the rest; take the first few per parent.
            if blocks < 24 {
                hot.bytes
                    .extend((payload..payload + 4).filter(|&p| p < elem_end));
                hot.words.push(payload);
            }
            blocks += 1;
        } else if depth >= 1 && depth <= 4 && id != 0xEC && id != 0xBF {
            // Leaf elements of headers: track number/type, codec id, sizes, CodecPrivate.
            hot.bytes.extend(payload..elem_end.min(payload + 24));
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
    const WEIGHTS: [usize; 14] = [3, 3, 1, 1, 1, 1, 4, 1, 1, 3, 2, 2, 2, 1];
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
            let at = if !hot.words.is_empty() && rng.below(2) == 0 {
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
        _ => {
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

/// What a case got to: opened or not, and the error kind.
struct Outcome {
    opened: bool,
    error: Option<String>,
    planned: bool,
}

/// Opens the input and exercises everything a caller would touch.
fn exercise(bytes: Vec<u8>, name: Option<&str>) -> Outcome {
    let video = match Video::from_bytes(bytes, name) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            let kind = format!("{e:?}");
            let kind = kind
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_string();
            return Outcome {
                opened: false,
                error: Some(kind),
                planned: false,
            };
        }
    };
    let info = video.info();
    let _ = format!("{info:?}");
    let _ = video.config().parameter_sets().len();
    let index = video.index();
    let n = index.len();
    assert!(n > 0, "an opened video has packets");
    // Presentation order is a permutation of decode order.
    for f in 0..n.min(1 << 20) {
        let p = index.frame_packet(f);
        assert_eq!(index.packet_frame(p), f, "frame {f} <-> packet {p}");
        let _ = index.is_leading(p);
        let _ = index.gop_start(index.gop_of(p));
        let _ = index.frame_time(f, info.time_base);
    }
    let _ = index.gop_count();
    let _ = index.gop_starts().count();
    let _ = video.missing_packets();
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    for i in 0..n.min(MAX_PACKETS_READ) {
        let _ = video.decoder_packet(i, &mut scratch, &mut out);
        let _ = video.read_packet(i, &mut out);
    }
    let mut planned = false;
    if let Ok(plan) = SamplePlan::new(info, index, &SamplingOptions::default()) {
        planned = true;
        assert!(
            plan.frames.iter().all(|&f| f < n),
            "planned frame past the end"
        );
        assert!(
            plan.decode.iter().all(|r| r.packets.end <= n),
            "decode range past the end"
        );
        let _ = (plan.tokens(), plan.decoded_packets());
    }
    let other = SamplingOptions {
        timestamps: Some(vec![0.0, info.duration / 2.0, info.duration]),
        ..SamplingOptions::default()
    };
    let _ = SamplePlan::new(info, index, &other);
    Outcome {
        opened: true,
        error: None,
        planned,
    }
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
    let result = panic::catch_unwind(AssertUnwindSafe(|| exercise(bytes, name)));
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

fn video_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/video")
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(video_dir())
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
    let data = std::fs::read(video_dir().join(fixture)).expect("fixture");
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
    if let Some(o) = &ran.outcome {
        eprintln!(
            "  opened: {}, error: {:?}, planned: {}",
            o.opened, o.error, o.planned
        );
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
            if let Some(o) = &ran.outcome {
                opened += usize::from(o.opened);
                planned += usize::from(o.planned);
                if let Some(e) = &o.error {
                    *errors.entry(e.clone()).or_default() += 1;
                }
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
