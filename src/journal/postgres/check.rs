//! `sagad journal check --journal postgres://…`: a PostgreSQL journal
//! verified in one read-only snapshot ([`PgSnapshot::check`]), beside live
//! coordinators, reported as the sled journal's check reports
//! ([`CheckReport`]).
//!
//! What is held true, and where it is looked at:
//! - **Histories** (one streamed statement, a full join of `event` and
//!   `saga` in saga and seq order, so one saga's history is in memory at a
//!   time): every body decodes, its checksum holds, and it is the event of
//!   its row's saga and seq; each saga's seqs are 1..n; each history folds;
//!   each `saga` row agrees with its folded history (`last_seq`, status,
//!   definition, idempotency key, created_at, and `ended_at` set exactly when
//!   the status is terminal, as the writer sets it, `batch.rs`); no row
//!   without events, no events without a row.
//! - **Offsets** (in SQL, a window function over the primary key, so the
//!   check's memory stays bounded): no gap above the archive horizon (gaps at
//!   or below it are retention's); `feed_head.last` is at or above every
//!   offset, and whatever it took beyond the highest event is at or below
//!   the horizon too.
//! - **Owners**: every open saga (running, compensating, failed: the ones a
//!   takeover moves) is owned by a node that has a row in `sagad.node`;
//!   otherwise no takeover would ever find it.
//! - **Participants**: every body decodes.
//!
//! Problems found in SQL are listed up to [`LISTED`] per kind: the report
//! shows fewer anyway, and the statement's answer stays small.

use std::time::SystemTime;

use tokio_postgres::Row;
use tokio_stream::StreamExt;

use super::{reads, saga_of, snapshot::PgSnapshot, status_name};
use crate::{
    journal::{JournalError, check::CheckReport, kv::codec},
    json,
    saga::{Event, Participant, SagaId, SagaState, Timestamp},
};

/// Most problems of one kind a statement lists.
pub const LISTED: i64 = 1000;

/// Every event beside its saga's row (NULLs where either is missing), in
/// saga and then seq order: columns 0–3 are what `reads::event_of` decodes.
const HISTORIES: &str = r#"
SELECT coalesce(e.saga_id, s.saga_id), e.seq, e."offset", e.body,
       s.saga_id IS NOT NULL, s.status, s.definition, s.idempotency_key,
       s.created_at, s.ended_at, s.last_seq
FROM sagad.event e FULL JOIN sagad.saga s ON s.saga_id = e.saga_id
ORDER BY 1, 2"#;

/// Each stretch of missing offsets above the horizon `$1`, as `[first, next)`
/// (`next` the first offset present after it), the part at or below the
/// horizon left out.
const GAPS: &str = r#"
SELECT greatest(prev + 1, $1::bigint + 1), "offset" FROM (
    SELECT "offset", lag("offset", 1, 0::bigint) OVER (ORDER BY "offset") AS prev
    FROM sagad.event
) o
WHERE "offset" > prev + 1 AND "offset" - 1 > $1::bigint
ORDER BY "offset" LIMIT $2"#;

/// Open sagas whose owner has no row in `sagad.node`.
const ORPHANS: &str = r#"
SELECT s.saga_id, s.owner_node, s.status FROM sagad.saga s
WHERE s.status IN ('scheduled', 'running', 'compensating', 'failed')
  AND NOT EXISTS (SELECT 1 FROM sagad.node n WHERE n.node_id = s.owner_node)
ORDER BY s.saga_id LIMIT $1"#;

impl PgSnapshot {
    /// Checks everything in the snapshot; see the module docs. An `Err` is a
    /// statement that failed (the check could not be made), never damage:
    /// damage is in the report.
    pub async fn check(&self) -> Result<CheckReport, JournalError> {
        let client = self.client()?;
        let mut report = CheckReport {
            archived_through: reads::archived_through(client).await?.get(),
            ..CheckReport::default()
        };
        check_histories(client, &mut report).await?;
        check_offsets(client, self.feed_head().get(), &mut report).await?;
        check_owners(client, &mut report).await?;
        check_participants(client, &mut report).await?;
        Ok(report)
    }
}

/// Streams every history ([`HISTORIES`]) and judges each saga as its rows end.
async fn check_histories(
    client: &tokio_postgres::Client,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    let what = "reading every saga's history";
    let rows = client
        .query_raw(HISTORIES, std::iter::empty::<i64>())
        .await
        .map_err(reads::read(what))?;
    let mut rows = std::pin::pin!(rows);
    let mut group: Option<Group> = None;
    while let Some(row) = rows.next().await {
        let row = row.map_err(reads::read(what))?;
        let id = saga_of(row.get(0));
        // Rows come in saga order: a new id means the last saga is whole.
        if let Some(done) = group.take_if(|g| g.id != id) {
            done.judge(report);
        }
        let group = group.get_or_insert_with(|| Group::new(id, SagaRow::of(&row)));
        if let Some(seq) = row.get::<_, Option<i64>>(1) {
            report.events += 1;
            if let Some(problem) = group.follow(seq as u64) {
                report.problems.push(problem);
            }
            match reads::event_of(&row) {
                Ok(event) => group.events.push(event),
                Err(e) => {
                    report
                        .problems
                        .push(format!("offset {}: {e}", row.get::<_, i64>(2)));
                    group.damaged = true;
                }
            }
        }
    }
    if let Some(done) = group {
        done.judge(report);
    }
    Ok(())
}

/// A saga's row as the check compares it.
#[derive(Clone, Debug, PartialEq)]
struct SagaRow {
    status: String,
    definition: String,
    idempotency_key: Option<String>,
    created_at: Timestamp,
    ended: bool,
    last_seq: u64,
}

impl SagaRow {
    /// The saga columns of a [`HISTORIES`] row; `None` where it has no row.
    fn of(row: &Row) -> Option<Self> {
        row.get::<_, bool>(4).then(|| SagaRow {
            status: row.get(5),
            definition: row.get(6),
            idempotency_key: row.get(7),
            created_at: Timestamp::from(row.get::<_, SystemTime>(8)),
            ended: row.get::<_, Option<SystemTime>>(9).is_some(),
            last_seq: row.get::<_, i64>(10) as u64,
        })
    }

    /// The row the writer keeps for `state` (`batch.rs`).
    #[cfg(test)]
    fn for_state(state: &SagaState) -> Self {
        SagaRow {
            status: status_name(state.status).to_string(),
            definition: state.definition.clone(),
            idempotency_key: state.idempotency_key.clone(),
            created_at: state.created_at,
            ended: state.status.is_terminal(),
            last_seq: state.last_seq,
        }
    }
}

/// One saga's rows while they stream: its history, the only one in memory.
struct Group {
    id: SagaId,
    row: Option<SagaRow>,
    /// The events that decoded, in seq order.
    events: Vec<Event>,
    /// Event rows seen, decoded or not.
    seen: u64,
    /// The last seq seen (0: none yet).
    last_seq: u64,
    /// An event did not decode: the history cannot be folded.
    damaged: bool,
}

impl Group {
    fn new(id: SagaId, row: Option<SagaRow>) -> Self {
        Group {
            id,
            row,
            events: Vec::new(),
            seen: 0,
            last_seq: 0,
            damaged: false,
        }
    }

    /// The next event row is event `seq`: a problem unless it follows the
    /// last one (seqs are unique per saga: the table says so).
    fn follow(&mut self, seq: u64) -> Option<String> {
        let (id, last) = (self.id, self.last_seq);
        self.seen += 1;
        self.last_seq = seq;
        match seq == last + 1 {
            true => None,
            false if last == 0 => Some(format!(
                "saga {id}: its history starts at event {seq}, not 1"
            )),
            false => Some(format!(
                "saga {id}: event {seq} follows event {last} (events {}..{seq} are missing)",
                last + 1
            )),
        }
    }

    /// The saga as a whole, once all its rows were seen.
    fn judge(self, report: &mut CheckReport) {
        let id = self.id;
        let problems = &mut report.problems;
        let Some(row) = &self.row else {
            report.sagas += 1;
            problems.push(format!(
                "saga {id}: has {} event(s) but no saga row",
                self.seen
            ));
            return;
        };
        if self.seen == 0 {
            problems.push(format!("saga {id}: has a saga row but no events"));
            return;
        }
        report.sagas += 1;
        if row.last_seq != self.last_seq {
            problems.push(format!(
                "saga {id}: its row says last_seq {}, its events end at {}",
                row.last_seq, self.last_seq
            ));
        }
        if self.damaged {
            return; // named where the event was met; nothing to fold
        }
        match SagaState::fold(&self.events) {
            Ok(state) => {
                *report.by_state.entry(state.status.as_str()).or_default() += 1;
                compare(row, &state, problems);
            }
            Err(e) => problems.push(format!("saga {id}: its history does not fold: {e}")),
        }
    }
}

/// What a saga's row says against what its folded history says.
fn compare(row: &SagaRow, state: &SagaState, problems: &mut Vec<String>) {
    let id = state.id;
    let status = status_name(state.status);
    if row.status != status {
        problems.push(format!(
            "saga {id}: its row says status {}, its events say {status}",
            row.status
        ));
    }
    if row.definition != state.definition {
        problems.push(format!(
            "saga {id}: its row says definition '{}', its events say '{}'",
            row.definition, state.definition
        ));
    }
    if row.idempotency_key != state.idempotency_key {
        problems.push(format!(
            "saga {id}: its row says idempotency key {:?}, its events say {:?}",
            row.idempotency_key, state.idempotency_key
        ));
    }
    if row.created_at != state.created_at {
        problems.push(format!(
            "saga {id}: its row says created at {}, its events say {}",
            json::timestamp(row.created_at),
            json::timestamp(state.created_at)
        ));
    }
    if row.ended != state.status.is_terminal() {
        problems.push(match row.ended {
            true => format!("saga {id}: its row has ended_at set, but the saga is {status}"),
            false => format!("saga {id}: its row has no ended_at, but the saga is {status}"),
        });
    }
}

/// Gaps above the horizon (in SQL), and the feed head against the events.
async fn check_offsets(
    client: &tokio_postgres::Client,
    feed_head: u64,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    let horizon = report.archived_through;
    let h = horizon as i64;
    let gaps = client
        .query(GAPS, &[&h, &LISTED])
        .await
        .map_err(reads::read("looking for gaps in the offsets"))?;
    for gap in &gaps {
        let (first, next): (i64, i64) = (gap.get(0), gap.get(1));
        report.problems.push(format!(
            "sagad.event: offsets {first}..{next} are missing above the archive horizon {horizon} (the feed stops there)"
        ));
    }
    if gaps.len() as i64 == LISTED {
        report.problems.push(format!(
            "sagad.event: more gaps in the offsets than the {LISTED} listed"
        ));
    }
    let highest: i64 = client
        .query_one("SELECT coalesce(max(\"offset\"), 0) FROM sagad.event", &[])
        .await
        .map_err(reads::read("reading the highest offset"))?
        .get(0);
    report
        .problems
        .extend(tail_problems(highest as u64, feed_head, horizon));
    Ok(())
}

/// The feed head `last` against the highest offset of any event and the
/// archive horizon: it took every offset in use, and the ones it took past
/// the highest event can only be retention's (at or below the horizon).
fn tail_problems(highest: u64, last: u64, horizon: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if last < highest {
        problems.push(format!(
            "sagad.feed_head: last is {last}, but an event has offset {highest} (the next batch would reuse offsets)"
        ));
    } else if last > highest.max(horizon) {
        problems.push(format!(
            "sagad.feed_head: offsets {}..{} were taken but are missing above the archive horizon {horizon} (the feed stops there)",
            highest.max(horizon) + 1,
            last + 1
        ));
    }
    if horizon > last {
        problems.push(format!(
            "sagad.archive_horizon: through is {horizon}, beyond the last offset taken ({last})"
        ));
    }
    problems
}

/// Open sagas of nodes that have no row ([`ORPHANS`]).
async fn check_owners(
    client: &tokio_postgres::Client,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    let orphans = client
        .query(ORPHANS, &[&LISTED])
        .await
        .map_err(reads::read("looking for sagas of unknown nodes"))?;
    for orphan in &orphans {
        let (id, node, status): (SagaId, String, String) =
            (saga_of(orphan.get(0)), orphan.get(1), orphan.get(2));
        report.problems.push(format!(
            "saga {id}: {status}, owned by node '{node}', which has no row in sagad.node (no takeover would find it)"
        ));
    }
    if orphans.len() as i64 == LISTED {
        report.problems.push(format!(
            "sagad.saga: more sagas of unknown nodes than the {LISTED} listed"
        ));
    }
    Ok(())
}

/// Every participant's body decodes (each one named, not only the first).
async fn check_participants(
    client: &tokio_postgres::Client,
    report: &mut CheckReport,
) -> Result<(), JournalError> {
    let rows = client
        .query(
            "SELECT name, body FROM sagad.participant ORDER BY name",
            &[],
        )
        .await
        .map_err(reads::read("listing participants"))?;
    for row in &rows {
        report.participants += 1;
        let key = codec::name_key(codec::PARTICIPANT, row.get(0));
        if let Err(e) = codec::decode::<Participant>(&key, row.get(1)) {
            report.problems.push(e.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{saga::EventKind, testing};

    fn judged(events: Vec<Event>, row: Option<SagaRow>) -> CheckReport {
        let mut report = CheckReport::default();
        let mut group = Group::new(events[0].saga, row);
        for event in events {
            if let Some(problem) = group.follow(event.seq) {
                report.problems.push(problem);
            }
            group.events.push(event);
        }
        group.judge(&mut report);
        report
    }

    fn row_for(events: &[Event]) -> SagaRow {
        SagaRow::for_state(&SagaState::fold(events).unwrap())
    }

    #[test]
    fn a_history_and_its_row_that_agree_check_clean() {
        let events = testing::completing(Some("k"), 1_000);
        let row = row_for(&events);
        let report = judged(events, Some(row));
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.sagas, 1);
        assert_eq!(report.by_state.get("COMPLETED"), Some(&1), "{report:?}");
    }

    #[test]
    fn a_row_that_disagrees_with_its_history_is_named() {
        let events = testing::completing(Some("k"), 1_000);
        let id = events[0].saga;
        let mut row = row_for(&events);
        row.status = "compensated".into();
        row.idempotency_key = None;
        row.ended = false;
        row.last_seq += 1;
        let text = judged(events, Some(row)).to_string();
        for want in [
            format!("saga {id}: its row says status compensated, its events say completed"),
            format!("saga {id}: its row says idempotency key None, its events say Some(\"k\")"),
            format!("saga {id}: its row has no ended_at, but the saga is completed"),
            format!("saga {id}: its row says last_seq"),
        ] {
            assert!(text.contains(&want), "{want} in {text}");
        }
    }

    #[test]
    fn a_missing_event_a_missing_row_and_a_row_alone_are_named() {
        let mut events = testing::completing(None, 1_000);
        let id = events[0].saga;
        let row = row_for(&events);
        events.remove(2);
        let text = judged(events.clone(), Some(row.clone())).to_string();
        assert!(
            text.contains(&format!(
                "saga {id}: event 4 follows event 2 (events 3..4 are missing)"
            )),
            "{text}"
        );
        assert!(text.contains("does not fold"), "{text}");

        let text = judged(events.clone(), None).to_string();
        assert!(
            text.contains(&format!(
                "saga {id}: has {} event(s) but no saga row",
                events.len()
            )),
            "{text}"
        );

        let mut report = CheckReport::default();
        Group::new(id, Some(row)).judge(&mut report);
        assert_eq!(
            report.problems,
            vec![format!("saga {id}: has a saga row but no events")]
        );
        assert_eq!(report.sagas, 0);
    }

    #[test]
    fn a_failed_saga_has_ended_at_and_a_running_one_has_not() {
        let failed = testing::cancelled(
            "shop",
            None,
            EventKind::SagaFailed {
                reason: "gave up".into(),
            },
        );
        let row = row_for(&failed);
        assert!(row.ended);
        assert!(judged(failed, Some(row)).is_clean());
        let running = vec![testing::started("shop", None)];
        let mut row = row_for(&running);
        assert!(!row.ended);
        row.ended = true;
        let text = judged(running, Some(row)).to_string();
        assert!(
            text.contains("has ended_at set, but the saga is running"),
            "{text}"
        );
    }

    #[test]
    fn the_feed_head_covers_every_offset_and_only_retention_leaves_a_tail() {
        assert!(tail_problems(10, 10, 0).is_empty());
        // Everything removed by retention: no event, head and horizon agree.
        assert!(tail_problems(0, 10, 10).is_empty());
        // The last sagas removed, others kept below them.
        assert!(tail_problems(6, 10, 10).is_empty());
        assert!(tail_problems(0, 0, 0).is_empty());
        assert_eq!(
            tail_problems(10, 9, 0),
            vec![
                "sagad.feed_head: last is 9, but an event has offset 10 (the next batch would reuse offsets)"
            ]
        );
        assert_eq!(
            tail_problems(10, 12, 4),
            vec![
                "sagad.feed_head: offsets 11..13 were taken but are missing above the archive horizon 4 (the feed stops there)"
            ]
        );
        assert_eq!(
            tail_problems(3, 5, 7),
            vec!["sagad.archive_horizon: through is 7, beyond the last offset taken (5)"]
        );
    }
}
