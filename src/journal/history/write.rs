//! Writing a segment: once, whole, durable on `Ok`.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufWriter, Write},
    path::Path,
};

use flate2::{Compression, write::DeflateEncoder};

use super::{
    FinishedSaga, HistoryError,
    bloom::Bloom,
    layout::{
        BLOCK_TARGET_BYTES, BlockEntry, FOOTER_VERSION, Footer, KeyEntry, MAGIC, OffsetEntry,
        Section, StoredSaga, key_hash,
    },
};
use crate::journal::kv::codec;

/// What a written segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub sagas: u64,
    pub events: u64,
    pub bytes: u64,
}

/// Writes `sagas` as the segment `path`: to `path.tmp` first, synced, then
/// renamed into place and the directory synced, so `path` is either absent or
/// whole. Refuses (writing nothing) a saga that is not final, whose events
/// are not its own in `seq` order from 1, or that is given twice.
pub fn write_segment(path: &Path, mut sagas: Vec<FinishedSaga>) -> Result<Written, HistoryError> {
    for saga in &sagas {
        check_finished(saga)?;
    }
    sagas.sort_unstable_by_key(FinishedSaga::id);
    if let Some(pair) = sagas.windows(2).find(|p| p[0].id() == p[1].id()) {
        return Err(HistoryError::NotFinished {
            saga: pair[0].id(),
            why: "it is given twice".into(),
        });
    }
    let tmp = path.with_extension("tmp");
    let file = crate::private::create(&tmp).map_err(|e| HistoryError::io("creating", &tmp, e))?;
    let mut out = Out {
        file: BufWriter::new(file),
        pos: 0,
    };
    let footer = write_file(&mut out, &sagas).map_err(|e| HistoryError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| HistoryError::io("renaming into place", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HistoryError::io("syncing the directory", dir, e))?;
    Ok(Written {
        sagas: footer.sagas,
        events: footer.events,
        bytes: out.pos,
    })
}

/// Writes the whole file, `sagas` sorted by id, and syncs it; its footer.
fn write_file(out: &mut Out, sagas: &[FinishedSaga]) -> std::io::Result<Footer> {
    out.put(MAGIC)?;
    let (blocks, offsets) = write_blocks(out, sagas)?;
    let blocks = out.section(blocks.iter().map(BlockEntry::encode))?;
    let mut keys: Vec<KeyEntry> = sagas
        .iter()
        .filter_map(|s| {
            s.idempotency_key.as_deref().map(|k| KeyEntry {
                hash: key_hash(k),
                saga: s.id(),
            })
        })
        .collect();
    keys.sort_unstable();
    let bloom = Bloom::of(keys.iter().map(|k| k.hash));
    let key_section = out.section(keys.iter().map(KeyEntry::encode))?;
    let offset_section = out.section(offsets.iter().map(OffsetEntry::encode))?;
    let ids = (sagas.first(), sagas.last());
    let footer = Footer {
        version: FOOTER_VERSION,
        sagas: sagas.len() as u64,
        events: offsets.len() as u64,
        first_id: ids.0.map_or([0; 16], |s| *s.id().as_bytes()),
        last_id: ids.1.map_or([0; 16], |s| *s.id().as_bytes()),
        min_offset: offsets.first().map_or(0, |o| o.offset),
        max_offset: offsets.last().map_or(0, |o| o.offset),
        last_end_ms: sagas
            .iter()
            .filter_map(|s| s.events.last())
            .map(|e| e.at.millis())
            .max()
            .unwrap_or(0),
        blocks,
        keys: key_section,
        offsets: offset_section,
        definitions: sagas
            .iter()
            .map(|s| s.summary.definition.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        statuses: {
            let mut statuses: Vec<_> = sagas.iter().map(|s| s.summary.status).collect();
            statuses.sort_by_key(|s| *s as u8);
            statuses.dedup();
            statuses
        },
        bloom,
    };
    let bytes = postcard::to_stdvec(&footer).expect("a footer serialises");
    out.put(&bytes)?;
    out.put(&(bytes.len() as u32).to_le_bytes())?;
    out.put(&crc32fast::hash(&bytes).to_le_bytes())?;
    out.put(MAGIC)?;
    out.file.flush()?;
    out.file.get_ref().sync_data()?;
    Ok(footer)
}

/// A segment holds final sagas only, whole.
fn check_finished(saga: &FinishedSaga) -> Result<(), HistoryError> {
    let refuse = |why: String| HistoryError::NotFinished {
        saga: saga.id(),
        why,
    };
    if !saga.summary.status.is_final() {
        return Err(refuse(format!(
            "it is {:?}, not COMPLETED or COMPENSATED",
            saga.summary.status
        )));
    }
    for (i, event) in saga.events.iter().enumerate() {
        if event.saga != saga.id() || event.seq != i as u64 + 1 {
            return Err(refuse(format!(
                "event {} is seq {} of saga {}, expected seq {} of its own",
                i + 1,
                event.seq,
                event.saga,
                i + 1
            )));
        }
    }
    if saga.events.is_empty() {
        return Err(refuse("it has no events".into()));
    }
    Ok(())
}

/// The file being written, and how far.
struct Out {
    file: BufWriter<File>,
    pos: u64,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes fixed-size entries as one section.
    fn section<const N: usize>(
        &mut self,
        entries: impl Iterator<Item = [u8; N]>,
    ) -> std::io::Result<Section> {
        let pos = self.pos;
        let mut crc = crc32fast::Hasher::new();
        for entry in entries {
            crc.update(&entry);
            self.put(&entry)?;
        }
        Ok(Section {
            pos,
            len: self.pos - pos,
            crc: crc.finalize(),
        })
    }
}

/// Writes the sagas (sorted by id) in blocks of about [`BLOCK_TARGET_BYTES`];
/// the block index and the offset table (sorted by offset).
fn write_blocks(
    out: &mut Out,
    sagas: &[FinishedSaga],
) -> std::io::Result<(Vec<BlockEntry>, Vec<OffsetEntry>)> {
    let mut blocks = Vec::new();
    let mut offsets = Vec::new();
    let mut pending: Vec<StoredSaga> = Vec::new();
    let mut pending_bytes = 0;
    let mut first = None;
    for (i, saga) in sagas.iter().enumerate() {
        let stored = StoredSaga {
            id: *saga.id().as_bytes(),
            summary: codec::encode(&saga.summary),
            idempotency_key: saga.idempotency_key.clone(),
            events: saga
                .events
                .iter()
                .map(|e| serde_bytes::ByteBuf::from(codec::encode(e)))
                .collect(),
        };
        pending_bytes +=
            stored.summary.len() + stored.events.iter().map(|e| e.len()).sum::<usize>();
        let block = blocks.len() as u32;
        offsets.extend(saga.events.iter().map(|e| OffsetEntry {
            offset: e.offset.get(),
            block,
        }));
        first.get_or_insert(saga.id());
        pending.push(stored);
        if pending_bytes >= BLOCK_TARGET_BYTES || i + 1 == sagas.len() {
            let body = postcard::to_stdvec(&pending).expect("sagas serialise");
            let mut deflate = DeflateEncoder::new(Vec::new(), Compression::fast());
            deflate.write_all(&body)?;
            let compressed = deflate.finish()?;
            blocks.push(BlockEntry {
                first: first.take().expect("a block has a first saga"),
                last: saga.id(),
                pos: out.pos,
                len: compressed.len() as u32,
                crc: crc32fast::hash(&compressed),
                count: pending.len() as u32,
            });
            out.put(&compressed)?;
            pending.clear();
            pending_bytes = 0;
        }
    }
    offsets.sort_unstable();
    Ok((blocks, offsets))
}
