//! Who owns each unfinished saga: a running runner, or the parking timer.
//!
//! [`Owners`] is the one place that decides which task may write a saga's
//! events. A saga is in it from the moment something claims it (a start, a
//! retry, recovery) until its runner ends; in between it is either *running*
//! (a runner task holds its state and serves its command channel) or *parked*
//! (no task: its next attempt is journaled as due at a time, and the engine's
//! timer holds `(due, id)`; see `parking.rs`) or *unread* (claimed by
//! start-up recovery and not read back from the journal yet: the read-back
//! queue holds its id; see `recovery.rs`).
//!
//! Invariants (each method keeps them under the engine's owners lock):
//! - At most one runner per saga: only an unowned saga can be claimed, and only
//!   a parked one woken, so two claims or two wakes of the same saga cannot both
//!   succeed.
//! - A saga is in the timer exactly when its slot is `Parked`, with the same due
//!   time: parking adds both, waking (by the timer or by a command) removes both.
//! - Every `Unread` slot's id is in the read-back queue. The queue may also
//!   hold ids whose slot is no longer `Unread` (a command woke the saga
//!   first): taking from the queue skips them, so each unread saga is read
//!   back exactly once, by whichever comes first.
//! - A runner parks only if no command is queued for it, so a command either
//!   reaches a runner or finds the saga parked and wakes it; a command sent to a
//!   runner that parked meanwhile is never answered, and its sender asks again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use tokio::sync::mpsc;

use super::{Command, CommandRx, CommandTx, RUNNER_COMMAND_CAPACITY};
use crate::saga::{SagaId, Timestamp};

/// What the engine holds for one saga it owns.
///
/// Kept at 16 bytes: every waiting saga has one, and a parked saga has little else.
pub(super) enum Slot {
    /// A runner task owns the saga; commands go down this channel.
    Running(CommandTx),
    /// No task: the saga waits for its next attempt, due at this time.
    Parked(Timestamp),
    /// No task, and not read since start-up: recovery's read-back (or the
    /// first command for it) reads its journal and decides.
    Unread,
}

/// Parked sagas by due time: the timer's queue.
///
/// A `BTreeSet` of `(due, id)`: 24 bytes an entry plus the tree's nodes (a
/// `DelayQueue` keeps a slab entry and wheel links per item, and needs a key
/// kept beside the slot to remove one), ordered, and removable by its own value.
#[derive(Default)]
pub(super) struct Timer {
    by_due: BTreeSet<(Timestamp, SagaId)>,
}

impl Timer {
    /// Adds a saga; true when it is now the first one due (the timer task must
    /// shorten its sleep).
    pub(super) fn insert(&mut self, due: Timestamp, id: SagaId) -> bool {
        self.by_due.insert((due, id));
        self.by_due.first() == Some(&(due, id))
    }

    /// Removes a saga woken before its time; false if it was not there.
    pub(super) fn remove(&mut self, due: Timestamp, id: SagaId) -> bool {
        self.by_due.remove(&(due, id))
    }

    /// Takes the first saga due at or before `now`.
    pub(super) fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, SagaId)> {
        match self.by_due.first() {
            Some(&(due, _)) if due <= now => self.by_due.pop_first(),
            _ => None,
        }
    }

    /// When the first parked saga is due.
    pub(super) fn next_due(&self) -> Option<Timestamp> {
        self.by_due.first().map(|&(due, _)| due)
    }

    pub(super) fn len(&self) -> usize {
        self.by_due.len()
    }
}

/// Every saga this engine owns, with its owner. Lives behind the engine's
/// owners mutex (a std lock: no method awaits).
#[derive(Default)]
pub(super) struct Owners {
    slots: HashMap<SagaId, Slot>,
    timer: Timer,
    /// Unread sagas in the order recovery listed them (and stale ids, see
    /// the module docs).
    read_back: VecDeque<SagaId>,
    /// Slots that are `Unread`.
    unread: usize,
    /// Sagas taken for reading back (`take_unread`) whose loader has not
    /// finished its batch yet (`read_back_done`).
    reading: usize,
}

/// A parked or unread saga just woken: its runner's end of a fresh command
/// channel (holding the command that woke it, if one did).
pub(super) struct Woken {
    pub(super) id: SagaId,
    pub(super) command_rx: CommandRx,
    /// It was `Unread`: this is its first read since start-up.
    pub(super) first_read: bool,
}

impl Owners {
    /// Whether the saga is owned (running or parked).
    pub(super) fn contains(&self, id: SagaId) -> bool {
        self.slots.contains_key(&id)
    }

    /// Whether the saga is parked.
    #[cfg(test)]
    pub(super) fn is_parked(&self, id: SagaId) -> bool {
        matches!(self.slots.get(&id), Some(Slot::Parked(_)))
    }

    /// Sagas owned, running or parked.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Sagas parked.
    pub(super) fn parked(&self) -> usize {
        self.timer.len()
    }

    /// Sagas claimed by recovery and not taken for reading back yet.
    #[cfg(test)]
    pub(super) fn unread(&self) -> usize {
        self.unread
    }

    /// Sagas not read back yet: unread, or taken by a loader still reading
    /// its batch (what `sagad_recovery_unread_sagas` says).
    pub(super) fn not_read_back(&self) -> usize {
        self.unread + self.reading
    }

    /// A loader read back `taken` sagas it had taken with `take_unread`.
    pub(super) fn read_back_done(&mut self, taken: usize) {
        self.reading -= taken;
    }

    /// When the first parked saga is due.
    pub(super) fn next_due(&self) -> Option<Timestamp> {
        self.timer.next_due()
    }

    /// Claims an unowned saga for a runner that will serve `command_tx`'s
    /// channel; false (and nothing changes) if the saga is owned.
    pub(super) fn claim(&mut self, id: SagaId, command_tx: CommandTx) -> bool {
        if self.slots.contains_key(&id) {
            return false;
        }
        self.slots.insert(id, Slot::Running(command_tx));
        true
    }

    /// Claims an unowned saga at start-up without reading it: it joins the
    /// read-back queue. False (and nothing changes) if the saga is owned.
    pub(super) fn claim_unread(&mut self, id: SagaId) -> bool {
        if self.slots.contains_key(&id) {
            return false;
        }
        self.slots.insert(id, Slot::Unread);
        self.read_back.push_back(id);
        self.unread += 1;
        true
    }

    /// Wakes up to `max` unread sagas, first listed first, for reading back;
    /// they count as not read back until `read_back_done`.
    pub(super) fn take_unread(&mut self, max: usize) -> Vec<Woken> {
        let mut woken = Vec::new();
        while woken.len() < max {
            let Some(id) = self.read_back.pop_front() else {
                break;
            };
            // A stale id: woken by a command, or abandoned, meanwhile.
            if let Some(Slot::Unread) = self.slots.get(&id) {
                woken.extend(self.wake(id, None));
            }
        }
        if self.read_back.is_empty() {
            // Up to a million ids' worth of capacity, needed only at start-up.
            self.read_back = VecDeque::new();
        }
        self.reading += woken.len();
        woken
    }

    /// Forgets a saga whose runner (or claim) ended. A parked saga is left alone:
    /// it belongs to the timer, not to whoever calls this.
    pub(super) fn release(&mut self, id: SagaId) {
        if let Some(Slot::Running(_)) = self.slots.get(&id) {
            self.slots.remove(&id);
        }
    }

    /// Where a command for the saga goes: `None` if the saga is not owned,
    /// `Some(Ok(tx))` to its runner, `Some(Err(woken))` if it was parked and the
    /// command woke it (the command is already queued in the woken channel).
    pub(super) fn route(
        &mut self,
        id: SagaId,
        command: Box<Command>,
    ) -> Option<Result<(CommandTx, Box<Command>), Woken>> {
        match self.slots.get(&id)? {
            Slot::Running(command_tx) => Some(Ok((command_tx.clone(), command))),
            Slot::Parked(_) | Slot::Unread => self.wake(id, Some(command)).map(Err),
        }
    }

    /// Parks the running saga `id` until `due`, unless a command is queued on its
    /// runner's channel (`command_rx`): the runner must serve that first. On
    /// success the runner must end without touching the saga's slot again. Returns
    /// whether it parked, and whether `due` is now the first due time.
    pub(super) fn park(
        &mut self,
        id: SagaId,
        due: Timestamp,
        command_rx: &CommandRx,
    ) -> Option<bool> {
        if !command_rx.is_empty() || !matches!(self.slots.get(&id), Some(Slot::Running(_))) {
            return None;
        }
        self.slots.insert(id, Slot::Parked(due));
        Some(self.timer.insert(due, id))
    }

    /// Wakes a parked or unread saga: it leaves the timer and gets a fresh
    /// command channel (with `first` queued in it). `None` if it is running
    /// (or already woken by someone else).
    pub(super) fn wake(&mut self, id: SagaId, first: Option<Box<Command>>) -> Option<Woken> {
        let slot = self.slots.get_mut(&id)?;
        let first_read = match *slot {
            Slot::Running(_) => return None,
            Slot::Parked(due) => {
                let removed = self.timer.remove(due, id);
                debug_assert!(removed, "a parked saga is in the timer");
                false
            }
            // Its id stays in the read-back queue, to be skipped there.
            Slot::Unread => {
                self.unread -= 1;
                true
            }
        };
        let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
        if let Some(command) = first {
            // A new channel has room for RUNNER_COMMAND_CAPACITY commands.
            let _ = command_tx.try_send(command);
        }
        *slot = Slot::Running(command_tx);
        Some(Woken {
            id,
            command_rx,
            first_read,
        })
    }

    /// Wakes up to `max` parked sagas due at or before `now`, first due first.
    pub(super) fn wake_due(&mut self, now: Timestamp, max: usize) -> Vec<Woken> {
        let mut woken = Vec::new();
        while woken.len() < max {
            let Some((_, id)) = self.timer.pop_due(now) else {
                break;
            };
            let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
            self.slots.insert(id, Slot::Running(command_tx));
            woken.push(Woken {
                id,
                command_rx,
                first_read: false,
            });
        }
        woken
    }

    /// Drops every parked or unread saga not in `keep` (after a re-join:
    /// those are another node's now); returns how many.
    pub(super) fn abandon_parked_except(&mut self, keep: &HashSet<SagaId>) -> usize {
        let gone: Vec<SagaId> = self
            .slots
            .iter()
            .filter(|(id, slot)| {
                matches!(slot, Slot::Parked(_) | Slot::Unread) && !keep.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        gone.iter().filter(|id| self.abandon(**id)).count()
    }

    /// Drops a parked or unread saga from the owners and the timer (at
    /// shutdown: it is left for the next start, which reads its journal
    /// again). False if it is running or not owned.
    pub(super) fn abandon(&mut self, id: SagaId) -> bool {
        match self.slots.get(&id) {
            Some(&Slot::Parked(due)) => {
                self.timer.remove(due, id);
                self.slots.remove(&id);
                true
            }
            Some(Slot::Unread) => {
                self.unread -= 1;
                self.slots.remove(&id);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Barrier, Mutex},
        thread,
    };

    use tokio::sync::oneshot;

    use super::*;

    fn ids(n: usize) -> Vec<SagaId> {
        (0..n).map(|_| SagaId::generate()).collect()
    }

    /// Owners holding `id` as running, and the runner's channel end.
    fn running(owners: &mut Owners, id: SagaId) -> CommandRx {
        let (command_tx, command_rx) = mpsc::channel(RUNNER_COMMAND_CAPACITY);
        assert!(owners.claim(id, command_tx));
        command_rx
    }

    fn wait_command() -> (Box<Command>, oneshot::Receiver<crate::saga::SagaState>) {
        let (reply, answer) = oneshot::channel();
        (Box::new(Command::Wait { reply }), answer)
    }

    #[test]
    fn a_slot_is_small() {
        // Every waiting saga has one: a pointer or a due time, and the tag.
        assert!(std::mem::size_of::<Slot>() <= 16);
    }

    #[test]
    fn the_timer_yields_sagas_in_due_order_and_only_when_due() {
        let mut timer = Timer::default();
        let [a, b, c] = ids(3).try_into().unwrap();
        assert!(
            timer.insert(Timestamp(300), a),
            "the only entry is the first"
        );
        assert!(
            timer.insert(Timestamp(100), b),
            "an earlier due time is first"
        );
        assert!(!timer.insert(Timestamp(200), c), "a later one is not");
        assert_eq!(timer.next_due(), Some(Timestamp(100)));
        assert_eq!(timer.pop_due(Timestamp(99)), None, "nothing due yet");
        assert_eq!(timer.pop_due(Timestamp(250)), Some((Timestamp(100), b)));
        assert_eq!(timer.pop_due(Timestamp(250)), Some((Timestamp(200), c)));
        assert_eq!(timer.pop_due(Timestamp(250)), None);
        assert_eq!(timer.len(), 1);
        assert!(timer.remove(Timestamp(300), a));
        assert!(!timer.remove(Timestamp(300), a), "removed once");
        assert_eq!(timer.next_due(), None);
    }

    #[test]
    fn sagas_due_at_the_same_time_are_all_kept() {
        let mut timer = Timer::default();
        let all = ids(5);
        for &id in &all {
            timer.insert(Timestamp(7), id);
        }
        let mut popped: Vec<_> = std::iter::from_fn(|| timer.pop_due(Timestamp(7)))
            .map(|(_, id)| id)
            .collect();
        popped.sort();
        let mut all = all;
        all.sort();
        assert_eq!(popped, all);
    }

    #[test]
    fn a_saga_woken_by_a_command_leaves_the_timer() {
        let mut owners = Owners::default();
        let [early, late] = ids(2).try_into().unwrap();
        for (id, due) in [(early, 100), (late, 200)] {
            let command_rx = running(&mut owners, id);
            assert!(owners.park(id, Timestamp(due), &command_rx).is_some());
        }
        assert_eq!((owners.len(), owners.parked()), (2, 2));

        let (command, _answer) = wait_command();
        let Some(Err(mut woken)) = owners.route(early, command) else {
            panic!("a command for a parked saga wakes it");
        };
        assert_eq!(woken.id, early);
        assert!(
            woken.command_rx.try_recv().is_ok(),
            "the command that woke it is queued for its runner"
        );
        assert_eq!((owners.len(), owners.parked()), (2, 1));
        assert_eq!(owners.next_due(), Some(Timestamp(200)));
        // The timer passes the woken saga's due time: only the other one wakes.
        let due: Vec<_> = owners
            .wake_due(Timestamp(1_000), 10)
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(due, vec![late]);
        assert_eq!((owners.len(), owners.parked()), (2, 0));
    }

    #[test]
    fn unread_sagas_are_read_back_once_by_whoever_comes_first() {
        let mut owners = Owners::default();
        let [a, b, c] = ids(3).try_into().unwrap();
        for id in [a, b, c] {
            assert!(owners.claim_unread(id));
        }
        assert!(!owners.claim_unread(a), "owned: claimed once");
        assert!(!owners.claim(a, mpsc::channel(1).0), "nor by a start");
        assert_eq!((owners.len(), owners.unread(), owners.parked()), (3, 3, 0));

        // A command reads b back first; the read-back then skips it.
        let (command, _answer) = wait_command();
        let Some(Err(mut woken)) = owners.route(b, command) else {
            panic!("a command for an unread saga wakes it");
        };
        assert!(woken.first_read && woken.id == b);
        assert!(woken.command_rx.try_recv().is_ok(), "the command is queued");
        // The shutdown leaves c for the next start.
        assert!(owners.abandon(c));
        assert_eq!(owners.unread(), 1);

        let taken: Vec<_> = owners.take_unread(10);
        assert_eq!(taken.iter().map(|w| w.id).collect::<Vec<_>>(), vec![a]);
        assert!(taken[0].first_read);
        assert_eq!(owners.unread(), 0);
        assert!(owners.take_unread(10).is_empty(), "each is read back once");
        assert!(owners.wake(a, None).is_none(), "a runs now");
        assert!(owners.contains(a) && owners.contains(b) && !owners.contains(c));
    }

    /// Two loaders: the one that took the last batch finishes first. The
    /// sagas the other still reads are not read back yet; counting only the
    /// queue, the gauge said 0 while they were read (a flaky scale test saw
    /// 471 of 500 sagas running when it said so).
    #[test]
    fn sagas_a_loader_holds_are_not_read_back_until_it_says_so() {
        let mut owners = Owners::default();
        for id in ids(3) {
            assert!(owners.claim_unread(id));
        }
        let first = owners.take_unread(2);
        let last = owners.take_unread(2);
        assert_eq!((first.len(), last.len(), owners.unread()), (2, 1, 0));
        assert_eq!(owners.not_read_back(), 3, "taken is not read back");

        owners.read_back_done(last.len());
        assert_eq!(owners.not_read_back(), 2, "the first loader still reads");
        owners.read_back_done(first.len());
        assert_eq!(owners.not_read_back(), 0);
    }

    #[test]
    fn a_saga_is_woken_once() {
        let mut owners = Owners::default();
        let id = SagaId::generate();
        let command_rx = running(&mut owners, id);
        owners.park(id, Timestamp(100), &command_rx).unwrap();
        assert_eq!(owners.wake_due(Timestamp(100), 10).len(), 1);
        assert!(owners.wake(id, None).is_none(), "the timer woke it already");
        assert!(owners.wake_due(Timestamp(100), 10).is_empty());
        // A command now reaches the woken runner's channel.
        let (command, _answer) = wait_command();
        assert!(matches!(owners.route(id, command), Some(Ok(_))));
        assert!(
            !owners.claim(id, mpsc::channel(1).0),
            "owned: no second runner"
        );
    }

    #[test]
    fn a_runner_with_a_queued_command_does_not_park() {
        let mut owners = Owners::default();
        let id = SagaId::generate();
        let command_rx = running(&mut owners, id);
        let (command, _answer) = wait_command();
        let Some(Ok((command_tx, command))) = owners.route(id, command) else {
            panic!("a running saga's commands go to its runner");
        };
        command_tx.try_send(command).unwrap();
        assert_eq!(owners.park(id, Timestamp(100), &command_rx), None);
        assert_eq!(owners.parked(), 0);
        assert!(matches!(owners.slots.get(&id), Some(Slot::Running(_))));
    }

    #[test]
    fn after_a_rejoin_only_the_parked_sagas_that_moved_are_dropped() {
        let mut owners = Owners::default();
        let [mine, moved, busy] = ids(3).try_into().unwrap();
        for (id, due) in [(mine, 5), (moved, 7)] {
            let rx = running(&mut owners, id);
            owners.park(id, Timestamp(due), &rx).unwrap();
            owners.release(id);
        }
        // A running saga is its runner's to let go (at its next append).
        let _busy_rx = running(&mut owners, busy);
        let keep = HashSet::from([mine]);
        assert_eq!(owners.abandon_parked_except(&keep), 1);
        assert!(owners.contains(mine) && owners.contains(busy));
        assert!(!owners.contains(moved));
        assert_eq!(owners.parked(), 1);
        assert_eq!(owners.next_due(), Some(Timestamp(5)));
    }

    #[test]
    fn release_forgets_runners_not_parked_sagas() {
        let mut owners = Owners::default();
        let [a, b] = ids(2).try_into().unwrap();
        let _a_rx = running(&mut owners, a);
        let b_rx = running(&mut owners, b);
        owners.park(b, Timestamp(5), &b_rx).unwrap();
        owners.release(a);
        owners.release(b);
        assert!(!owners.contains(a));
        assert!(owners.contains(b), "a parked saga is the timer's");
        assert!(owners.abandon(b));
        assert!(!owners.contains(b));
        assert_eq!(owners.parked(), 0);
    }

    /// The timer and commands race for the same parked sagas from two threads:
    /// every saga is woken exactly once, by one of them.
    #[test]
    fn the_timer_and_commands_racing_wake_each_saga_exactly_once() {
        const SAGAS: usize = 2_000;
        let owners = Arc::new(Mutex::new(Owners::default()));
        let all = ids(SAGAS);
        {
            let mut owners = owners.lock().unwrap();
            for (i, &id) in all.iter().enumerate() {
                let command_rx = running(&mut owners, id);
                owners.park(id, Timestamp(i as u64), &command_rx).unwrap();
            }
        }
        let start = Arc::new(Barrier::new(2));
        let timer = {
            let (owners, start) = (owners.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut woken = Vec::new();
                loop {
                    let batch = owners.lock().unwrap().wake_due(Timestamp(u64::MAX), 7);
                    if batch.is_empty() {
                        return woken;
                    }
                    woken.extend(batch.into_iter().map(|w| w.id));
                }
            })
        };
        let commands = {
            let (owners, start, all) = (owners.clone(), start.clone(), all.clone());
            thread::spawn(move || {
                start.wait();
                let mut woken = Vec::new();
                for &id in all.iter().rev() {
                    let (command, _answer) = wait_command();
                    if let Some(Err(w)) = owners.lock().unwrap().route(id, command) {
                        woken.push(w.id);
                    }
                }
                woken
            })
        };
        let mut woken = timer.join().unwrap();
        woken.extend(commands.join().unwrap());
        woken.sort();
        let mut all = all;
        all.sort();
        assert_eq!(woken, all, "each saga woken exactly once");
        let owners = owners.lock().unwrap();
        assert_eq!((owners.len(), owners.parked()), (SAGAS, 0));
    }
}
