//! The bytes of a segment file.
//!
//! ```text
//!  MAGIC
//!  block 0 … block B-1      each [deflate of postcard Vec<StoredSaga>], sagas by id
//!  block index              B × BlockEntry (56 bytes): id range, place, crc, count
//!  key table                K × KeyEntry (24 bytes): key hash, saga id; by hash
//!  offset table             E × OffsetEntry (12 bytes): event offset, block; by offset
//!  footer                   postcard Footer
//!  [footer length u32][footer crc32 u32] MAGIC
//! ```
//!
//! Integers are little-endian; saga ids are their 16 bytes (big-endian, so
//! byte order is creation order). The fixed-size entries let a reader
//! binary-search a table with `pread`s, holding none of it in memory; each
//! table's crc32 is in the footer and is checked by `check`, each block's by
//! every read of it.

use serde::{Deserialize, Serialize};

use super::bloom::Bloom;
use crate::saga::{SagaId, SagaStatus};

/// First and last bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"SAGADHS1";
/// The footer's format.
pub const FOOTER_VERSION: u8 = 1;
/// Bytes after the footer: its length, its crc32, the magic.
pub const TRAILER_LEN: u64 = 4 + 4 + MAGIC.len() as u64;
/// Uncompressed bytes a block is cut at: a read decodes one block, so this
/// bounds what a `GetSaga` of an old saga inflates.
pub const BLOCK_TARGET_BYTES: usize = 64 * 1024;

/// One saga inside a block. The records are byte strings to postcard
/// (`serde_bytes`): as plain `Vec<u8>` they would be sequences, decoded a
/// byte at a time.
#[derive(Serialize, Deserialize)]
pub struct StoredSaga {
    pub id: [u8; 16],
    /// `codec::encode(&SagaSummary)`.
    #[serde(with = "serde_bytes")]
    pub summary: Vec<u8>,
    pub idempotency_key: Option<String>,
    /// `codec::encode(&Event)` of each event, in `seq` order.
    pub events: Vec<serde_bytes::ByteBuf>,
}

/// Where a section of the file is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub pos: u64,
    pub len: u64,
    /// crc32 of its bytes.
    pub crc: u32,
}

/// What an open reads: everything but the sagas and the tables.
#[derive(Debug, Serialize, Deserialize)]
pub struct Footer {
    pub version: u8,
    pub sagas: u64,
    pub events: u64,
    pub first_id: [u8; 16],
    pub last_id: [u8; 16],
    pub min_offset: u64,
    pub max_offset: u64,
    /// When its last saga ended (milliseconds since the epoch): retention
    /// removes a segment whole once this is past its cutoff.
    pub last_end_ms: u64,
    pub blocks: Section,
    pub keys: Section,
    pub offsets: Section,
    /// The definitions and the states of the sagas in it: a listing filtered
    /// on one it lacks skips the segment.
    pub definitions: Vec<String>,
    pub statuses: Vec<SagaStatus>,
    pub bloom: Bloom,
}

/// An entry of the block index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    pub first: SagaId,
    pub last: SagaId,
    pub pos: u64,
    pub len: u32,
    pub crc: u32,
    pub count: u32,
}

impl BlockEntry {
    pub const LEN: usize = 56;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(self.first.as_bytes());
        out[16..32].copy_from_slice(self.last.as_bytes());
        out[32..40].copy_from_slice(&self.pos.to_le_bytes());
        out[40..44].copy_from_slice(&self.len.to_le_bytes());
        out[44..48].copy_from_slice(&self.crc.to_le_bytes());
        out[48..52].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8; Self::LEN]) -> Self {
        Self {
            first: SagaId::from_bytes(b[..16].try_into().expect("16 bytes")),
            last: SagaId::from_bytes(b[16..32].try_into().expect("16 bytes")),
            pos: u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(b[40..44].try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(b[44..48].try_into().expect("4 bytes")),
            count: u32::from_le_bytes(b[48..52].try_into().expect("4 bytes")),
        }
    }
}

/// An entry of the key table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyEntry {
    pub hash: u64,
    pub saga: SagaId,
}

impl KeyEntry {
    pub const LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.hash.to_le_bytes());
        out[8..].copy_from_slice(self.saga.as_bytes());
        out
    }

    pub fn decode(b: &[u8; Self::LEN]) -> Self {
        Self {
            hash: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            saga: SagaId::from_bytes(b[8..].try_into().expect("16 bytes")),
        }
    }
}

/// An entry of the offset table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffsetEntry {
    pub offset: u64,
    pub block: u32,
}

impl OffsetEntry {
    pub const LEN: usize = 12;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..].copy_from_slice(&self.block.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8; Self::LEN]) -> Self {
        Self {
            offset: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            block: u32::from_le_bytes(b[8..].try_into().expect("4 bytes")),
        }
    }
}

/// FNV-1a, 64 bits: the hash of an idempotency key in the key table and the
/// Bloom filter. Written out rather than taken from `std` because it is part
/// of the file format: `std`'s hashers may change between Rust releases.
pub fn key_hash(key: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let block = BlockEntry {
            first: SagaId::generate(),
            last: SagaId::generate(),
            pos: 1 << 40,
            len: 65_000,
            crc: 0xdead_beef,
            count: 61,
        };
        assert_eq!(BlockEntry::decode(&block.encode()), block);
        let key = KeyEntry {
            hash: u64::MAX - 3,
            saga: SagaId::generate(),
        };
        assert_eq!(KeyEntry::decode(&key.encode()), key);
        let offset = OffsetEntry {
            offset: 1 << 50,
            block: 7,
        };
        assert_eq!(OffsetEntry::decode(&offset.encode()), offset);
    }

    #[test]
    fn the_key_hash_is_fnv_1a() {
        // The published FNV-1a 64 test vectors: the format depends on them.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash("foobar"), 0x8594_4171_f739_67e8);
    }
}
