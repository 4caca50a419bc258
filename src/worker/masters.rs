//! Several masters on one database (a leader and its standbys, see
//! docs/standby.md): in which order a worker tries them, and where a
//! standby's "not the leader" refusal sends it.
//!
//! A *cycle* tries every `--master` once, in the order given (the order
//! is the operator's preference). A master that cannot be reached, or
//! refuses for a reason that may pass, moves the worker on to the next at
//! once. A standby that names the leader, when that leader is one of the
//! worker's addresses, sends the next attempt straight there: at most one
//! such hop per cycle, so that two standbys naming each other (both
//! confused during a takeover) cannot bounce the worker between them.
//! Only a whole cycle of failures waits (the jittered back-off).

use std::collections::VecDeque;

use super::address::MasterAddr;

/// The order of the attempts of one cycle, and its hop.
#[derive(Debug)]
pub(crate) struct Rotation {
    /// How many masters there are.
    count: usize,
    /// The masters (indexes) not yet tried in this cycle, in order.
    queue: VecDeque<usize>,
    /// The master of the attempt under way (the last [`Rotation::next`]).
    current: Option<usize>,
    /// This cycle's hop was taken.
    hopped: bool,
}

impl Rotation {
    /// Attempts over `count` masters (at least one), no cycle begun.
    pub(crate) fn new(count: usize) -> Self {
        assert!(count > 0, "a worker has at least one master");
        Rotation {
            count,
            queue: VecDeque::new(),
            current: None,
            hopped: false,
        }
    }

    /// Begin a cycle: every master once, in order, and a hop allowed.
    pub(crate) fn start_cycle(&mut self) {
        self.queue = (0..self.count).collect();
        self.current = None;
        self.hopped = false;
    }

    /// The master to try now, or `None` when this cycle has tried them
    /// all (time to back off).
    pub(crate) fn next(&mut self) -> Option<usize> {
        self.current = self.queue.pop_front();
        self.current
    }

    /// The master the following [`Rotation::next`] will return, if any.
    pub(crate) fn peek(&self) -> Option<usize> {
        self.queue.front().copied()
    }

    /// The master just tried says the leader is master `to`: try it next,
    /// unless this cycle already hopped or `to` is the master that just
    /// said so. True when the hop is taken.
    pub(crate) fn redirect(&mut self, to: usize) -> bool {
        if self.hopped || self.current == Some(to) || to >= self.count {
            return false;
        }
        self.hopped = true;
        self.queue.retain(|&i| i != to);
        self.queue.push_front(to);
        true
    }
}

/// Which of `ours` a standby's `leader` hint names (its `--advertise`
/// address, written as on `bbworker --master`). `None` when it does not
/// parse or is none of ours: the worker cannot go there (it would not
/// know how to verify it), and moves on in order.
pub(crate) fn leader_index(ours: &[MasterAddr], hint: &str) -> Option<usize> {
    let hint: MasterAddr = hint.trim().parse().ok()?;
    ours.iter().position(|addr| *addr == hint)
}

/// `A`, or `A, B and C`: the masters, for messages.
pub(crate) fn list(addrs: &[MasterAddr]) -> String {
    match addrs {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(ToString::to_string).collect();
            format!("{} and {last}", init.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masters one cycle tries, redirecting as `hints` says (the
    /// master at index `i` names `hints[i]` as the leader) and failing
    /// everywhere.
    fn cycle(count: usize, hints: &[Option<usize>]) -> Vec<usize> {
        let mut rotation = Rotation::new(count);
        rotation.start_cycle();
        let mut tried = Vec::new();
        while let Some(i) = rotation.next() {
            tried.push(i);
            if let Some(to) = hints.get(i).copied().flatten() {
                rotation.redirect(to);
            }
            assert!(tried.len() <= count + 1, "runaway cycle: {tried:?}");
        }
        tried
    }

    #[test]
    fn a_cycle_tries_every_master_once_in_order() {
        assert_eq!(cycle(1, &[]), [0]);
        assert_eq!(cycle(3, &[]), [0, 1, 2]);
        // And the next cycle starts over from the first.
        let mut rotation = Rotation::new(2);
        for _ in 0..2 {
            rotation.start_cycle();
            assert_eq!(rotation.peek(), Some(0));
            assert_eq!(rotation.next(), Some(0));
            assert_eq!(rotation.next(), Some(1));
            assert_eq!(rotation.next(), None);
        }
    }

    #[test]
    fn a_standby_naming_the_leader_sends_the_next_attempt_there() {
        // 0 names 2: 2 is tried next, then the rest in order, 2 not again.
        assert_eq!(cycle(3, &[Some(2)]), [0, 2, 1]);
        // Naming the one that is next anyway changes nothing.
        assert_eq!(cycle(3, &[Some(1)]), [0, 1, 2]);
    }

    #[test]
    fn one_hop_per_cycle_so_standbys_cannot_ping_pong() {
        // 0 names 1, 1 names 0: the second hop is refused, the cycle ends.
        assert_eq!(cycle(2, &[Some(1), Some(0)]), [0, 1]);
        // With a third master, the cycle goes on to it.
        assert_eq!(cycle(3, &[Some(1), Some(0)]), [0, 1, 2]);
        // A master that was tried already can be the hop's target once
        // (the leader that was briefly away, named by a later standby).
        assert_eq!(cycle(2, &[None, Some(0)]), [0, 1, 0]);
        // A master naming itself is not retried at once.
        assert_eq!(cycle(2, &[Some(0)]), [0, 1]);
        // Each cycle gets its own hop.
        let mut rotation = Rotation::new(2);
        for _ in 0..3 {
            rotation.start_cycle();
            assert_eq!(rotation.next(), Some(0));
            assert!(rotation.redirect(1));
            assert_eq!(rotation.next(), Some(1));
            assert!(!rotation.redirect(0));
            assert_eq!(rotation.next(), None);
        }
    }

    #[test]
    fn the_hint_must_be_one_of_our_addresses() {
        let ours: Vec<MasterAddr> = ["tls://a.example:9989", "tls://b.example:9989"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(leader_index(&ours, "tls://b.example:9989"), Some(1));
        // Host names compare without case, as they are parsed.
        assert_eq!(leader_index(&ours, "tls://A.Example:9989"), Some(0));
        assert_eq!(leader_index(&ours, "tls://c.example:9989"), None);
        assert_eq!(leader_index(&ours, "tcp://b.example:9989"), None);
        assert_eq!(leader_index(&ours, "tls://b.example:9990"), None);
        assert_eq!(leader_index(&ours, "tls://b.example"), None);
        assert_eq!(leader_index(&ours, ""), None);
        assert_eq!(list(&ours), "tls://a.example:9989 and tls://b.example:9989");
        assert_eq!(list(&ours[..1]), "tls://a.example:9989");
    }
}
