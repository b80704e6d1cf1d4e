//! The barrier's rules, as one pure function of what the store holds for a
//! step: every store reads the same three facts under its lock, asks
//! [`judge`], and does what the [`Ruling`] says in one local transaction.
//!
//! | the store holds for (saga, step) | the call | ruling |
//! | --- | --- | --- |
//! | a higher epoch than the call's | any | [`Ruling::Stale`]: refused, nothing recorded |
//! | a record of this action | any | [`Ruling::Replay`] the first answer |
//! | a compensation record | forward | [`Ruling::Record`] a rejection: it arrived after its undo |
//! | no succeeded forward | compensate | [`Ruling::Record`] "nothing to undo" (succeeded) |
//! | otherwise | any | [`Ruling::Run`] the handler |
//!
//! Invariants:
//! - The handler runs at most once per (saga, step, action) with a final
//!   answer, and never for a forward after its compensation nor for a
//!   compensation with nothing to undo.
//! - The epoch check comes first: a deposed caller learns nothing, not even
//!   a recorded answer.

use super::call::{Action, Final, Verdict};

/// The reason recorded for a compensation whose forward never ran here.
pub const NOTHING_TO_UNDO: &str = "nothing to undo: the forward call never took effect here";
/// The reason recorded for a forward that arrived after its compensation.
pub const COMPENSATED_FIRST: &str =
    "already compensated: this forward call arrived after its compensation and did nothing";

/// What the store holds for one (saga, step).
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The recorded answer of the forward action.
    pub forward: Option<Final>,
    /// The recorded answer of the compensate action.
    pub compensate: Option<Final>,
    /// The highest epoch any call for this step was made under.
    pub epoch: Option<u64>,
}

/// What to do with one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Ruling {
    /// Refuse it: its epoch is below `seen`.
    Stale { seen: u64 },
    /// Answer this again, running and recording nothing.
    Replay(Final),
    /// Record this as the action's answer and give it, without the handler.
    Record(Final),
    /// Run the handler; record its answer with its effect if it is final.
    Run,
}

/// The ruling for a call of `action` under `epoch`, given what is `seen`.
pub fn judge(action: Action, epoch: Option<u64>, seen: &Seen) -> Ruling {
    if let (Some(epoch), Some(high)) = (epoch, seen.epoch)
        && epoch < high
    {
        return Ruling::Stale { seen: high };
    }
    let (this, other) = match action {
        Action::Forward => (&seen.forward, &seen.compensate),
        Action::Compensate => (&seen.compensate, &seen.forward),
    };
    if let Some(first) = this {
        return Ruling::Replay(first.clone());
    }
    match action {
        Action::Forward if other.is_some() => Ruling::Record(Final::rejected(COMPENSATED_FIRST)),
        Action::Compensate if !matches!(other, Some(f) if f.verdict == Verdict::Succeeded) => {
            let mut nothing = Final::succeeded(Vec::new());
            nothing.reason = NOTHING_TO_UNDO.to_string();
            Ruling::Record(nothing)
        }
        _ => Ruling::Run,
    }
}

/// The epoch to store after a call under `epoch` (when it is news).
pub fn raised_epoch(epoch: Option<u64>, seen: Option<u64>) -> Option<u64> {
    match (epoch, seen) {
        (Some(e), Some(s)) if e > s => Some(e),
        (Some(e), None) => Some(e),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Option<Final> {
        Some(Final::succeeded(b"{}".to_vec()))
    }

    #[test]
    fn the_table_of_rulings() {
        let no = Seen::default();
        let forwarded = Seen {
            forward: ok(),
            ..Seen::default()
        };
        let declined = Seen {
            forward: Some(Final::rejected("declined")),
            ..Seen::default()
        };
        let undone = Seen {
            compensate: ok(),
            ..Seen::default()
        };
        use Action::*;
        assert_eq!(judge(Forward, None, &no), Ruling::Run);
        assert_eq!(
            judge(Forward, None, &forwarded),
            Ruling::Replay(ok().unwrap())
        );
        assert_eq!(judge(Compensate, None, &forwarded), Ruling::Run);
        assert!(
            matches!(judge(Compensate, None, &no), Ruling::Record(f) if f.reason == NOTHING_TO_UNDO)
        );
        assert!(
            matches!(judge(Compensate, None, &declined), Ruling::Record(f) if f.reason == NOTHING_TO_UNDO)
        );
        assert!(
            matches!(judge(Forward, None, &undone), Ruling::Record(f) if f.verdict == Verdict::Rejected)
        );
        let epoch8 = Seen {
            epoch: Some(8),
            ..forwarded.clone()
        };
        assert_eq!(judge(Forward, Some(7), &epoch8), Ruling::Stale { seen: 8 });
        assert_eq!(judge(Compensate, Some(8), &epoch8), Ruling::Run);
        // A call without an epoch (a single node) is never stale.
        assert_eq!(judge(Compensate, None, &epoch8), Ruling::Run);
        assert_eq!(raised_epoch(Some(9), Some(8)), Some(9));
        assert_eq!(raised_epoch(Some(8), Some(8)), None);
        assert_eq!(raised_epoch(None, Some(8)), None);
    }
}
