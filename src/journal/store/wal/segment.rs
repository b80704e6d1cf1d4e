//! The log's files: segments, their header, and the framing of a record.
//!
//! ```text
//! DATA_DIR/wal/0000000000000007.wal   one segment, preallocated to its full size
//! ┌──────────────┬──────────────────────────────┬───────┬─────────────┐
//! │ header (48B) │ record │ record │ …            │ zeros │             │
//! └──────────────┴──────────────────────────────┴───────┴─────────────┘
//! header: "SAGADWAL" · version u32 · segment size u64 · index u64 ·
//!         first batch u64 · crc32 of the header so far · zeros to 48 bytes
//! record: len u32 · crc32 u32 (of the rest) · batch u64 · postcard(key writes)
//! ```
//!
//! All integers are little-endian. A record's `len` counts what follows the
//! crc (the batch number and the key writes); the crc covers the same bytes.
//! Reading a segment ([`scan`]) tells a torn tail (a record cut short by a
//! crash, with nothing but zeros after it, at the end of the last segment)
//! from damage (anything else that does not verify), and names the file and
//! byte of what it refuses.

use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::spare::Spares;
use crate::journal::store::{KeyWrite, KeyWrites, Rebuild, StoreError, encode_after, end_of_data};

pub(super) const MAGIC: &[u8; 8] = b"SAGADWAL";
const VERSION: u32 = 1;
/// The header's size on disk: 40 bytes of fields and crc, zero-padded.
pub(super) const HEADER_BYTES: u64 = 48;
/// len + crc + batch.
const RECORD_HEADER_BYTES: u64 = 16;

/// One segment file being appended to.
pub(super) struct Segment {
    pub(super) file: File,
    pub(super) index: u64,
    pub(super) size: u64,
    /// Where the next record goes.
    pub(super) position: u64,
    /// Written with zeros before use (a spare), rather than a sparse file.
    pub(super) zeroed: bool,
}

fn damaged(path: &Path, at: u64, why: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        at: format!("{} at byte {at}", path.display()),
        why: why.into(),
    }
}

pub(super) fn io(what: impl std::fmt::Display, e: std::io::Error) -> StoreError {
    StoreError::io(what, e)
}

pub(super) fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016}.wal"))
}

/// A verified record read back.
pub struct Record {
    pub batch: u64,
    pub writes: Vec<KeyWrite>,
}

/// What a scan of the whole log found.
pub struct Scan {
    /// The batch the oldest segment starts at (its header says so even when it
    /// holds no record yet); 1 for an empty log.
    pub first_batch: u64,
    /// (index, path, size) of every segment, oldest first.
    pub segments: Vec<(u64, PathBuf, u64)>,
    /// Every good record, in order, with the segment index it is in.
    pub records: Vec<(u64, Record)>,
    /// A torn tail found at the end: (segment path, byte offset).
    pub torn: Option<(PathBuf, u64)>,
    /// An empty last segment: what a rollover that failed before it wrote
    /// the header left (a full disk, a crash), never written to; left out of
    /// `segments`.
    pub unused: Option<PathBuf>,
}

impl Scan {
    /// The batch numbers the log holds: `(first, last)`, `last < first`
    /// when it holds none.
    pub fn batches(&self) -> (u64, u64) {
        let last = self
            .records
            .last()
            .map_or(self.first_batch.saturating_sub(1), |(_, r)| r.batch);
        (self.first_batch, last)
    }

    /// Whether this log, in `dir`, can rebuild a store from nothing: only
    /// when it still holds every batch since the journal began.
    pub fn rebuild(&self, dir: &Path) -> Rebuild {
        let (first, last) = self.batches();
        match (self.segments.is_empty(), first) {
            (false, 1) => Rebuild::FromLog {
                log: dir.to_path_buf(),
            },
            _ => Rebuild::No {
                log: dir.to_path_buf(),
                first,
                last,
            },
        }
    }
}

/// Whether the log in `dir` can rebuild a store from nothing; unknown when
/// the log cannot be read either.
pub fn rebuild(dir: &Path) -> Rebuild {
    scan(dir).map_or(Rebuild::Unknown, |found| found.rebuild(dir))
}

/// Whether the segment file at `path` is empty. Only an empty file is known
/// never to have held a record: a segment gets its header and its full size
/// before its first record, so any other file without a valid header (a
/// segment cut short, say) may have lost acknowledged batches, and is damage.
fn is_empty(path: &Path) -> Result<bool, StoreError> {
    let meta = fs::metadata(path).map_err(|e| io(format!("reading {}", path.display()), e))?;
    Ok(meta.len() == 0)
}

/// (segment size, index, first batch) from a segment's header.
fn read_header(path: &Path, file: &mut File) -> Result<(u64, u64, u64), StoreError> {
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact(&mut header).map_err(|_| {
        damaged(
            path,
            0,
            "the segment header is missing (the file was truncated)",
        )
    })?;
    if &header[..8] != MAGIC {
        return Err(damaged(path, 0, "not a sagad log segment (bad magic)"));
    }
    let crc = u32::from_le_bytes(header[36..40].try_into().unwrap_or_default());
    if crc32fast::hash(&header[..36]) != crc {
        return Err(damaged(path, 0, "segment header checksum mismatch"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != VERSION {
        return Err(damaged(
            path,
            8,
            format!("log format version {version}; this build reads {VERSION}"),
        ));
    }
    let size = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    let index = u64::from_le_bytes(header[20..28].try_into().unwrap_or_default());
    let first_batch = u64::from_le_bytes(header[28..36].try_into().unwrap_or_default());
    Ok((size, index, first_batch))
}

/// Reads and verifies every segment of the log in `dir`.
pub fn scan(dir: &Path) -> Result<Scan, StoreError> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(format!("listing {}", dir.display()), e)),
    };
    paths.sort();
    let mut result = Scan {
        first_batch: 1,
        segments: Vec::new(),
        records: Vec::new(),
        torn: None,
        unused: None,
    };
    let count = paths.len();
    let mut expected_batch = None;
    for (n, path) in paths.into_iter().enumerate() {
        let last_segment = n + 1 == count;
        let mut file =
            File::open(&path).map_err(|e| io(format!("opening {}", path.display()), e))?;
        let (size, index, first_batch) = match read_header(&path, &mut file) {
            // A rollover that failed (a full disk) before it wrote the header
            // of the next segment: nothing was ever written to it.
            Err(_) if last_segment && is_empty(&path)? => {
                tracing::warn!(segment = %path.display(), "ignoring an empty log segment a failed rollover left (it holds no record)");
                result.unused = Some(path);
                continue;
            }
            header => header?,
        };
        match expected_batch {
            None => result.first_batch = first_batch,
            Some(expected) if expected != first_batch => {
                return Err(damaged(
                    &path,
                    28,
                    format!(
                        "the segment starts at batch {first_batch} where {expected} was expected: batches are missing"
                    ),
                ));
            }
            Some(_) => {}
        }
        let mut next_batch = first_batch;
        let actual = file
            .metadata()
            .map_err(|e| io(format!("reading {}", path.display()), e))?
            .len();
        if actual != size {
            return Err(damaged(
                &path,
                actual,
                format!(
                    "the segment is {actual} bytes but was created with {size}: it was truncated or extended"
                ),
            ));
        }
        let expected_name = segment_path(dir, index);
        if expected_name.file_name() != path.file_name() {
            return Err(damaged(
                &path,
                20,
                format!("the header says segment {index}"),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| io(format!("reading {}", path.display()), e))?;
        let mut position = HEADER_BYTES;
        loop {
            let at = position as usize;
            if position + RECORD_HEADER_BYTES > size {
                break;
            }
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as u64;
            if len == 0 {
                // Zeros: the end of this segment's records, unless something follows.
                if end_of_data(&bytes[at..]) != 0 {
                    return Err(damaged(
                        &path,
                        position,
                        "data after the end of the records (a zeroed length)",
                    ));
                }
                break;
            }
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
            let end = position + 8 + len;
            let problem = if len < 8 || end > size {
                Some(format!(
                    "a record length of {len} bytes does not fit the segment"
                ))
            } else if crc32fast::hash(&bytes[at + 8..end as usize]) != crc {
                Some("record checksum mismatch".to_string())
            } else {
                None
            };
            if let Some(why) = problem {
                // A torn write leaves garbage only where the last record was being
                // written; anything non-zero beyond it means real damage.
                let beyond = if len >= 8 && end <= size {
                    end as usize
                } else {
                    at + 8
                };
                let tail_clean = end_of_data(&bytes[beyond..]) == 0;
                if last_segment && tail_clean {
                    result.torn = Some((path.clone(), position));
                    break;
                }
                return Err(damaged(&path, position, why));
            }
            let batch = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap_or_default());
            let writes: Vec<KeyWrite> = postcard::from_bytes(&bytes[at + 16..end as usize])
                .map_err(|e| damaged(&path, position, format!("undecodable record: {e}")))?;
            if batch != next_batch {
                return Err(damaged(
                    &path,
                    position,
                    format!(
                        "batch {batch} where batch {next_batch} was expected: batches are missing"
                    ),
                ));
            }
            next_batch += 1;
            result.records.push((index, Record { batch, writes }));
            position = end;
        }
        expected_batch = Some(next_batch);
        result.segments.push((index, path, next_batch - 1));
    }
    Ok(result)
}

pub(super) fn segment_header(
    size: u64,
    index: u64,
    first_batch: u64,
) -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&size.to_le_bytes());
    header[20..28].copy_from_slice(&index.to_le_bytes());
    header[28..36].copy_from_slice(&first_batch.to_le_bytes());
    let crc = crc32fast::hash(&header[..36]);
    header[36..40].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A new segment: the ready spare, if there is one of that size, else a sparse file.
pub(super) fn new_segment(
    dir: &Path,
    index: u64,
    size: u64,
    first_batch: u64,
    spares: Option<&Spares>,
) -> Result<Segment, StoreError> {
    let path = segment_path(dir, index);
    if let Some(spares) = spares
        && let Some((file, spare)) = spares.take(size)
    {
        // The header durable before the name: a segment file never lacks one.
        let taken = file
            .write_all_at(&segment_header(size, index, first_batch), 0)
            .and_then(|_| file.sync_data())
            .and_then(|_| fs::rename(spare, &path));
        spares.used();
        match taken {
            Ok(()) => {
                sync_dir(dir)?;
                return Ok(Segment {
                    file,
                    index,
                    size,
                    position: HEADER_BYTES,
                    zeroed: true,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, segment = %path.display(), "cannot use the zero-filled spare; creating a sparse segment");
            }
        }
    }
    // A file already at this index can only be what a failed rollover to it
    // left (the log never writes past its current segment, and an open starts
    // past every segment it found): replace it, or every later rollover fails.
    match fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(segment = %path.display(), "replacing what a failed rollover left")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing {}", path.display()), e)),
    }
    let mut file = crate::private::file()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io(format!("creating {}", path.display()), e))?;
    let prepared = file
        .write_all(&segment_header(size, index, first_batch))
        .and_then(|_| file.set_len(size))
        .and_then(|_| file.sync_all());
    if let Err(e) = prepared {
        // Not left behind (on a full disk, a file without its header): the
        // next try makes it again.
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(io(format!("preparing {}", path.display()), e));
    }
    sync_dir(dir)?;
    Ok(Segment {
        file,
        index,
        size,
        position: HEADER_BYTES,
        zeroed: false,
    })
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("syncing {}", dir.display()), e))
}

/// The record of batch `number`, ready to be written at the end of a segment.
pub(super) fn encode_record(number: u64, batch: &[KeyWrite]) -> Result<Vec<u8>, StoreError> {
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    header[8..16].copy_from_slice(&number.to_le_bytes());
    let mut record = encode_after(&header, &KeyWrites(batch))
        .map_err(|e| StoreError::Engine(format!("encoding a log record: {e}")))?;
    let len = (record.len() - 8) as u32;
    record[..4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&record[8..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}
