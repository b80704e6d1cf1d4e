//! Listing sagas in a status few of them are in, without reading every saga.
//!
//! Sagas that are not final are few beside the finished ones, and an
//! operator's first question is about them ("which sagas FAILED?"). Reading
//! every listing entry to answer it took 2.3 s on a journal of a million
//! finished sagas (`BENCHMARKS.md`, session 6), and grows with the journal. So
//! such a list walks a small index instead, keyed by saga id like the listing
//! entries (same order: newest first), and reads only the entries it names:
//! - RUNNING and COMPENSATING: the unfinished index (`u <id>`, which recovery
//!   reads at start);
//! - FAILED: the failed index (`f <id>`), put when a saga becomes FAILED and
//!   removed when `RetrySaga` takes it out (`kv.rs`, `index_writes`).
//!
//! Guarantees:
//! - A list by status returns what a scan of every listing entry would: each
//!   saga's current summary decides, the indexes only narrow where to look.
//! - A journal written before the failed index existed has it built from its
//!   listing entries at the first open by this version ([`ensure_failed_index`]),
//!   once: the `m failed_index` key says it was.

use std::collections::HashSet;

use super::{
    TryScan,
    check::report::{CheckReport, Histories},
    codec::{self, FAILED, FAILED_INDEX_KEY, SUMMARY, UNFINISHED},
};
use crate::{
    journal::{
        JournalError, ListQuery, SagaSummary,
        store::{KeyWrite, KvStore},
    },
    saga::{SagaId, SagaStatus},
};

/// Index entries read per pass: each pass then reads their listing entries.
const IDS_PER_PASS: usize = 256;

/// Whether `summary` is one `query` asks for.
pub fn wanted(query: &ListQuery, summary: &SagaSummary) -> bool {
    query.status.is_none_or(|s| s == summary.status)
        && query
            .definition
            .as_ref()
            .is_none_or(|d| *d == summary.definition)
}

/// The index holding every saga in `status`, if there is one.
pub fn index_of(status: SagaStatus) -> Option<u8> {
    match status {
        SagaStatus::Scheduled | SagaStatus::Running | SagaStatus::Compensating => Some(UNFINISHED),
        SagaStatus::Failed => Some(FAILED),
        SagaStatus::Completed | SagaStatus::Compensated => None,
    }
}

/// The sagas `query` asks for, newest first, found through the index `prefix`.
pub fn list<S: KvStore + ?Sized>(
    store: &S,
    prefix: u8,
    query: &ListQuery,
) -> Result<Vec<SagaSummary>, JournalError> {
    let mut found = Vec::new();
    let mut before = query.before.map(|id| codec::saga_key(prefix, id));
    while found.len() < query.limit {
        let mut ids = Vec::with_capacity(IDS_PER_PASS);
        // Summaries are read after the scan: a store may hold a lock while it visits.
        store.try_scan_rev(&[prefix], before.as_deref(), |key, _| {
            ids.push(codec::saga_of_key(key)?);
            Ok(ids.len() < IDS_PER_PASS)
        })?;
        let Some(last) = ids.last() else {
            break;
        };
        before = Some(codec::saga_key(prefix, *last));
        for id in &ids {
            let key = codec::saga_key(SUMMARY, *id);
            // None: removed since the scan (only final sagas are, and those
            // are in no index, but a list is no snapshot).
            let Some(value) = store.get(&key)? else {
                continue;
            };
            let summary: SagaSummary = codec::decode(&key, &value)?;
            if wanted(query, &summary) {
                found.push(summary);
                if found.len() == query.limit {
                    break;
                }
            }
        }
        if ids.len() < IDS_PER_PASS {
            break;
        }
    }
    Ok(found)
}

/// The failed index's entry of a saga going from `before` (`None`: new) to
/// `after`, if that changes it.
pub fn failed_index_write(
    id: SagaId,
    before: Option<SagaStatus>,
    after: SagaStatus,
) -> Option<KeyWrite> {
    let was = before == Some(SagaStatus::Failed);
    let is = after == SagaStatus::Failed;
    (was != is).then(|| (codec::saga_key(FAILED, id), is.then(Vec::new)))
}

/// `sagad journal check`: the unfinished index holds exactly the sagas that
/// are not terminal.
pub(super) fn check_unfinished_index<S: KvStore>(
    store: &S,
    histories: &Histories,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    let unfinished = index_members(store, UNFINISHED, report)?;
    for (id, state) in &histories.states {
        match (state.status.is_terminal(), unfinished.contains(id)) {
            (false, false) => report.problems.push(format!(
                "saga {id}: {} but not in the unfinished index (it would never resume)",
                state.status.as_str()
            )),
            (true, true) => report.problems.push(format!(
                "saga {id}: {} but still in the unfinished index",
                state.status.as_str()
            )),
            _ => {}
        }
    }
    for id in unfinished
        .iter()
        .filter(|id| !histories.events.contains_key(id))
    {
        report.problems.push(format!(
            "saga {id}: in the unfinished index but has no events"
        ));
    }
    Ok(())
}

/// `sagad journal check`: the failed index, once built, holds exactly the
/// FAILED sagas.
pub(super) fn check_failed_index<S: KvStore>(
    store: &S,
    histories: &Histories,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    if store.get(FAILED_INDEX_KEY)?.is_none() {
        return Ok(());
    }
    let failed = index_members(store, FAILED, report)?;
    for (id, state) in &histories.states {
        match (state.status == SagaStatus::Failed, failed.contains(id)) {
            (true, false) => report.problems.push(format!(
                "saga {id}: FAILED but not in the failed index (a list of FAILED sagas misses it)"
            )),
            (false, true) => report.problems.push(format!(
                "saga {id}: {} but in the failed index",
                state.status.as_str()
            )),
            _ => {}
        }
    }
    for id in failed
        .iter()
        .filter(|id| !histories.events.contains_key(id))
    {
        report
            .problems
            .push(format!("saga {id}: in the failed index but has no events"));
    }
    Ok(())
}

/// The sagas an index (`prefix`) names; keys that name none are problems.
fn index_members<S: KvStore>(
    store: &S,
    prefix: u8,
    report: &mut CheckReport,
) -> Result<HashSet<SagaId>, JournalError> {
    let mut members = HashSet::new();
    for (key, _) in store.scan(&[prefix])? {
        match codec::saga_of_key(&key) {
            Ok(id) => {
                members.insert(id);
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, MemoryJournal};
    use crate::saga::EventKind;
    use crate::testing::{next, started};

    /// More sagas in an index than one pass reads, with other statuses mixed
    /// in: pages continue across passes, newest first.
    #[tokio::test]
    async fn lists_by_status_page_across_passes() {
        let journal = MemoryJournal::in_memory();
        let mut running = Vec::new();
        for i in 0..(IDS_PER_PASS * 2 + 10) {
            let e = started(if i % 3 == 0 { "refund" } else { "shop" }, None);
            let id = e.saga;
            journal.append(vec![e]).await.unwrap();
            if i % 2 == 0 {
                journal
                    .append(vec![next(
                        id,
                        2,
                        EventKind::CompensationStarted { reason: "r".into() },
                    )])
                    .await
                    .unwrap();
            } else {
                running.push(id);
            }
        }
        running.reverse();
        let mut listed = Vec::new();
        let mut before = None;
        loop {
            let page = journal
                .list(&ListQuery {
                    status: Some(SagaStatus::Running),
                    before,
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            listed.extend(page.iter().map(|s| s.id));
        }
        assert_eq!(listed, running);
        let refunds = journal
            .list(&ListQuery {
                status: Some(SagaStatus::Compensating),
                definition: Some("refund".into()),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(refunds.len(), (IDS_PER_PASS * 2 + 10).div_ceil(6));
        assert!(
            refunds
                .iter()
                .all(|s| s.definition == "refund" && s.status == SagaStatus::Compensating)
        );
    }
}
