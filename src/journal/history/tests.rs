use std::{collections::HashSet, path::Path};

use super::*;
use crate::{
    journal::ListQuery,
    saga::{EventKind, Offset, SagaState, SagaStatus},
    testing,
};

/// `n` finished sagas: every third compensated, every fifth of definition
/// `refunds`, every other one with an idempotency key; their events' offsets
/// interleaved across sagas as concurrent sagas' are.
fn finished(n: usize) -> Vec<FinishedSaga> {
    let mut histories: Vec<(Vec<Event>, Option<String>)> = (0..n)
        .map(|i| {
            let key = (i % 2 == 0).then(|| format!("order-{i}"));
            let events = match (i % 3, i % 5) {
                (0, 0) => testing::cancelled("refunds", key.as_deref(), EventKind::SagaCompensated),
                (0, _) => testing::cancelled("shop", key.as_deref(), EventKind::SagaCompensated),
                _ => testing::completing(key.as_deref(), 1_000 + i as u64),
            };
            (events, key)
        })
        .collect();
    let mut offset = 0;
    for seq in 0.. {
        let mut any = false;
        for (events, _) in &mut histories {
            if let Some(event) = events.get_mut(seq) {
                offset += 1;
                event.offset = Offset(offset);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    histories
        .into_iter()
        .map(|(events, key)| {
            let state = SagaState::fold(&events).unwrap();
            FinishedSaga {
                summary: SagaSummary {
                    id: state.id,
                    status: state.status,
                    definition: state.definition.clone(),
                    created_at: events[0].at,
                },
                idempotency_key: key,
                events,
            }
        })
        .collect()
}

fn written(dir: &Path, sagas: &[FinishedSaga]) -> Segment {
    let path = dir.join("0001.segment");
    let written = write_segment(&path, sagas.to_vec()).unwrap();
    assert_eq!(written.sagas, sagas.len() as u64);
    assert!(!dir.join("0001.tmp").exists(), "renamed into place");
    Segment::open(&path).unwrap()
}

/// A page of `limit` sagas older than `before`, unfiltered.
fn page(before: Option<SagaId>, limit: usize) -> ListQuery {
    ListQuery {
        before,
        limit,
        ..ListQuery::default()
    }
}

fn newest_first(sagas: &[FinishedSaga]) -> Vec<SagaId> {
    let mut ids: Vec<SagaId> = sagas.iter().map(FinishedSaga::id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

#[test]
fn a_segment_gives_back_every_saga_by_id_and_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let sagas = finished(3_000);
    let segment = written(dir.path(), &sagas);
    assert_eq!(segment.sagas(), 3_000);
    assert!(
        segment.blocks() > 1,
        "several blocks, so searches cross them"
    );
    for saga in &sagas {
        assert_eq!(segment.get(saga.id()).unwrap().as_ref(), Some(saga));
        if let Some(key) = &saga.idempotency_key {
            assert_eq!(segment.saga_for_key(key).unwrap(), Some(saga.id()));
        }
    }
    let held: HashSet<SagaId> = sagas.iter().map(FinishedSaga::id).collect();
    // Ids inside the segment's range that it does not hold, and past it.
    let mut bytes = *sagas[700].id().as_bytes();
    bytes[15] ^= 1;
    for stranger in [SagaId::from_bytes(bytes), SagaId::generate()] {
        if !held.contains(&stranger) {
            assert_eq!(segment.get(stranger).unwrap(), None);
        }
    }
    assert_eq!(
        segment.saga_for_key("order-1").unwrap(),
        None,
        "odd ones have none"
    );
    assert_eq!(segment.saga_for_key("nobody").unwrap(), None);
}

#[test]
fn listing_pages_newest_first_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let sagas = finished(1_000);
    let segment = written(dir.path(), &sagas);
    let all = newest_first(&sagas);

    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = segment.list(&page(before, 70)).unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|s| s.id);
        paged.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(paged, all, "every saga once, newest first, across blocks");

    let refunds = segment
        .list(&ListQuery {
            definition: Some("refunds".into()),
            ..page(None, usize::MAX)
        })
        .unwrap();
    let expected: Vec<SagaId> = newest_first(
        &sagas
            .iter()
            .filter(|s| s.summary.definition == "refunds")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(refunds.iter().map(|s| s.id).collect::<Vec<_>>(), expected);
    let compensated = segment
        .list(&ListQuery {
            status: Some(SagaStatus::Compensated),
            ..page(None, usize::MAX)
        })
        .unwrap();
    assert_eq!(
        compensated.len(),
        sagas
            .iter()
            .filter(|s| s.summary.status == SagaStatus::Compensated)
            .count()
    );
    assert!(
        compensated
            .iter()
            .all(|s| s.status == SagaStatus::Compensated)
    );
    // The footer alone answers a filter nothing in the segment matches.
    assert!(
        segment
            .list(&ListQuery {
                status: Some(SagaStatus::Failed),
                ..page(None, 10)
            })
            .unwrap()
            .is_empty()
    );
    assert!(
        segment
            .list(&ListQuery {
                definition: Some("nope".into()),
                ..page(None, 10)
            })
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_feed_reads_events_in_offset_order_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let sagas = finished(800);
    let segment = written(dir.path(), &sagas);
    let mut every: Vec<Event> = sagas.iter().flat_map(|s| s.events.clone()).collect();
    every.sort_by_key(|e| e.offset);
    assert_eq!(segment.offsets(), (1, every.len() as u64));

    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let batch = segment.events_after(after, 500).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.offset.get();
        read.extend(batch);
    }
    assert_eq!(read, every);
    let from_middle = segment.events_after(1_234, 3).unwrap();
    let offsets: Vec<u64> = from_middle.iter().map(|e| e.offset.get()).collect();
    assert_eq!(offsets, [1_235, 1_236, 1_237]);
    assert!(
        segment
            .events_after(every.len() as u64, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn check_reads_every_byte_and_names_damage() {
    let dir = tempfile::tempdir().unwrap();
    let sagas = finished(1_000);
    let segment = written(dir.path(), &sagas);
    let mut offsets: Vec<u64> = sagas
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.offset.get()))
        .collect();
    offsets.sort_unstable();
    assert_eq!(
        segment.check().unwrap(),
        SegmentCheck {
            sagas: 1_000,
            events: offsets.len() as u64,
            offsets,
        }
    );

    // A byte flipped in the first block: reads of it and the check say where.
    let path = segment.path().to_path_buf();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let damaged = Segment::open(&path).expect("the footer is intact");
    let err = damaged.check().unwrap_err().to_string();
    assert!(err.contains("0001.segment is damaged at byte 8"), "{err}");
    let first = newest_first(&sagas).pop().unwrap();
    let err = damaged.get(first).unwrap_err().to_string();
    assert!(err.contains("checksum does not match"), "{err}");

    // A file cut short, and one that is not a segment, are refused at open.
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = Segment::open(&path).err().unwrap().to_string();
    assert!(err.contains("does not end as a history segment"), "{err}");
    std::fs::write(&path, b"{\"not\": \"a segment\"} and then some more bytes").unwrap();
    let err = Segment::open(&path).err().unwrap().to_string();
    assert!(err.contains("does not start as a history segment"), "{err}");
}

#[test]
fn only_whole_final_sagas_are_written_and_a_refusal_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0002.segment");
    let mut sagas = finished(3);
    let mut running = sagas[1].clone();
    running.summary.status = SagaStatus::Running;
    let err = write_segment(&path, vec![sagas[0].clone(), running]).unwrap_err();
    assert!(
        err.to_string().contains("not COMPLETED or COMPENSATED"),
        "{err}"
    );
    let twice = vec![sagas[0].clone(), sagas[0].clone()];
    assert!(
        write_segment(&path, twice)
            .unwrap_err()
            .to_string()
            .contains("given twice")
    );
    sagas[2].events.remove(1);
    let err = write_segment(&path, sagas).unwrap_err().to_string();
    assert!(err.contains("expected seq 2"), "{err}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn an_empty_segment_is_valid_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let segment = written(dir.path(), &[]);
    assert_eq!(
        segment.check().unwrap(),
        SegmentCheck {
            sagas: 0,
            events: 0,
            offsets: Vec::new(),
        }
    );
    assert_eq!(segment.get(SagaId::generate()).unwrap(), None);
    assert!(segment.list(&page(None, 10)).unwrap().is_empty());
    assert!(segment.events_after(0, 10).unwrap().is_empty());
}

#[test]
fn a_tier_reads_its_segments_as_one_and_a_saga_written_twice_once() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let sagas = finished(600);
    let mut tier = Tier::open(&history).unwrap();
    tier.add(sagas[..400].to_vec()).unwrap();
    // A mover that died before removing sagas 300..400 writes them again.
    tier.add(sagas[300..].to_vec()).unwrap();
    assert_eq!(tier.sagas(), 700);
    // An unfinished write is dropped at the next open.
    std::fs::write(history.join("00000003.tmp"), b"half").unwrap();
    let tier = Tier::open(&history).unwrap();
    assert!(!history.join("00000003.tmp").exists());

    for saga in sagas.iter().step_by(7) {
        assert_eq!(tier.get(saga.id()).unwrap().as_ref(), Some(saga));
        if let Some(key) = &saga.idempotency_key {
            assert_eq!(tier.saga_for_key(key).unwrap(), Some(saga.id()));
        }
    }
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = tier.list(&page(before, 90)).unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(paged, newest_first(&sagas), "each saga once, newest first");

    let mut every: Vec<Event> = sagas.iter().flat_map(|s| s.events.clone()).collect();
    every.sort_by_key(|e| e.offset);
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let batch = tier.events_after(after, 333).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.offset.get();
        read.extend(batch);
    }
    assert_eq!(read, every, "each offset once, in order, across segments");
    let mut checked = Vec::new();
    tier.check(&mut |path, c| checked.push((path.to_path_buf(), c)));
    assert_eq!(checked.len(), 2);
    assert!(checked[0].0.ends_with("00000001.segment"));
    assert!(checked.iter().all(|(_, c)| c.is_ok()));
}
