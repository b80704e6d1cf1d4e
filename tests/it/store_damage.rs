//! probe
use std::path::Path;
use crate::damaged_journal_probe as d;
use sagad::journal::store::{KvStore, SledStore};

const SEG: usize = 8 * 1024 * 1024;

fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let b0 = *buf.first()?;
    Some(match b0 {
        0..=240 => (b0 as u64, 1),
        241..=248 => (240 + 256 * (b0 as u64 - 241) + *buf.get(1)? as u64, 2),
        249 => (2288 + 256 * *buf.get(1)? as u64 + *buf.get(2)? as u64, 3),
        other => {
            let sz = other as usize - 247;
            let mut a = [0u8; 8];
            a[..sz].copy_from_slice(buf.get(1..=sz)?);
            (u64::from_le_bytes(a), sz + 1)
        }
    })
}
fn varint_size(v: u64) -> usize {
    if v <= 240 { 1 } else if v <= 2287 { 2 } else if v <= 67823 { 3 } else if v <= 0xFF_FFFF { 4 } else if v <= 0xFFFF_FFFF { 5 } else { 9 }
}
fn put_varint(v: u64, out: &mut Vec<u8>) {
    if v <= 240 { out.push(v as u8) } else if v <= 2287 { out.push(((v - 240) / 256 + 241) as u8); out.push(((v - 240) % 256) as u8) } else if v <= 67823 { out.push(249); out.push(((v - 2288) / 256) as u8); out.push(((v - 2288) % 256) as u8) } else if v <= 0xFF_FFFF { out.push(250); out.extend_from_slice(&v.to_le_bytes()[..3]) } else { out.push(251); out.extend_from_slice(&v.to_le_bytes()[..4]) }
}

/// (kind, len, header_len) if a valid message starts at pos.
fn message(seg: &[u8], pos: usize, segnum: u64) -> Option<(u8, usize, usize)> {
    let h = seg.get(pos..)?;
    let crc = u32::from_le_bytes(h.get(0..4)?.try_into().ok()?);
    let kind = *h.get(4)?;
    if !(1..=11).contains(&kind) { return None; }
    let (len, a) = varint(&h[5..])?;
    let (sn, b) = varint(&h[5 + a..])?;
    let (_pid, c) = varint(&h[5 + a + b..])?;
    let hl = 5 + a + b + c;
    if sn != segnum { return None; }
    let len = len as usize;
    let body = h.get(hl..hl + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(body);
    hasher.update(&h[4..hl]);
    if hasher.finalize() ^ 0xFFFF_FFFF != crc { return None; }
    Some((kind, len, hl))
}

fn canceled(total: usize, segnum: u64) -> Vec<u8> {
    for lsz in 1..=5 {
        let hl = 4 + 1 + lsz + varint_size(segnum) + 1;
        if total < hl { continue; }
        let len = total - hl;
        if varint_size(len as u64) != lsz { continue; }
        let mut head = vec![1u8];
        put_varint(len as u64, &mut head);
        put_varint(segnum, &mut head);
        put_varint(0, &mut head);
        let body = vec![0u8; len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&body);
        hasher.update(&head);
        let crc = hasher.finalize() ^ 0xFFFF_FFFF;
        let mut out = crc.to_le_bytes().to_vec();
        out.extend(head);
        out.extend(body);
        assert_eq!(out.len(), total);
        return out;
    }
    panic!("cannot cancel {total}");
}

fn mend(db: &Path) -> Vec<(usize, usize)> {
    let mut bytes = std::fs::read(db).unwrap();
    let mut spans = vec![];
    let nseg = bytes.len().div_ceil(SEG);
    for s in 0..nseg {
        let base = s * SEG;
        let end = (base + SEG).min(bytes.len());
        let hdr = &bytes[base..base + 20];
        let crc = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) ^ 0xFFFF_FFFF;
        if crc32fast::hash(&hdr[4..20]) != crc { eprintln!("segment {s} header bad"); continue; }
        let lsn = i64::from_le_bytes(hdr[4..12].try_into().unwrap()) ^ 0x7FFF_FFFF_FFFF_FFFF;
        let segnum = lsn as u64 / SEG as u64;
        let mut pos = base + 20;
        while pos + 32 <= base + SEG && pos < end {
            match message(&bytes[..end], pos, segnum) {
                Some((2, _, _)) => break,
                Some((_, len, hl)) => pos += hl + len,
                None => {
                    let data_end = bytes[pos..end].iter().rposition(|b| *b != 0).map(|p| pos + p + 1);
                    let Some(data_end) = data_end else { break };
                    let next = (pos + 1..data_end).find(|p| message(&bytes[..end], *p, segnum).is_some()).unwrap_or(data_end);
                    eprintln!("damage at {pos}..{next}");
                    let c = canceled(next - pos, segnum);
                    bytes[pos..next].copy_from_slice(&c);
                    spans.push((pos, next));
                    pos = next;
                }
            }
        }
    }
    std::fs::write(db, &bytes).unwrap();
    spans
}

#[tokio::test]
async fn probe() {
    let original = tempfile::tempdir().unwrap();
    let acknowledged = d::build(original.path()).await;
    assert_eq!(d::open(original.path(), &acknowledged).await, Ok(40));
    let keys: Vec<Vec<u8>> = {
        let s = SledStore::open(original.path()).unwrap();
        s.scan(b"").unwrap().into_iter().map(|(k, _)| k).collect()
    };
    let total = keys.len();
    eprintln!("total keys {total}");
    {
        let copy = tempfile::tempdir().unwrap();
        d::copy_dir(original.path(), copy.path());
        for e in std::fs::read_dir(copy.path().join("journal")).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("snap") { std::fs::remove_file(p).unwrap(); }
        }
        let s = SledStore::open(copy.path()).unwrap();
        eprintln!("without snapshot: {} keys", s.scan(b"").unwrap().len());
    }
    let end = d::records_end(&original.path().join("journal/db"));
    let snap = std::fs::read_dir(original.path().join("journal")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("snap")).unwrap();
    let snap_name = snap.file_name().unwrap().to_owned();
    let snap_len = std::fs::metadata(&snap).unwrap().len() as usize;
    let mut cases: Vec<(String, usize)> = (0..20).map(|at| ("db".to_string(), at)).collect();
    cases.extend((0..8).map(|n| (snap_name.to_string_lossy().to_string(), n * snap_len / 8)));
    cases.extend((0..6).map(|n| ("conf".to_string(), n * 63 / 6)));
    cases.extend([("db".to_string(), end + 100), ("db".to_string(), 8388600)]);
    for (file, at) in cases {
        let copy = tempfile::tempdir().unwrap();
        d::copy_dir(original.path(), copy.path());
        let db = copy.path().join("journal").join(&file);
        let mut bytes = std::fs::read(&db).unwrap();
        bytes[at] ^= 0x55;
        std::fs::write(&db, &bytes).unwrap();
        let plain = std::panic::catch_unwind(|| SledStore::open(copy.path()).map(|s| s.scan(b"").map(|v| v.len()).map_err(|e| e.to_string())).map_err(|e| e.to_string()));
        let spans = mend(&copy.path().join("journal/db"));
        let r = std::panic::catch_unwind(|| {
            let s = SledStore::open(copy.path()).map_err(|e| e.to_string())?;
            let mut ok = 0; let mut bad = 0;
            for k in &keys { match s.get(k) { Ok(Some(_)) => ok += 1, Ok(None) => bad += 1000, Err(_) => bad += 1 } }
            Ok::<_, String>((ok, bad))
        });
        eprintln!("{file} at={at}: plain {:?} spans={spans:?} -> {:?}", plain.map_err(|_| "panic"), r.map_err(|_| "panic"));
    }
}
