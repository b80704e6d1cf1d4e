//! `sagad-bench history`: what the history tier (`sagad::journal::history`)
//! costs and answers, before it is wired into the journal (issue 23).
//!
//! ```text
//!  for each segment: make S finished W1 sagas (seed.rs's histories, a key
//!                    each, offsets interleaved 64 ways) ─▶ Tier::add (timed)
//!  Tier::open (timed, heap before/after) ─▶ GetSaga × G of random ids
//!  ─▶ key lookups × G (held keys, and keys no saga has) ─▶ list pages of
//!  100 × L (newest, from random ids) ─▶ feed reads of 1,000 × L from random
//!  offsets ─▶ HISTORY sagas=…
//! ```
//!
//! The segments are written to a temporary directory (or `--dir`, kept) and
//! read back warm: right after they were written, the page cache holds them,
//! as it holds sled's files in `scale`. Latencies are on the monotonic clock
//! around each call, one at a time, nearest-rank percentiles.

use std::{path::Path, time::Instant};

use anyhow::Context;
use sagad::{
    journal::{
        ListQuery, SagaSummary,
        history::{FinishedSaga, Tier},
    },
    saga::{EventKind, Offset, SagaState},
};

use crate::{
    HistoryArgs,
    seed::{self, Script},
    stats::{Latencies, ms},
};

/// Sagas whose events interleave in offset order, as concurrent sagas' do.
const INTERLEAVE: usize = 64;

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("sagad-bench-history-")
        .tempdir()
        .context("creating a scratch directory")?;
    if let Some(dir) = &args.dir {
        check_dir(dir)?;
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("history"));
    let participants = seed::participants()?;
    let steps = seed::step_snapshot(&participants)?;
    let mut tier = Tier::open(&dir)?;
    let (mut ids, mut keys) = (Vec::with_capacity(args.sagas), Vec::new());
    let mut offset = 0;
    let mut write_s = 0.0;
    let mut bytes = 0;
    let mut made = 0;
    while made < args.sagas {
        let count = args.segment_sagas.min(args.sagas - made);
        let sagas = make(&steps, made, count, &mut offset)?;
        ids.extend(sagas.iter().map(FinishedSaga::id));
        keys.extend(
            sagas
                .iter()
                .step_by(97)
                .filter_map(|s| s.idempotency_key.clone()),
        );
        let began = Instant::now();
        let written = tier.add(sagas)?;
        write_s += began.elapsed().as_secs_f64();
        bytes += written.bytes;
        made += count;
        eprintln!("sagad-bench: {made} of {} sagas in segments", args.sagas);
    }
    drop(tier);

    let heap_before = sagad::allocator::heap_stats().map(|h| h.allocated);
    let began = Instant::now();
    let tier = Tier::open(&dir)?;
    let open = began.elapsed();
    let heap_after = sagad::allocator::heap_stats().map(|h| h.allocated);
    let open_heap = heap_before
        .zip(heap_after)
        .map(|(b, a)| a.saturating_sub(b));

    let mut errors = 0;
    let mut gets = Vec::with_capacity(args.gets);
    for _ in 0..args.gets {
        let id = ids[fastrand::usize(..ids.len())];
        let began = Instant::now();
        let got = tier.get(id)?;
        gets.push(began.elapsed());
        errors += usize::from(got.is_none_or(|s| s.id() != id));
    }
    let (mut hits, mut misses) = (Vec::new(), Vec::new());
    for i in 0..args.gets {
        let key = &keys[fastrand::usize(..keys.len())];
        let began = Instant::now();
        let found = tier.saga_for_key(key)?;
        hits.push(began.elapsed());
        errors += usize::from(found.is_none());
        let stranger = format!("no-such-order-{i}");
        let began = Instant::now();
        let found = tier.saga_for_key(&stranger)?;
        misses.push(began.elapsed());
        errors += usize::from(found.is_some());
    }
    let (mut newest, mut deep, mut feed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.lists {
        let began = Instant::now();
        let page = tier.list(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })?;
        newest.push(began.elapsed());
        errors += usize::from(page.len() != 100.min(ids.len()));
        let before = ids[fastrand::usize(..ids.len())];
        let began = Instant::now();
        let page = tier.list(&ListQuery {
            before: Some(before),
            limit: 100,
            ..ListQuery::default()
        })?;
        deep.push(began.elapsed());
        errors += usize::from(page.iter().any(|s: &SagaSummary| s.id >= before));
        let after = fastrand::u64(..offset.max(1));
        let began = Instant::now();
        let events = tier.events_after(after, 1_000)?;
        feed.push(began.elapsed());
        errors += usize::from(events.first().is_some_and(|e| e.offset.get() != after + 1));
    }
    let [gets, hits, misses, newest, deep, feed] =
        [gets, hits, misses, newest, deep, feed].map(Latencies::new);
    println!(
        "HISTORY sagas={} segments={} write_s={:.1} bytes_per_saga={:.0} open_ms={:.3} open_heap_mb={} \
         get_p50_ms={:.3} get_p99_ms={:.3} key_p50_ms={:.3} key_p99_ms={:.3} key_miss_p99_ms={:.3} \
         list100_p50_ms={:.3} list100_p99_ms={:.3} list100_deep_p99_ms={:.3} feed1000_p50_ms={:.3} feed1000_p99_ms={:.3} errors={errors}",
        args.sagas,
        args.sagas.div_ceil(args.segment_sagas),
        write_s,
        bytes as f64 / args.sagas as f64,
        open.as_secs_f64() * 1000.0,
        open_heap.map_or("na".into(), |b| format!(
            "{:.1}",
            b as f64 / 1024.0 / 1024.0
        )),
        ms(gets.percentile(50.0)),
        ms(gets.percentile(99.0)),
        ms(hits.percentile(50.0)),
        ms(hits.percentile(99.0)),
        ms(misses.percentile(99.0)),
        ms(newest.percentile(50.0)),
        ms(newest.percentile(99.0)),
        ms(deep.percentile(99.0)),
        ms(feed.percentile(50.0)),
        ms(feed.percentile(99.0)),
    );
    if args.dir.is_none() {
        drop(tier);
        scratch.close().context("removing the scratch directory")?;
    }
    Ok(())
}

/// `count` finished W1 sagas, numbered from `first`, each with a key; their
/// events get offsets after `offset`, interleaved [`INTERLEAVE`] sagas at a time.
fn make(
    steps: &[sagad::saga::StepSpec],
    first: usize,
    count: usize,
    offset: &mut u64,
) -> anyhow::Result<Vec<FinishedSaga>> {
    let mut sagas = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(INTERLEAVE) {
        let mut histories = Vec::new();
        for i in chunk_start..(chunk_start + INTERLEAVE).min(count) {
            let n = first + i;
            let payload = format!(r#"{{"order_id":"history-{n:08}","workload":"W1"}}"#);
            let mut events: Vec<_> = seed::history(steps, payload.into_bytes(), Script::Complete)?
                .into_iter()
                .flatten()
                .collect();
            let key = format!("order-{n:08}");
            if let EventKind::SagaStarted {
                idempotency_key, ..
            } = &mut events[0].kind
            {
                *idempotency_key = Some(key.clone());
            }
            histories.push((events, key));
        }
        let longest = histories.iter().map(|(e, _)| e.len()).max().unwrap_or(0);
        for seq in 0..longest {
            for (events, _) in &mut histories {
                if let Some(event) = events.get_mut(seq) {
                    *offset += 1;
                    event.offset = Offset(*offset);
                }
            }
        }
        for (events, key) in histories {
            let state = SagaState::fold(&events)?;
            sagas.push(FinishedSaga {
                summary: SagaSummary {
                    id: state.id,
                    status: state.status,
                    definition: state.definition.clone(),
                    created_at: events[0].at,
                },
                idempotency_key: Some(key),
                events,
            });
        }
    }
    Ok(sagas)
}

/// Whether `dir` may be written to: absent or empty.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && dir.read_dir()?.next().is_some() {
        anyhow::bail!("--dir {} is not empty", dir.display());
    }
    Ok(())
}
