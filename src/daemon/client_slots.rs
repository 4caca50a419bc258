//! Who gets a control connection when many want one.
//!
//! `max_clients` bounds the connections open at once, so that a flood
//! cannot exhaust the master's file descriptors. Alone it would let one
//! allowed user (or one runaway script of the owner's) take every slot and
//! lock everybody out, the owner included. So:
//!
//! - every uid other than the master's own holds at most half of
//!   `max_clients` (at least one);
//! - the owner (the master's uid, and root) has [`OWNER_RESERVE`] slots
//!   beyond `max_clients` that only it may use, so `bbctl shutdown` always
//!   gets through;
//! - a connection that sends no request for [`IDLE_TIMEOUT`] after its
//!   handshake is closed (see `control`), so slots cannot be held by
//!   doing nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Slots beyond `max_clients` kept for the master's own user.
pub const OWNER_RESERVE: usize = 4;

/// A control connection that sends nothing for this long is closed (a
/// stream in progress is not idle: the master is the one writing).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts of open control connections, in all and per uid.
#[derive(Debug, Default)]
pub struct ClientSlots {
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoSlot {
    /// Every slot is taken.
    #[error("too many connections: the master serves at most {max} clients at once (max_clients)")]
    Full {
        /// `max_clients`.
        max: usize,
    },
    /// This uid holds its share already.
    #[error(
        "too many connections from uid {uid}: one user may hold at most {share} of the \
         master's {max} client slots (max_clients)"
    )]
    UserShare {
        /// The peer's uid.
        uid: u32,
        /// Its share.
        share: usize,
        /// `max_clients`.
        max: usize,
    },
}

impl ClientSlots {
    /// Take a slot for a peer of `uid` (`None`: unknown), on a master run
    /// by `own_uid` with `max` = `max_clients`. The slot is given back when
    /// the returned guard is dropped, however the connection ends.
    pub fn take(
        self: &Arc<Self>,
        uid: Option<u32>,
        own_uid: u32,
        max: usize,
    ) -> Result<ClientSlot, NoSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let owner = uid.is_some_and(|u| u == own_uid || u == 0);
        let limit = if owner { max + OWNER_RESERVE } else { max };
        if open.total >= limit {
            return Err(NoSlot::Full { max });
        }
        let key = uid.unwrap_or(u32::MAX);
        let share = (max / 2).max(1);
        let held = open.per_uid.get(&key).copied().unwrap_or(0);
        if !owner && held >= share {
            return Err(NoSlot::UserShare {
                uid: key,
                share,
                max,
            });
        }
        open.total += 1;
        *open.per_uid.entry(key).or_insert(0) += 1;
        Ok(ClientSlot {
            slots: Arc::clone(self),
            uid: key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    uid: u32,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(n) = open.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.per_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u32 = 1000;

    #[test]
    fn another_user_holds_at_most_half() {
        let slots = Arc::new(ClientSlots::default());
        let held: Vec<_> = (0..4)
            .map(|_| slots.take(Some(2000), OWN, 8).unwrap())
            .collect();
        assert_eq!(
            slots.take(Some(2000), OWN, 8).unwrap_err(),
            NoSlot::UserShare {
                uid: 2000,
                share: 4,
                max: 8
            }
        );
        // Others still get in.
        let _third = slots.take(Some(3000), OWN, 8).unwrap();
        drop(held);
        assert_eq!(slots.open(), 1);
        slots.take(Some(2000), OWN, 8).unwrap();
    }

    #[test]
    fn the_owner_gets_in_when_everyone_else_is_full() {
        let slots = Arc::new(ClientSlots::default());
        let _a: Vec<_> = (0..2)
            .map(|_| slots.take(Some(2000), OWN, 4).unwrap())
            .collect();
        let _b: Vec<_> = (0..2)
            .map(|_| slots.take(Some(3000), OWN, 4).unwrap())
            .collect();
        assert_eq!(
            slots.take(Some(4000), OWN, 4).unwrap_err(),
            NoSlot::Full { max: 4 }
        );
        let owner: Vec<_> = (0..OWNER_RESERVE)
            .map(|_| slots.take(Some(OWN), OWN, 4).unwrap())
            .collect();
        assert_eq!(owner.len(), OWNER_RESERVE);
        assert!(slots.take(Some(OWN), OWN, 4).is_err());
        assert!(slots.take(Some(0), OWN, 4).is_err());
    }

    #[test]
    fn a_limit_of_one_still_admits_one_user() {
        let slots = Arc::new(ClientSlots::default());
        let _one = slots.take(Some(2000), OWN, 1).unwrap();
        assert!(slots.take(Some(2000), OWN, 1).is_err());
    }
}
