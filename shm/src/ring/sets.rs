//! Distributor sets (spec §5.9): which sequences a group is owed, and where its runs lie.
//!
//! A group without sets is owed every sequence from its start and claims runs of `batch`
//! wherever its claim position stands. A group that is set `set` of `sets` is owed only the
//! runs dealt to that set: runs are aligned to sequence numbers (run `r` is
//! `[r·batch, (r+1)·batch)`) and run `r` belongs to set `r mod sets`. The arithmetic is
//! the same for every party, so the sets of a group need no shared state to agree.

/// The sets a ring can deal runs to; keeps `sets · batch` far from overflowing a u64.
pub const MAX_SETS: u32 = 1 << 20;

/// The runs a group is owed: its batch, and its set when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deal {
    batch: u64,
    /// `(set, sets)`, `set < sets`; `None`: every sequence.
    set: Option<(u64, u64)>,
}

impl Deal {
    /// `batch ≥ 1`; a set is `(set, sets)` with `set < sets ≤ MAX_SETS` (checked at join).
    pub fn new(batch: u32, set: Option<(u32, u32)>) -> Deal {
        Deal {
            batch: u64::from(batch.max(1)),
            set: set.map(|(s, k)| (u64::from(s), u64::from(k.max(1)))),
        }
    }

    /// Whether sequence `seq` is owed.
    #[cfg(test)]
    fn owes(&self, seq: u64) -> bool {
        self.set
            .is_none_or(|(set, sets)| (seq / self.batch) % sets == set)
    }

    /// The first owed sequence at or after `seq`: where a group formed at `head = seq`
    /// starts claiming. A head inside one of the set's runs starts there (the rest of that
    /// run is owed), else at the start of the set's next run.
    pub fn first_from(&self, seq: u64) -> u64 {
        let Some((set, sets)) = self.set else {
            return seq;
        };
        let run = seq / self.batch;
        match (set + sets - run % sets) % sets {
            0 => seq,
            ahead => (run + ahead) * self.batch,
        }
    }

    /// The end (exclusive) of the run claimed at `start`, an owed sequence.
    pub fn run_end(&self, start: u64) -> u64 {
        match self.set {
            None => start + self.batch,
            Some(_) => (start / self.batch + 1) * self.batch,
        }
    }

    /// The claim position after the run claimed at `start`: the start of the set's next
    /// run, stepping over the other sets' runs.
    pub fn next_claim(&self, start: u64) -> u64 {
        match self.set {
            None => start + self.batch,
            Some((_, sets)) => (start / self.batch + sets) * self.batch,
        }
    }

    /// Owed sequences below `seq`, counted from 0.
    fn owed_below(&self, seq: u64) -> u64 {
        let Some((set, sets)) = self.set else {
            return seq;
        };
        let round = sets * self.batch;
        let into = (seq % round).saturating_sub(set * self.batch);
        seq / round * self.batch + into.min(self.batch)
    }

    /// Owed sequences in `[from, to)`: a group formed at `from` with `head = to` was
    /// published this many frames (spec §12).
    pub fn owed(&self, from: u64, to: u64) -> u64 {
        self.owed_below(to)
            .saturating_sub(self.owed_below(from.min(to)))
    }

    /// The newest owed sequence below `head`, if any: where a lossy group more than a ring
    /// behind skips to (spec §5.5).
    pub fn newest_below(&self, head: u64) -> Option<u64> {
        let last = head.checked_sub(1)?;
        let Some((set, sets)) = self.set else {
            return Some(last);
        };
        let run = last / self.batch;
        let back = (run % sets + sets - set) % sets;
        match back {
            0 => Some(last),
            _ => run
                .checked_sub(back)
                .map(|r| r * self.batch + self.batch - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every formula against counting sequence by sequence.
    #[test]
    fn the_formulas_agree_with_counting() {
        for batch in 1..=4u32 {
            for sets in 1..=4u32 {
                for set in 0..sets {
                    let deal = Deal::new(batch, Some((set, sets)));
                    for seq in 0..60u64 {
                        let first = (seq..).find(|&s| deal.owes(s)).unwrap();
                        assert_eq!(deal.first_from(seq), first, "{deal:?} from {seq}");
                        let below = (0..seq).filter(|&s| deal.owes(s)).count() as u64;
                        assert_eq!(deal.owed_below(seq), below, "{deal:?} below {seq}");
                        let newest = (0..seq).rev().find(|&s| deal.owes(s));
                        assert_eq!(deal.newest_below(seq), newest, "{deal:?} under {seq}");
                        if deal.owes(seq) {
                            let end =
                                (seq..).find(|&s| s / u64::from(batch) != seq / u64::from(batch));
                            assert_eq!(Some(deal.run_end(seq)), end);
                            let next = (deal.run_end(seq)..).find(|&s| deal.owes(s)).unwrap();
                            assert_eq!(deal.next_claim(seq), next, "{deal:?} after {seq}");
                        }
                    }
                }
            }
        }
    }

    /// Without sets a group is owed everything and claims runs where it stands.
    #[test]
    fn without_sets_every_sequence_is_owed() {
        let deal = Deal::new(3, None);
        assert_eq!(deal.first_from(7), 7);
        assert_eq!(deal.run_end(7), 10);
        assert_eq!(deal.next_claim(7), 10);
        assert_eq!(deal.owed(5, 12), 7);
        assert_eq!(deal.newest_below(12), Some(11));
        assert_eq!(deal.newest_below(0), None);
    }

    /// Strict round-robin is a set per worker: worker k of 3 gets runs k, k+3, ...
    #[test]
    fn round_robin_deals_run_k_to_worker_k() {
        let deals: Vec<Deal> = (0..3).map(|k| Deal::new(2, Some((k, 3)))).collect();
        for seq in 0..30u64 {
            let owners: Vec<usize> = (0..3).filter(|&k| deals[k].owes(seq)).collect();
            assert_eq!(owners, [(seq / 2 % 3) as usize]);
        }
        // The sets partition the stream: their counts add up to every frame.
        let total: u64 = deals.iter().map(|d| d.owed(5, 29)).sum();
        assert_eq!(total, 24);
    }
}
