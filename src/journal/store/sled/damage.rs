//! Damage in sled's files: found by reading them the way sled 0.34 writes
//! them, and stepped around in a *copy* so that sled opens it.
//!
//! sled keeps everything in one log-structured file, `journal/db`, cut into
//! segments (8 MiB here), plus `conf` (its settings) and `snap.<LSN>` (its
//! page table as of log sequence number LSN):
//!
//! ```text
//! db:       segment │ segment │ segment │ …           (SLED_SEGMENT_BYTES each)
//! segment:  header (20 B: crc32 · lsn · max stable lsn) │ message │ message │ … │ cap or zeros
//! message:  crc32 u32 · kind u8 · len · segment number · page id (varints) │ len bytes
//! conf:     "segment_size: …" lines │ crc32           snap.X: page table │ len u64 │ crc32
//! ```
//!
//! Every message carries a crc32 of its header and body, so a flipped byte
//! is always seen; what sled does about it depends on where it is, which is
//! what [`find`] tells apart (measured on flips at dozens of offsets of real
//! journals, `tests/it/store_damage.rs`):
//!
//! - **Below the snapshot** (a message older than the snapshot's LSN): the
//!   snapshot already points at every page's newest version. sled refuses
//!   to open when the damage is in the segment its recovery reads (the one
//!   holding the snapshot's LSN: `Read corrupted data at file offset None`),
//!   and otherwise fails the read of the page the message held, if it is
//!   still a live one. Most such messages are dead (a page rewritten since),
//!   and then nothing is lost at all. In a copy the message is overwritten
//!   with a *canceled* message of the same length ([`cancel`]), which sled's
//!   recovery skips: sled opens, a page whose newest version was there fails
//!   its reads (never an older version in its place: the snapshot does not
//!   point there), every other page reads as written.
//! - **Above the snapshot** (written since sled last opened): sled takes the
//!   first message that does not verify for the end of its log and keeps
//!   what came before, silently. That is a consistent earlier state, which
//!   the write-ahead log's batch marker catches (`store/wal/checkpoint.rs`).
//!   Canceling such a message would be wrong: sled would apply the later
//!   messages over a page state that lacks it. So it is only reported.
//! - **`conf` or the snapshot** fail their own crc32 and sled refuses to
//!   open; `conf` holds nothing but our own settings and can be written
//!   afresh, and without a snapshot sled rebuilds the page table from its
//!   log (then every damaged message counts as above the snapshot).
//! - **A segment header** that does not verify makes sled's recovery pass
//!   over that segment; it is reported, not changed.
//! - **A file cut short** before what the snapshot covers reads as zeros
//!   where messages were, which below the snapshot is damage like the rest.
//!
//! Why a start reads this before sled does ([`Scope::Recovery`]): sled's
//! recovery, on meeting a message that does not verify, first zeroes the
//! rest of that segment (it takes it for the garbage a crash leaves) and
//! only then finds the message is below its snapshot and refuses the file.
//! A refused start would so destroy everything after the flipped byte in
//! that segment, which a salvage could still have read (measured: a
//! salvage after a refused start found the whole segment zeroed). Damage
//! [`Inspection::refused_by_recovery`] says sled would refuse is refused
//! before sled opens; reading it costs what sled's recovery reads anyway.
//!
//! Nothing here writes to a data directory: [`find`] only reads, and
//! [`cancel`] is given the copy's file.

use std::{
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use crate::journal::store::end_of_data;

/// sled's segment header: crc32, lsn, max stable lsn.
const SEGMENT_HEADER_BYTES: usize = 20;
/// The longest a message header can be; sled starts no message closer than
/// this to the end of a segment.
const MESSAGE_HEADER_MAX: usize = 32;
/// sled's message kinds that [`find`] needs by name (sled 0.34 `MessageKind`).
const KIND_CANCELED: u8 = 1;
const KIND_CAP: u8 = 2;
/// The highest message kind sled 0.34 writes (`BlobLink`).
const KIND_MAX: u8 = 11;
/// sled xors an LSN with this before writing it in a segment header.
const LSN_MASK: i64 = 0x7FFF_FFFF_FFFF_FFFF;

/// One stretch of `db` that does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Damage {
    /// Its first byte in the file.
    at: u64,
    /// How many bytes, up to the next message that verifies (or the end of
    /// the segment's data).
    len: u64,
    kind: DamageKind,
    /// The number sled gives the segment it is in (its LSN over the segment
    /// size), which a canceled message must carry.
    segment_number: u64,
    /// Nothing but zeros there (or past the end of the file): messages
    /// missing rather than damaged.
    zeros: bool,
}

/// Where a damaged stretch is, which decides what sled makes of it (see the
/// module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DamageKind {
    /// In a message older than sled's snapshot: sled refuses the file or the
    /// page; a copy can have it canceled.
    BelowSnapshot,
    /// In a message newer than the snapshot, with messages that verify after
    /// it: sled keeps the log up to it, silently.
    Tear,
    /// A segment header that does not verify.
    SegmentHeader,
    /// The file ends before the segment sled's snapshot reaches into.
    CutShort,
}

impl Damage {
    /// The stretch, said for people.
    fn describe(&self) -> String {
        let end = self.at + self.len;
        let what = match self.zeros {
            true => {
                "are zeros or missing where messages were written (the file was cut short or overwritten)"
            }
            false => "fail their checksum",
        };
        match self.kind {
            DamageKind::BelowSnapshot => format!(
                "bytes {}..{end} of sled's log {what}, in what sled's last snapshot covers: sled refuses to open the file (or, in an older segment, to read the pages kept there)",
                self.at
            ),
            DamageKind::Tear => format!(
                "bytes {}..{end} of sled's log {what} while later ones verify: sled takes them for the end of its log and drops what was written after them",
                self.at
            ),
            DamageKind::SegmentHeader => format!(
                "the segment header at byte {} of sled's log fails its checksum (sled's recovery passes over that segment)",
                self.at
            ),
            DamageKind::CutShort => format!(
                "the file ends at byte {}, before the end of the log sled's snapshot records: it was cut short",
                self.at
            ),
        }
    }
}

/// Something damaged in sled's files, named for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledFinding {
    /// The file (in the data directory, also when a copy was read).
    pub file: PathBuf,
    /// The byte where the damage starts, when it is in `db`.
    pub at: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for SledFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(at) = self.at {
            write!(f, " at byte {at}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What [`inspect`] found in sled's directory.
pub struct Inspection {
    /// `conf` is there and fails its checksum.
    conf_damaged: bool,
    /// The newest snapshot: its file, its LSN and whether it verifies.
    snapshot: Option<(PathBuf, i64, bool)>,
    /// The damaged stretches of `db`, placed against the snapshot if it
    /// verifies (else all count as above it).
    damage: Vec<Damage>,
}

/// Reads sled's files in `journal` (a data directory's or a copy's) and
/// finds what is damaged in them. Only reads.
pub fn inspect(journal: &Path, segment_bytes: usize, scope: Scope) -> std::io::Result<Inspection> {
    let conf = journal.join("conf");
    let conf_damaged = conf.exists() && !conf_verifies(&conf)?;
    let snapshot = snapshot(journal)?;
    let usable = snapshot
        .as_ref()
        .and_then(|(_, lsn, ok)| ok.then_some(*lsn));
    let db = journal.join("db");
    let damage = match db.exists() {
        true => find(&db, usable, segment_bytes, scope)?,
        false => Vec::new(),
    };
    Ok(Inspection {
        conf_damaged,
        snapshot,
        damage,
    })
}

impl Inspection {
    /// What was found, each file named as under `named` (the data
    /// directory's `journal`, also when this inspected a copy).
    pub fn findings(&self, named: &Path) -> Vec<SledFinding> {
        let mut findings = Vec::new();
        if self.conf_damaged {
            findings.push(SledFinding {
                file: named.join("conf"),
                at: None,
                what: "sled's settings file fails its checksum".into(),
            });
        }
        if let Some((path, _, false)) = &self.snapshot {
            findings.push(SledFinding {
                file: named.join(path.file_name().unwrap_or_default()),
                at: None,
                what: "sled's snapshot of its page table fails its checksum".into(),
            });
        }
        findings.extend(self.damage.iter().map(|d| SledFinding {
            file: named.join("db"),
            at: Some(d.at),
            what: d.describe(),
        }));
        findings
    }

    /// Whether sled's recovery would refuse these files, having already
    /// written to them: it zeroes the rest of a segment from the first
    /// message that does not verify before it checks that message against
    /// its snapshot, so an open of damage below the snapshot destroys
    /// everything after it in that segment before it fails.
    pub fn refused_by_recovery(&self) -> bool {
        self.conf_damaged
            || matches!(self.snapshot, Some((_, _, false)))
            || self
                .damage
                .iter()
                .any(|d| matches!(d.kind, DamageKind::BelowSnapshot | DamageKind::CutShort))
    }

    /// Whether sled opens these files with less than was written to them:
    /// it stops its recovery at a damaged message above its snapshot (or
    /// anywhere, without a usable snapshot) and drops what came after.
    pub fn drops_tail(&self) -> bool {
        self.damage.iter().any(|d| d.kind == DamageKind::Tear)
    }

    /// Steps around the damage in a copy of sled's files in `journal`, so
    /// that sled opens it (see the module docs): a `conf` that fails its
    /// checksum is removed (sled writes its settings afresh: they are ours),
    /// and so is every snapshot when the newest one fails (sled rebuilds its
    /// page table from its log); stretches below a good snapshot are
    /// canceled. Never call it on a data directory's files.
    pub fn step_around(&self, journal: &Path) -> std::io::Result<()> {
        if self.conf_damaged {
            fs::remove_file(journal.join("conf"))?;
        }
        if let Some((_, _, false)) = &self.snapshot {
            for entry in fs::read_dir(journal)? {
                let path = entry?.path();
                if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("snap."))
                {
                    fs::remove_file(path)?;
                }
            }
        }
        if self
            .damage
            .iter()
            .any(|d| d.kind == DamageKind::BelowSnapshot)
        {
            cancel(&journal.join("db"), &self.damage)?;
        }
        Ok(())
    }
}

/// The snapshot sled opens with: the newest `snap.<LSN>` in `journal`, and
/// whether its crc32 verifies; `None` when there is none.
fn snapshot(journal: &Path) -> std::io::Result<Option<(PathBuf, i64, bool)>> {
    let mut newest: Option<(PathBuf, i64)> = None;
    for entry in fs::read_dir(journal)? {
        let path = entry?.path();
        let Some(lsn) = path.file_name().and_then(snapshot_lsn) else {
            continue;
        };
        if newest.as_ref().is_none_or(|(_, l)| lsn > *l) {
            newest = Some((path, lsn));
        }
    }
    let Some((path, lsn)) = newest else {
        return Ok(None);
    };
    // The page table, its length (u64), then the crc32 of the page table.
    let bytes = fs::read(&path)?;
    let ok = bytes.len() > 12 && {
        let (table, tail) = bytes.split_at(bytes.len() - 12);
        crc32fast::hash(table) == u32::from_le_bytes(tail[8..].try_into().unwrap_or_default())
    };
    Ok(Some((path, lsn, ok)))
}

/// The LSN a snapshot file's name `snap.<LSN in hex>` carries; `None` for
/// any other file.
fn snapshot_lsn(name: &std::ffi::OsStr) -> Option<i64> {
    let hex = name.to_str()?.strip_prefix("snap.")?;
    i64::from_str_radix(hex, 16).ok()
}

/// Whether sled's settings file `conf` verifies (its text, then its crc32).
fn conf_verifies(conf: &Path) -> std::io::Result<bool> {
    let bytes = fs::read(conf)?;
    Ok(trailing_crc_verifies(&bytes))
}

/// Whether `bytes` ends in the crc32 (little-endian) of what comes before.
fn trailing_crc_verifies(bytes: &[u8]) -> bool {
    if bytes.len() <= 4 {
        return false;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    crc32fast::hash(body) == u32::from_le_bytes(crc.try_into().unwrap_or_default())
}

/// How much of `db` to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// All of it (the offline tools).
    Whole,
    /// What sled's recovery reads at an open: the segments from the one
    /// holding the snapshot's LSN on (at a server's start: a segment or so,
    /// which sled reads anyway).
    Recovery,
}

/// Every damaged stretch of sled's log file `db` within `scope`, given the
/// LSN of sled's snapshot (`None`: no usable snapshot, everything counts as
/// above it) and its segment size. Only reads.
fn find(
    db: &Path,
    snapshot_lsn: Option<i64>,
    segment_bytes: usize,
    scope: Scope,
) -> std::io::Result<Vec<Damage>> {
    let file = fs::File::open(db)?;
    let length = file.metadata()?.len() as usize;
    // Every segment's header first: they say which segments to read.
    let lsns = segment_lsns(&file, length, segment_bytes)?;
    // The newest segment is the one sled appends to: what does not verify at
    // its end may be where the log simply ends.
    let tip = lsns.iter().filter_map(|(lsn, _)| *lsn).max();
    let mut found = Vec::new();
    // The snapshot says the log reaches its LSN: a file that ends before is
    // walked as if padded with zeros, which below the snapshot are damage
    // like any other (and can be canceled in a copy).
    let mut padded = length;
    if let Some(s) = snapshot_lsn {
        let holding = lsns.iter().enumerate().find_map(|(n, (lsn, _))| {
            lsn.filter(|l| *l <= s && s < l + segment_bytes as i64)
                .map(|l| n * segment_bytes + (s - l) as usize)
        });
        // A header that does not verify may be the one holding it: sled
        // copes with that, and the file is not known to be short.
        let unreadable_header = lsns.iter().any(|(lsn, written)| lsn.is_none() && *written);
        match holding {
            Some(end) => padded = padded.max(end),
            None if unreadable_header => {}
            // The segment the snapshot's LSN was in has been used again
            // since (a long run after an open): the log goes on past it.
            None if tip.is_some_and(|tip| s < tip) => {}
            None => found.push(Damage {
                at: length as u64,
                len: 0,
                kind: DamageKind::CutShort,
                segment_number: 0,
                zeros: true,
            }),
        }
    }
    let first = match (scope, snapshot_lsn) {
        (Scope::Recovery, Some(s)) => s - s % segment_bytes as i64,
        _ => i64::MIN,
    };
    let mut segment = Vec::with_capacity(segment_bytes);
    for (n, (lsn, written)) in lsns.into_iter().enumerate() {
        let base = n * segment_bytes;
        let lsn = match lsn {
            Some(lsn) if lsn >= first => lsn,
            // Older than what recovery reads.
            Some(_) => continue,
            // A header that does not verify, which sled's recovery passes
            // over; a segment never written, or zeroed by sled when it freed
            // it, has none at all.
            None => {
                if written && scope == Scope::Whole {
                    found.push(Damage {
                        at: base as u64,
                        len: SEGMENT_HEADER_BYTES as u64,
                        kind: DamageKind::SegmentHeader,
                        segment_number: 0,
                        zeros: false,
                    });
                }
                continue;
            }
        };
        let end = (base + segment_bytes).min(padded.max(length));
        segment.resize(end - base, 0);
        let read = read_at_most(&file, &mut segment, base as u64)?;
        segment[read..].fill(0);
        let walk = Walk {
            segment: &segment,
            base,
            segment_bytes,
            snapshot_lsn,
            is_tip: tip == Some(lsn),
        };
        let from = found.len();
        walk.messages(lsn, &mut found);
        for damage in &mut found[from..] {
            let (at, to) = (
                damage.at as usize - base,
                (damage.at + damage.len) as usize - base,
            );
            // What lies past the end of the file is missing, not damaged.
            damage.zeros = damage.at + damage.len > length as u64
                || end_of_data(&segment[at..to.min(segment.len())]) == 0;
        }
    }
    Ok(found)
}

/// Each segment's LSN (if its header verifies) and whether its header holds
/// anything but zeros, in file order.
fn segment_lsns(
    file: &fs::File,
    length: usize,
    segment_bytes: usize,
) -> std::io::Result<Vec<(Option<i64>, bool)>> {
    let mut lsns = Vec::new();
    for base in (0..length).step_by(segment_bytes) {
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let read = read_at_most(file, &mut header, base as u64)?;
        lsns.push((
            segment_lsn(&header[..read]),
            header[..read].iter().any(|b| *b != 0),
        ));
    }
    Ok(lsns)
}

/// How many bytes of log sled's next open of `journal` would replay, at
/// most: from its snapshot's LSN to the end of its newest segment (all of
/// the log without a snapshot). Reads the snapshot's name and each
/// segment's header only.
pub fn replay_debt(journal: &Path, segment_bytes: usize) -> std::io::Result<u64> {
    // The newest snapshot's LSN, from its name: not read (it holds the page
    // table, megabytes), since a damaged one is the open's to find.
    let mut from = 0;
    for entry in fs::read_dir(journal)? {
        from = from.max(snapshot_lsn(&entry?.file_name()).unwrap_or(0));
    }
    let file = fs::File::open(journal.join("db"))?;
    let length = file.metadata()?.len() as usize;
    let tip = segment_lsns(&file, length, segment_bytes)?
        .into_iter()
        .filter_map(|(lsn, _)| lsn)
        .max();
    Ok(tip.map_or(0, |tip| (tip + segment_bytes as i64 - from).max(0) as u64))
}

/// Reads into `buf` from `at` until it is full or the file ends; returns
/// how many bytes were read.
fn read_at_most(file: &fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], at + read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

/// The LSN in a segment's header, if the header verifies.
fn segment_lsn(segment: &[u8]) -> Option<i64> {
    let header = segment.get(..SEGMENT_HEADER_BYTES)?;
    let crc = u32::from_le_bytes(header[..4].try_into().ok()?) ^ 0xFFFF_FFFF;
    (crc32fast::hash(&header[4..]) == crc)
        .then(|| i64::from_le_bytes(header[4..12].try_into().unwrap_or_default()) ^ LSN_MASK)
}

/// One segment's messages, walked.
struct Walk<'a> {
    segment: &'a [u8],
    /// Its file offset.
    base: usize,
    segment_bytes: usize,
    snapshot_lsn: Option<i64>,
    /// It is the newest segment.
    is_tip: bool,
}

impl Walk<'_> {
    /// Pushes what does not verify in the segment whose header LSN is `lsn`.
    fn messages(&self, lsn: i64, found: &mut Vec<Damage>) {
        let segment = self.segment;
        let number = lsn as u64 / self.segment_bytes as u64;
        // The end of what the snapshot covers, in this segment.
        let covered = self
            .snapshot_lsn
            .map_or(0, |s| (s - lsn).clamp(0, segment.len() as i64) as usize);
        // Where the segment's data ends: nothing but zeros after it.
        let data_end = end_of_data(segment);
        let mut pos = SEGMENT_HEADER_BYTES;
        while pos + MESSAGE_HEADER_MAX <= self.segment_bytes && pos < segment.len() {
            if let Some(message) = message_at(segment, pos, number) {
                if message.kind == KIND_CAP {
                    return;
                }
                pos += message.total;
                continue;
            }
            let below = pos < covered;
            let last = data_end.checked_sub(pos + 1);
            let next = last.and_then(|last| {
                (pos + 1..pos + last + 1).find(|p| message_at(segment, *p, number).is_some())
            });
            let kind = match (below, last, next) {
                (true, _, _) => DamageKind::BelowSnapshot,
                // Zeros to the end: the segment's data ends here.
                (false, None, _) => return,
                (false, Some(_), Some(_)) => DamageKind::Tear,
                // Above the snapshot, nothing verifies after it: in the
                // newest segment that is where the log ends (a write cut
                // short looks the same, and sled treats it the same).
                (false, Some(_), None) if self.is_tip => return,
                (false, Some(_), None) => DamageKind::Tear,
            };
            let mut end = match (next, last) {
                (Some(next), _) => next,
                (None, Some(last)) => pos + last + 1,
                (None, None) => covered,
            };
            if kind == DamageKind::BelowSnapshot {
                // What the snapshot covers ends at its LSN: a canceled
                // message reaching past it would hide what came after; and
                // below it, zeros are missing messages, not the end.
                end = end.clamp(pos + 1, covered.max(pos + 1));
            }
            found.push(Damage {
                at: (self.base + pos) as u64,
                len: (end - pos) as u64,
                kind,
                segment_number: number,
                zeros: false,
            });
            match next {
                Some(next) if next >= end => pos = next,
                _ if kind == DamageKind::BelowSnapshot && end < covered => pos = end,
                _ => return,
            }
        }
    }
}

/// A message that verifies.
struct Message {
    kind: u8,
    /// Header and body.
    total: usize,
}

/// The message at `pos` in `segment`, if one starts there and verifies.
fn message_at(segment: &[u8], pos: usize, number: u64) -> Option<Message> {
    let bytes = segment.get(pos..)?;
    let crc = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let kind = *bytes.get(4)?;
    if kind == 0 || kind > KIND_MAX {
        return None;
    }
    let mut at = 5;
    let len = varint(bytes, &mut at)?;
    if varint(bytes, &mut at)? != number {
        return None;
    }
    varint(bytes, &mut at)?; // the page id
    let body = bytes.get(at..at.checked_add(usize::try_from(len).ok()?)?)?;
    (message_crc(&bytes[4..at], body) == crc).then_some(Message {
        kind,
        total: at + body.len(),
    })
}

/// sled's crc32 of a message: the body, then the header after its crc.
fn message_crc(header: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(body);
    hasher.update(header);
    hasher.finalize() ^ 0xFFFF_FFFF
}

/// Reads one of sled's variable-length integers at `*at`, moving past it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    let (value, len) = match first {
        0..=240 => (u64::from(first), 1),
        241..=248 => (
            240 + 256 * (u64::from(first) - 241) + u64::from(*bytes.get(*at + 1)?),
            2,
        ),
        249 => (
            2288 + 256 * u64::from(*bytes.get(*at + 1)?) + u64::from(*bytes.get(*at + 2)?),
            3,
        ),
        _ => {
            let n = usize::from(first) - 247;
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(bytes.get(*at + 1..*at + 1 + n)?);
            (u64::from_le_bytes(le), n + 1)
        }
    };
    *at += len;
    Some(value)
}

/// Writes one of sled's variable-length integers.
fn put_varint(value: u64, out: &mut Vec<u8>) {
    match value {
        0..=240 => out.push(value as u8),
        241..=2287 => {
            out.push(((value - 240) / 256 + 241) as u8);
            out.push(((value - 240) % 256) as u8);
        }
        2288..=67823 => {
            out.push(249);
            out.push(((value - 2288) / 256) as u8);
            out.push(((value - 2288) % 256) as u8);
        }
        _ => {
            // Any larger value: a length byte (247 + n), then n bytes.
            let n = 8 - (value.leading_zeros() as usize / 8);
            out.push(247 + n as u8);
            out.extend_from_slice(&value.to_le_bytes()[..n]);
        }
    }
}

/// A canceled message exactly `total` bytes long, in segment `number`:
/// sled's recovery reads it, finds it verifies, and skips it.
fn canceled_message(total: usize, number: u64) -> Option<Vec<u8>> {
    // After the length: the segment number and page id 0.
    let mut tail = Vec::new();
    put_varint(number, &mut tail);
    put_varint(0, &mut tail);
    let fixed = 4 + 1 + tail.len();
    // The length in sled's shortest form where one fits the total; where
    // none does (a total just past a form's range), in the 5-byte form,
    // which sled reads the same.
    let shortest = (1..=3).find_map(|width| {
        let len = total.checked_sub(fixed + width)?;
        let mut field = Vec::new();
        put_varint(len as u64, &mut field);
        (field.len() == width).then_some(field)
    });
    let field = shortest.or_else(|| {
        let len = u32::try_from(total.checked_sub(fixed + 5)?).ok()?;
        let mut field = vec![251];
        field.extend_from_slice(&len.to_le_bytes());
        Some(field)
    })?;
    let mut head = vec![KIND_CANCELED];
    head.extend(field);
    head.extend(tail);
    let body = vec![0u8; total - 4 - head.len()];
    let mut message = message_crc(&head, &body).to_le_bytes().to_vec();
    message.extend(head);
    message.extend(body);
    Some(message)
}

/// Overwrites every [`DamageKind::BelowSnapshot`] stretch of the copy's
/// `db` with a canceled message of its length (see the module docs);
/// returns how many it canceled. Never call it on a data directory's file.
fn cancel(copy_db: &Path, damage: &[Damage]) -> std::io::Result<usize> {
    let file = fs::OpenOptions::new().write(true).open(copy_db)?;
    let mut canceled = 0;
    for stretch in damage
        .iter()
        .filter(|d| d.kind == DamageKind::BelowSnapshot)
    {
        // Too short for any message (8 bytes at least): sled's recovery
        // still refuses the file, and says so.
        let Some(message) = canceled_message(stretch.len as usize, stretch.segment_number) else {
            continue;
        };
        file.write_all_at(&message, stretch.at)?;
        canceled += 1;
    }
    file.sync_all()?;
    Ok(canceled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_back_as_sled_writes_them() {
        for value in [
            0,
            1,
            240,
            241,
            2287,
            2288,
            67823,
            67824,
            0xFF_FFFF,
            1 << 32,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(value, &mut out);
            let mut at = 0;
            assert_eq!(varint(&out, &mut at), Some(value), "{value}");
            assert_eq!(at, out.len(), "{value}");
        }
    }

    #[test]
    fn a_canceled_message_verifies_at_every_length() {
        for total in (8..3000).chain([70_000, 70_003, 8 * 1024 * 1024 - 40]) {
            let message = canceled_message(total, 3).expect("fits");
            assert_eq!(message.len(), total);
            let mut segment = vec![0u8; SEGMENT_HEADER_BYTES];
            segment.extend(&message);
            segment.extend([0u8; MESSAGE_HEADER_MAX]);
            let read = message_at(&segment, SEGMENT_HEADER_BYTES, 3).expect("verifies");
            assert_eq!((read.kind, read.total), (KIND_CANCELED, total));
            assert!(
                message_at(&segment, SEGMENT_HEADER_BYTES, 4).is_none(),
                "another segment's"
            );
        }
        assert!(canceled_message(7, 3).is_none(), "shorter than any header");
    }
}
