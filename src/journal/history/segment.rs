//! Reading a segment: the footer at open, the rest by `pread` when asked.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use flate2::read::DeflateDecoder;

use super::{
    FinishedSaga, HistoryError,
    layout::{
        BlockEntry, FOOTER_VERSION, Footer, KeyEntry, MAGIC, OffsetEntry, Section, StoredSaga,
        TRAILER_LEN, key_hash,
    },
};
use crate::{
    journal::{ListQuery, SagaSummary, kv::codec},
    saga::{Event, SagaId, SagaState, Timestamp},
};

/// Most bytes a block may inflate to: well above what the writer makes
/// (`BLOCK_TARGET_BYTES` plus one saga), so that damage cannot make a read
/// allocate without bound.
const BLOCK_INFLATED_MAX: u64 = 64 * 1024 * 1024;
/// Blocks a feed read keeps decoded at once.
const DECODED_BLOCKS: usize = 4;

/// An open segment file.
pub struct Segment {
    file: SegmentFile,
    footer: Footer,
}

/// The file under a segment, and its name for errors: all an open has
/// before it has read the footer.
struct SegmentFile {
    path: PathBuf,
    file: File,
}

/// What [`Segment::check`] verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentCheck {
    pub sagas: u64,
    pub events: u64,
    /// Every event's offset, ascending: what the segment adds to the feed.
    pub offsets: Vec<u64>,
}

impl Segment {
    /// Opens `path`, reading its footer (and nothing else).
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let file = File::open(path).map_err(|e| HistoryError::io("opening", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| HistoryError::io("reading the size of", path, e))?
            .len();
        let partial = SegmentFile {
            path: path.to_path_buf(),
            file,
        };
        if len < MAGIC.len() as u64 + TRAILER_LEN {
            return Err(partial.damaged(0, format!("{len} bytes is too short for a segment")));
        }
        let head = partial.read_at(0, MAGIC.len())?;
        if head != MAGIC {
            return Err(partial.damaged(0, "it does not start as a history segment"));
        }
        let trailer_at = len - TRAILER_LEN;
        let trailer = partial.read_at(trailer_at, TRAILER_LEN as usize)?;
        if &trailer[8..] != MAGIC {
            return Err(partial.damaged(
                trailer_at,
                "it does not end as a history segment (a write cut short?)",
            ));
        }
        let footer_len = u64::from(u32::from_le_bytes(trailer[..4].try_into().expect("4")));
        let footer_crc = u32::from_le_bytes(trailer[4..8].try_into().expect("4"));
        let Some(footer_at) = trailer_at
            .checked_sub(footer_len)
            .filter(|&at| at >= MAGIC.len() as u64)
        else {
            return Err(partial.damaged(trailer_at, "its footer length is out of the file"));
        };
        let bytes = partial.read_at(footer_at, footer_len as usize)?;
        if crc32fast::hash(&bytes) != footer_crc {
            return Err(partial.damaged(footer_at, "its footer's checksum does not match"));
        }
        let footer: Footer = match postcard::from_bytes(&bytes) {
            Ok(footer) => footer,
            // The version is the footer's first byte, whatever follows.
            Err(_) if bytes.first().is_some_and(|&v| v > FOOTER_VERSION) => {
                return Err(partial.damaged(
                    footer_at,
                    format!(
                        "its footer is version {}, newer than this build reads ({FOOTER_VERSION})",
                        bytes[0]
                    ),
                ));
            }
            Err(e) => return Err(partial.damaged(footer_at, format!("its footer: {e}"))),
        };
        if footer.version != FOOTER_VERSION {
            return Err(partial.damaged(
                footer_at,
                format!(
                    "its footer is version {}; this build reads version {FOOTER_VERSION}",
                    footer.version
                ),
            ));
        }
        for (name, section, entry) in [
            ("block index", footer.blocks, BlockEntry::LEN),
            ("key table", footer.keys, KeyEntry::LEN),
            ("offset table", footer.offsets, OffsetEntry::LEN),
        ] {
            let inside = section.pos >= MAGIC.len() as u64
                && section
                    .pos
                    .checked_add(section.len)
                    .is_some_and(|end| end <= footer_at);
            if !inside || section.len % entry as u64 != 0 {
                return Err(partial.damaged(
                    footer_at,
                    format!("its footer places the {name} out of the file"),
                ));
            }
        }
        Ok(Segment {
            file: partial,
            footer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Sagas in it.
    pub fn sagas(&self) -> u64 {
        self.footer.sagas
    }

    /// The lowest and the highest offset of its events.
    pub fn offsets(&self) -> (u64, u64) {
        (self.footer.min_offset, self.footer.max_offset)
    }

    /// When its last saga ended.
    pub fn last_end(&self) -> Timestamp {
        Timestamp(self.footer.last_end_ms)
    }

    /// The saga `id`, if this segment holds it.
    pub fn get(&self, id: SagaId) -> Result<Option<FinishedSaga>, HistoryError> {
        let (first, last) = self.ids();
        if self.footer.sagas == 0 || id < first || id > last {
            return Ok(None);
        }
        // The last block whose first id is at or before `id`.
        let blocks = self.blocks();
        let i = self.partition(blocks, |i| Ok(self.block(i)?.first <= id))?;
        if i == 0 {
            return Ok(None);
        }
        let block = self.block(i - 1)?;
        if id > block.last {
            return Ok(None);
        }
        let stored = self.read_block(&block)?;
        stored
            .into_iter()
            .find(|s| s.id == *id.as_bytes())
            .map(|s| self.decode_saga(&block, s))
            .transpose()
    }

    /// The ids of its sagas, in id order: each block is read and checked,
    /// its events left undecoded.
    pub fn saga_ids(&self) -> Result<Vec<SagaId>, HistoryError> {
        let mut ids = Vec::with_capacity(self.footer.sagas as usize);
        for i in 0..self.blocks() {
            let block = self.block(i)?;
            ids.extend(
                self.read_block(&block)?
                    .iter()
                    .map(|s| SagaId::from_bytes(s.id)),
            );
        }
        Ok(ids)
    }

    /// The saga started with idempotency key `key`, if this segment holds it.
    pub fn saga_for_key(&self, key: &str) -> Result<Option<SagaId>, HistoryError> {
        let hash = key_hash(key);
        if !self.footer.bloom.may_hold(hash) {
            return Ok(None);
        }
        let keys = self.footer.keys.len / KeyEntry::LEN as u64;
        let mut i = self.partition(keys, |i| Ok(self.key(i)?.hash < hash))?;
        while i < keys {
            let entry = self.key(i)?;
            if entry.hash != hash {
                break;
            }
            // Another key of the same hash is possible: the saga says.
            if let Some(saga) = self.get(entry.saga)?
                && saga.idempotency_key.as_deref() == Some(key)
            {
                return Ok(Some(entry.saga));
            }
            i += 1;
        }
        Ok(None)
    }

    /// The page `query` asks for, of the sagas in this segment.
    pub fn list(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, HistoryError> {
        let ListQuery {
            status,
            before,
            limit,
            ..
        } = *query;
        let definition = query.definition.as_deref();
        let mut out = Vec::new();
        // Nothing older than the cursor (its first id is not), or no saga of
        // the state or definition asked for: answered from the footer, no read.
        let excluded = status.is_some_and(|s| !self.footer.statuses.contains(&s))
            || definition.is_some_and(|d| !self.footer.definitions.iter().any(|x| x == d))
            || before.is_some_and(|b| self.ids().0 >= b);
        if self.footer.sagas == 0 || limit == 0 || excluded {
            return Ok(out);
        }
        // Blocks whose first id is before `before` may hold older sagas.
        let mut end = match before {
            None => self.blocks(),
            Some(before) => self.partition(self.blocks(), |i| Ok(self.block(i)?.first < before))?,
        };
        while end > 0 && out.len() < limit {
            end -= 1;
            let block = self.block(end)?;
            for stored in self.read_block(&block)?.into_iter().rev() {
                let id = SagaId::from_bytes(stored.id);
                if before.is_some_and(|b| id >= b) {
                    continue;
                }
                let summary: SagaSummary = self.decode(&block, &stored.summary)?;
                if status.is_some_and(|s| s != summary.status)
                    || definition.is_some_and(|d| d != summary.definition)
                {
                    continue;
                }
                out.push(summary);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` events with an offset above `after`, in offset order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, HistoryError> {
        let mut out = Vec::new();
        if self.footer.events == 0 || after >= self.footer.max_offset {
            return Ok(out);
        }
        let entries = self.footer.offsets.len / OffsetEntry::LEN as u64;
        let mut i = self.partition(entries, |i| Ok(self.offset(i)?.offset <= after))?;
        // The events of the blocks read last, by offset, most recent first:
        // concurrent sagas' events alternate between neighbouring blocks.
        let mut decoded: Vec<(u32, BTreeMap<u64, Event>)> = Vec::new();
        while i < entries && out.len() < limit {
            let entry = self.offset(i)?;
            match decoded.iter().position(|(b, _)| *b == entry.block) {
                Some(at) => decoded[..=at].rotate_right(1),
                None => {
                    decoded.truncate(DECODED_BLOCKS - 1);
                    decoded.insert(0, (entry.block, self.block_events(entry.block)?));
                }
            }
            let (_, events) = &mut decoded[0];
            let event = events.remove(&entry.offset).ok_or_else(|| {
                self.damaged(
                    self.footer.offsets.pos + i * OffsetEntry::LEN as u64,
                    format!("offset {} is not in block {}", entry.offset, entry.block),
                )
            })?;
            out.push(event);
            i += 1;
        }
        Ok(out)
    }

    /// Reads every byte: each table's checksum, each block's, every saga's
    /// events folded to the final state its summary says, and every table
    /// against the sagas.
    pub fn check(&self) -> Result<SegmentCheck, HistoryError> {
        self.checked_table("block index", self.footer.blocks)?;
        let key_table = self.checked_table("key table", self.footer.keys)?;
        let offset_table = self.checked_table("offset table", self.footer.offsets)?;
        let mut sagas = 0;
        let mut offsets = Vec::new();
        let mut keys = Vec::new();
        let mut previous: Option<SagaId> = None;
        for b in 0..self.blocks() {
            let block = self.block(b)?;
            let stored = self.read_block(&block)?;
            if stored.len() != block.count as usize {
                return Err(self.damaged(
                    block.pos,
                    "the block holds another count of sagas than its index says",
                ));
            }
            for s in stored {
                let saga = self.decode_saga(&block, s)?;
                let id = saga.id();
                if previous.is_some_and(|p| p >= id) || id < block.first || id > block.last {
                    return Err(self.damaged(block.pos, format!("saga {id} is out of order")));
                }
                previous = Some(id);
                let state = SagaState::fold(&saga.events).map_err(|e| {
                    self.damaged(block.pos, format!("saga {id}: its events do not fold: {e}"))
                })?;
                if state.status != saga.summary.status || !state.status.is_final() {
                    return Err(self.damaged(
                        block.pos,
                        format!(
                            "saga {id}: its events end {:?}, its summary says {:?}",
                            state.status, saga.summary.status
                        ),
                    ));
                }
                offsets.extend(saga.events.iter().map(|e| OffsetEntry {
                    offset: e.offset.get(),
                    block: b as u32,
                }));
                if let Some(key) = &saga.idempotency_key {
                    keys.push(KeyEntry {
                        hash: key_hash(key),
                        saga: id,
                    });
                }
                sagas += 1;
            }
        }
        offsets.sort_unstable();
        keys.sort_unstable();
        let written: Vec<u8> = offsets.iter().flat_map(|o| o.encode()).collect();
        if offset_table != written {
            return Err(self.damaged(
                self.footer.offsets.pos,
                "the offset table does not match the events",
            ));
        }
        let written: Vec<u8> = keys.iter().flat_map(|k| k.encode()).collect();
        if key_table != written {
            return Err(self.damaged(
                self.footer.keys.pos,
                "the key table does not match the sagas' keys",
            ));
        }
        if sagas != self.footer.sagas || offsets.len() as u64 != self.footer.events {
            return Err(self.damaged(
                self.footer.blocks.pos,
                format!(
                    "it holds {sagas} sagas and {} events, its footer says {} and {}",
                    offsets.len(),
                    self.footer.sagas,
                    self.footer.events
                ),
            ));
        }
        Ok(SegmentCheck {
            sagas,
            events: offsets.len() as u64,
            offsets: offsets.iter().map(|o| o.offset).collect(),
        })
    }

    /// A table's bytes, once its checksum matched.
    fn checked_table(&self, name: &str, section: Section) -> Result<Vec<u8>, HistoryError> {
        let bytes = self.read_at(section.pos, section.len as usize)?;
        if crc32fast::hash(&bytes) != section.crc {
            return Err(self.damaged(section.pos, format!("the {name}'s checksum does not match")));
        }
        Ok(bytes)
    }

    /// Its lowest and highest saga id (meaningless when it holds none).
    pub fn ids(&self) -> (SagaId, SagaId) {
        (
            SagaId::from_bytes(self.footer.first_id),
            SagaId::from_bytes(self.footer.last_id),
        )
    }

    pub(super) fn blocks(&self) -> u64 {
        self.footer.blocks.len / BlockEntry::LEN as u64
    }

    /// The first index in `0..n` for which `before` is false (`before` is
    /// true for a prefix of the range): a binary search by `pread`s.
    fn partition(
        &self,
        n: u64,
        before: impl Fn(u64) -> Result<bool, HistoryError>,
    ) -> Result<u64, HistoryError> {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(mid)? {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    fn block(&self, i: u64) -> Result<BlockEntry, HistoryError> {
        let at = self.footer.blocks.pos + i * BlockEntry::LEN as u64;
        let bytes = self.read_at(at, BlockEntry::LEN)?;
        Ok(BlockEntry::decode(
            bytes.as_slice().try_into().expect("read whole"),
        ))
    }

    fn key(&self, i: u64) -> Result<KeyEntry, HistoryError> {
        let at = self.footer.keys.pos + i * KeyEntry::LEN as u64;
        let bytes = self.read_at(at, KeyEntry::LEN)?;
        Ok(KeyEntry::decode(
            bytes.as_slice().try_into().expect("read whole"),
        ))
    }

    fn offset(&self, i: u64) -> Result<OffsetEntry, HistoryError> {
        let at = self.footer.offsets.pos + i * OffsetEntry::LEN as u64;
        let bytes = self.read_at(at, OffsetEntry::LEN)?;
        Ok(OffsetEntry::decode(
            bytes.as_slice().try_into().expect("read whole"),
        ))
    }

    fn read_block(&self, block: &BlockEntry) -> Result<Vec<StoredSaga>, HistoryError> {
        let compressed = self.read_at(block.pos, block.len as usize)?;
        if crc32fast::hash(&compressed) != block.crc {
            return Err(self.damaged(block.pos, "a block's checksum does not match"));
        }
        let mut body = Vec::new();
        DeflateDecoder::new(compressed.as_slice())
            .take(BLOCK_INFLATED_MAX)
            .read_to_end(&mut body)
            .map_err(|e| self.damaged(block.pos, format!("a block does not inflate: {e}")))?;
        postcard::from_bytes(&body)
            .map_err(|e| self.damaged(block.pos, format!("a block does not decode: {e}")))
    }

    /// The events of block `b`, by offset.
    fn block_events(&self, b: u32) -> Result<BTreeMap<u64, Event>, HistoryError> {
        if u64::from(b) >= self.blocks() {
            return Err(self.damaged(
                self.footer.offsets.pos,
                format!("an offset names block {b}, past the last"),
            ));
        }
        let block = self.block(u64::from(b))?;
        let mut events = BTreeMap::new();
        for stored in self.read_block(&block)? {
            for bytes in &stored.events {
                let event: Event = self.decode(&block, bytes)?;
                events.insert(event.offset.get(), event);
            }
        }
        Ok(events)
    }

    fn decode_saga(
        &self,
        block: &BlockEntry,
        stored: StoredSaga,
    ) -> Result<FinishedSaga, HistoryError> {
        let summary: SagaSummary = self.decode(block, &stored.summary)?;
        if summary.id != SagaId::from_bytes(stored.id) {
            return Err(self.damaged(
                block.pos,
                format!(
                    "saga {} has the summary of {}",
                    SagaId::from_bytes(stored.id),
                    summary.id
                ),
            ));
        }
        let events = stored
            .events
            .iter()
            .map(|bytes| self.decode(block, bytes))
            .collect::<Result<Vec<Event>, _>>()?;
        Ok(FinishedSaga {
            summary,
            idempotency_key: stored.idempotency_key,
            events,
        })
    }

    /// One of the journal's records, read in any format version it reads.
    fn decode<T: codec::Record>(
        &self,
        block: &BlockEntry,
        bytes: &[u8],
    ) -> Result<T, HistoryError> {
        codec::decode(b"history", bytes).map_err(|e| self.damaged(block.pos, e.to_string()))
    }

    fn read_at(&self, at: u64, len: usize) -> Result<Vec<u8>, HistoryError> {
        self.file.read_at(at, len)
    }

    fn damaged(&self, at: u64, why: impl Into<String>) -> HistoryError {
        self.file.damaged(at, why)
    }
}

impl SegmentFile {
    fn read_at(&self, at: u64, len: usize) -> Result<Vec<u8>, HistoryError> {
        let mut bytes = vec![0; len];
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| HistoryError::io("reading", &self.path, e))?;
        Ok(bytes)
    }

    fn damaged(&self, at: u64, why: impl Into<String>) -> HistoryError {
        HistoryError::Damaged {
            path: self.path.clone(),
            at,
            why: why.into(),
        }
    }
}
