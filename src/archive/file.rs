//! Archive files: `DATA_DIR/archive/YYYY-MM-DD.jsonl.gz`, one per UTC day on
//! which the sagas in it ended, each a sequence of gzip members holding JSON
//! lines (`record.rs`). Concatenated gzip members are one valid gzip file:
//! `zcat`, `gzip -dc` and `jq` read it as one stream of lines.
//!
//! Guarantees of [`ArchiveWriter::append`]:
//! - **Durable on `Ok`.** Every file written is `fdatasync`ed, then the archive
//!   directory is `fsync`ed (a new file's name is durable too).
//! - **Append only, whole members.** A batch is appended after the last whole
//!   member of the file; nothing written before is rewritten.
//! - **Torn tails are cut, never hidden data.** The first time a file is
//!   appended to by this process, it is read through. A bad member with no valid
//!   member after it is a torn write (the process died mid-append, so its sagas
//!   were never removed from the journal); it is copied to
//!   `YYYY-MM-DD.jsonl.gz.torn-<byte offset>` for inspection and cut off. A bad
//!   member *followed by* valid data is damage: the file is refused, named with
//!   the byte offset, and its day is not archived until an operator moves it.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use flate2::{Compression, bufread::GzDecoder, write::GzEncoder};

use super::ArchiveError;

/// Most uncompressed bytes in one gzip member: a reader holds one member at a time.
pub const MEMBER_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The file name suffix of archive files.
pub const FILE_SUFFIX: &str = ".jsonl.gz";

/// The archive file name of a UTC day (`YYYY-MM-DD`).
pub fn file_name(day: &str) -> String {
    format!("{day}{FILE_SUFFIX}")
}

/// The day of an archive file name, if it is one.
pub fn day_of(name: &str) -> Option<&str> {
    let day = name.strip_suffix(FILE_SUFFIX)?;
    let b = day.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    shape.then_some(day)
}

/// The archive files in `dir`, by day, oldest first; none if `dir` does not exist.
pub fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, ArchiveError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArchiveError::io("cannot list", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ArchiveError::io("cannot list", dir, e))?;
        let name = entry.file_name();
        if let Some(day) = name.to_str().and_then(day_of) {
            files.push((day.to_string(), entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// How reading a file ended.
#[derive(Debug, PartialEq, Eq)]
pub struct FileEnd {
    /// Bytes up to the end of the last whole member.
    pub good_len: u64,
    /// Bytes after it that are a torn write (an incomplete last member).
    pub torn_bytes: u64,
}

/// A `BufRead` that counts what its user consumed: where each member ends.
struct Counting<R> {
    inner: R,
    consumed: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.consumed += amount as u64;
        self.inner.consume(amount);
    }
}

/// Reads every whole member of an archive file and gives each line (without
/// its newline) to `line`. A torn tail ends the file (see [`FileEnd`]); damage
/// followed by valid data is [`ArchiveError::Damaged`].
pub fn read(
    path: &Path,
    line: &mut dyn FnMut(&[u8]) -> Result<(), ArchiveError>,
) -> Result<FileEnd, ArchiveError> {
    let file = File::open(path).map_err(|e| ArchiveError::io("cannot open", path, e))?;
    let total = file
        .metadata()
        .map_err(|e| ArchiveError::io("cannot stat", path, e))?
        .len();
    let mut reader = Counting {
        inner: BufReader::with_capacity(64 * 1024, file),
        consumed: 0,
    };
    let mut member = Vec::new();
    loop {
        let start = reader.consumed;
        let at_end = reader
            .fill_buf()
            .map_err(|e| ArchiveError::io("cannot read", path, e))?
            .is_empty();
        if at_end {
            return Ok(FileEnd {
                good_len: start,
                torn_bytes: 0,
            });
        }
        member.clear();
        let decoded = GzDecoder::new(&mut reader).read_to_end(&mut member);
        if let Err(why) = decoded {
            if valid_member_after(path, start + 1)? {
                return Err(ArchiveError::Damaged {
                    path: path.to_path_buf(),
                    offset: start,
                    why: why.to_string(),
                });
            }
            return Ok(FileEnd {
                good_len: start,
                torn_bytes: total - start,
            });
        }
        for text in member.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            line(text)?;
        }
    }
}

/// Whether a whole gzip member starts anywhere at or after byte `from`.
fn valid_member_after(path: &Path, from: u64) -> Result<bool, ArchiveError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(from))?;
            f.read_to_end(&mut bytes)
        })
        .map_err(|e| ArchiveError::io("cannot read", path, e))?;
    // A gzip member starts with its magic and the deflate method byte.
    Ok(bytes.windows(3).enumerate().any(|(i, w)| {
        w == [0x1f, 0x8b, 0x08]
            && GzDecoder::new(&bytes[i..])
                .read_to_end(&mut Vec::new())
                .is_ok()
    }))
}

/// Appends batches of lines to the day files of one archive directory. It is
/// the directory's only writer: the data directory's lock keeps others out.
pub struct ArchiveWriter {
    dir: PathBuf,
    /// Each file's length up to its last whole member, once read through.
    lengths: HashMap<String, u64>,
}

impl ArchiveWriter {
    /// A writer for `dir` (created on the first append).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            lengths: HashMap::new(),
        }
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `lines` (each a JSON line ending in a newline) to the file of
    /// their day, durably; see the module docs.
    pub fn append(&mut self, days: &BTreeMap<String, Vec<Vec<u8>>>) -> Result<(), ArchiveError> {
        if days.is_empty() {
            return Ok(());
        }
        self.ensure_dir()?;
        for (day, lines) in days {
            let path = self.dir.join(file_name(day));
            let len = match self.lengths.get(day) {
                Some(len) => *len,
                None => self.recover(&path)?,
            };
            let bytes =
                compress(lines).map_err(|e| ArchiveError::io("cannot compress", &path, e))?;
            // Forget the length until the write is known good: a failed write
            // leaves the file to be read through again.
            self.lengths.remove(day);
            let file = crate::private::file()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| ArchiveError::io("cannot open", &path, e))?;
            file.set_len(len)
                .and_then(|()| file.write_all_at(&bytes, len))
                .and_then(|()| file.sync_data())
                .map_err(|e| ArchiveError::io("cannot append to", &path, e))?;
            self.lengths.insert(day.clone(), len + bytes.len() as u64);
        }
        sync_dir(&self.dir)
    }

    /// Creates the archive directory (and makes its name durable) if needed.
    fn ensure_dir(&self) -> Result<(), ArchiveError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        crate::private::dir(&self.dir)
            .map_err(|e| ArchiveError::io("cannot create", &self.dir, e))?;
        match self.dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }

    /// The length to append at: the end of the file's last whole member. A torn
    /// tail is copied aside first (see the module docs).
    fn recover(&self, path: &Path) -> Result<u64, ArchiveError> {
        if !path.exists() {
            return Ok(0);
        }
        let end = read(path, &mut |_| Ok(()))?;
        if end.torn_bytes > 0 {
            let aside = path.with_file_name(format!(
                "{}.torn-{}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("archive"),
                end.good_len
            ));
            let mut tail = Vec::new();
            File::open(path)
                .and_then(|mut f| {
                    f.seek(SeekFrom::Start(end.good_len))?;
                    f.read_to_end(&mut tail)
                })
                .map_err(|e| ArchiveError::io("cannot read", path, e))?;
            crate::private::create(&aside)
                .and_then(|mut f| {
                    f.write_all(&tail)?;
                    f.sync_all()
                })
                .map_err(|e| ArchiveError::io("cannot write", &aside, e))?;
            tracing::warn!(
                file = %path.display(),
                at = end.good_len,
                bytes = end.torn_bytes,
                aside = %aside.display(),
                "archive file ends in a torn write (the process died while appending; those sagas are still in the journal); cutting it off"
            );
        }
        Ok(end.good_len)
    }
}

/// `lines` as gzip members of at most [`MEMBER_MAX_BYTES`] uncompressed each.
fn compress(lines: &[Vec<u8>]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut member = GzEncoder::new(Vec::new(), Compression::default());
    let mut in_member = 0;
    for line in lines {
        if in_member > 0 && in_member + line.len() > MEMBER_MAX_BYTES {
            out.extend(member.finish()?);
            member = GzEncoder::new(Vec::new(), Compression::default());
            in_member = 0;
        }
        member.write_all(line)?;
        in_member += line.len();
    }
    out.extend(member.finish()?);
    Ok(out)
}

/// fsync of a directory: the names in it are durable.
fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ArchiveError::io("cannot sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(day: &str, lines: &[&str]) -> BTreeMap<String, Vec<Vec<u8>>> {
        let lines = lines
            .iter()
            .map(|l| format!("{l}\n").into_bytes())
            .collect();
        BTreeMap::from([(day.to_string(), lines)])
    }

    fn lines_of(path: &Path) -> (Vec<String>, FileEnd) {
        let mut lines = Vec::new();
        let end = read(path, &mut |l| {
            lines.push(String::from_utf8(l.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        (lines, end)
    }

    #[test]
    fn batches_append_as_members_that_read_as_one_gzip_stream() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let mut writer = ArchiveWriter::new(archive.clone());
        writer.append(&batch("2024-05-01", &["a", "b"])).unwrap();
        writer.append(&batch("2024-05-01", &["c"])).unwrap();
        writer.append(&batch("2024-05-02", &["d"])).unwrap();
        let path = archive.join("2024-05-01.jsonl.gz");
        let (lines, end) = lines_of(&path);
        assert_eq!(lines, ["a", "b", "c"]);
        assert_eq!(end.torn_bytes, 0);
        assert_eq!(end.good_len, fs::metadata(&path).unwrap().len());
        // Plain gzip readers see one stream.
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\nb\nc\n");
        let days: Vec<String> = list(&archive)
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(days, ["2024-05-01", "2024-05-02"]);
        assert_eq!(day_of("2024-05-01.jsonl.gz.torn-5"), None);
        assert_eq!(day_of("notes.jsonl.gz"), None);
    }

    #[test]
    fn a_torn_tail_is_cut_and_kept_aside_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let path = archive.join("2024-05-01.jsonl.gz");
        ArchiveWriter::new(archive.clone())
            .append(&batch("2024-05-01", &["a"]))
            .unwrap();
        let good = fs::metadata(&path).unwrap().len();
        // Half of a second member: the process died while appending it.
        let second = compress(&[b"b\n".to_vec()]).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&second[..second.len() / 2]).unwrap();
        drop(file);
        let (lines, end) = lines_of(&path);
        assert_eq!(lines, ["a"]);
        assert_eq!(end.good_len, good);
        assert_eq!(end.torn_bytes, (second.len() / 2) as u64);

        // A new writer (a restart) cuts it off, keeps it aside, appends after.
        ArchiveWriter::new(archive.clone())
            .append(&batch("2024-05-01", &["c"]))
            .unwrap();
        assert_eq!(lines_of(&path).0, ["a", "c"]);
        let aside = archive.join(format!("2024-05-01.jsonl.gz.torn-{good}"));
        assert_eq!(fs::read(aside).unwrap(), second[..second.len() / 2]);

        // A flipped byte in the first member, with a valid member after it.
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let err = read(&path, &mut |_| Ok(())).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Damaged { offset: 0, .. }),
            "{err}"
        );
        let err = ArchiveWriter::new(archive)
            .append(&batch("2024-05-01", &["d"]))
            .unwrap_err();
        assert!(err.to_string().contains("2024-05-01.jsonl.gz"), "{err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "a damaged file is left as it is"
        );
    }
}
