//! Flood control: a token bucket in front of the connection, one queue
//! per target, and notifications merged when a target's queue backs up.
//!
//! Servers kill a client that sends too fast ("Excess Flood"); answering
//! `status` with twenty lines at once is enough on some networks. Lines
//! leave at the bucket's pace: a short burst, then one per interval.
//! Protocol lines (PONG, registration, JOIN) go first, ahead of messages,
//! and also use tokens, so they never starve but count as the server counts.
//! Targets take turns, so a busy channel never starves a private answer.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::line::{irc_lower, split_text, text_budget};

/// Lines that may leave at once after a quiet time.
pub const BURST: u32 = 5;
/// One line per this once the burst is spent.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Notifications queued for one target before they are merged into one.
pub const MERGE_AT: usize = 3;
/// Events named in a merged summary; the rest are counted.
const SUMMARY_NAMES: usize = 8;

/// A token bucket on an explicit clock.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    interval: Duration,
    last: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(burst: u32, interval: Duration, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            interval,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64()).min(self.burst);
    }

    /// Takes a token if one is there.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there (`now` if it is).
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + self.interval.mul_f64(1.0 - self.tokens)
        }
    }
}

/// One queued message for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// An answer or a single notification, sent as is (split if long).
    Text(String),
    /// A notification that may be merged: its full text and short form.
    Note { text: String, short: String },
    /// Several notifications merged: their short forms and how many.
    Merged { shorts: Vec<String>, count: usize },
}

impl Item {
    fn text(&self) -> String {
        match self {
            Item::Text(text) | Item::Note { text, .. } => text.clone(),
            Item::Merged { shorts, count } => {
                let mut text = format!("{count} events (merged, the channel was busy): ");
                text.push_str(&shorts.join(", "));
                if *count > shorts.len() {
                    text.push_str(&format!(" and {} more", count - shorts.len()));
                }
                text
            }
        }
    }
}

/// Everything waiting to be sent, and the bucket that paces it.
#[derive(Debug)]
pub struct Outbox {
    bucket: Bucket,
    /// Protocol lines, first come first served, ahead of messages.
    control: VecDeque<String>,
    /// Message queues by target (lower case), with the target as written.
    queues: BTreeMap<String, (String, VecDeque<Item>)>,
    /// Lines of a split message still to send (they keep their order).
    pending: VecDeque<String>,
    /// The target served last, for taking turns.
    last_target: Option<String>,
}

impl Outbox {
    /// An empty outbox with a full bucket.
    pub fn new(now: Instant) -> Self {
        Outbox {
            bucket: Bucket::new(BURST, INTERVAL, now),
            control: VecDeque::new(),
            queues: BTreeMap::new(),
            pending: VecDeque::new(),
            last_target: None,
        }
    }

    /// Queues a protocol line (sent before any message).
    pub fn control(&mut self, line: String) {
        self.control.push_back(line);
    }

    /// Queues a message (an answer) for `target`.
    pub fn say(&mut self, target: &str, text: String) {
        self.queue(target).push_back(Item::Text(text));
    }

    /// Queues a notification for `target`; when [`MERGE_AT`] are already
    /// waiting there, all of them become one summary line.
    pub fn notify(&mut self, target: &str, text: String, short: String) {
        let queue = self.queue(target);
        let waiting = queue.iter().filter(|i| !matches!(i, Item::Text(_))).count();
        if waiting < MERGE_AT && !matches!(queue.back(), Some(Item::Merged { .. })) {
            queue.push_back(Item::Note { text, short });
            return;
        }
        // The first ones stay as they are; the rest become one summary
        // at the tail, which later notifications join.
        match queue.back_mut() {
            Some(Item::Merged { shorts, count }) => {
                *count += 1;
                if shorts.len() < SUMMARY_NAMES {
                    shorts.push(short);
                }
            }
            Some(Item::Note { .. }) => {
                let Some(Item::Note { short: last, .. }) = queue.pop_back() else {
                    unreachable!("just matched")
                };
                queue.push_back(Item::Merged {
                    shorts: vec![last, short],
                    count: 2,
                });
            }
            _ => queue.push_back(Item::Note { text, short }),
        }
    }

    fn queue(&mut self, target: &str) -> &mut VecDeque<Item> {
        &mut self
            .queues
            .entry(irc_lower(target))
            .or_insert_with(|| (target.to_owned(), VecDeque::new()))
            .1
    }

    /// Drops what waits for `target` (a channel a reload removed: the bot
    /// has parted it, and a message there would only be refused).
    pub fn forget(&mut self, target: &str) {
        self.queues.remove(&irc_lower(target));
    }

    /// Drops the protocol lines of a connection that ended (they mean
    /// nothing to the next one); messages wait for the next connection.
    pub fn new_connection(&mut self) {
        self.control.clear();
    }

    /// How many messages wait (not protocol lines), for `status`.
    pub fn backlog(&self) -> usize {
        self.pending.len() + self.queues.values().map(|(_, q)| q.len()).sum::<usize>()
    }

    /// Anything to send? Messages count only when `messages` (the
    /// session is registered).
    fn has_work(&self, messages: bool) -> bool {
        !self.control.is_empty()
            || (messages && (!self.pending.is_empty() || !self.queues.is_empty()))
    }

    /// The next line to write now, if the bucket allows one; `nick` is
    /// ours, for the length budget; messages only when `messages` (the
    /// session is registered). Before registration, protocol lines are
    /// not held back (there are a handful, and a SASL exchange paced at
    /// one line per 2 s would run into its own timeout); they still use
    /// up the burst.
    pub fn next_line(&mut self, now: Instant, nick: &str, messages: bool) -> Option<String> {
        if !self.has_work(messages) {
            return None;
        }
        if !messages && !self.control.is_empty() {
            let _ = self.bucket.take(now);
            return self.control.pop_front();
        }
        if !self.bucket.take(now) {
            return None;
        }
        if let Some(line) = self.control.pop_front() {
            return Some(line);
        }
        if let Some(line) = self.pending.pop_front() {
            return Some(line);
        }
        // Take turns: the first target after the one served last.
        let key = match &self.last_target {
            Some(last) => self
                .queues
                .range::<String, _>((
                    std::ops::Bound::Excluded(last.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .or_else(|| self.queues.iter().next())
                .map(|(k, _)| k.clone()),
            None => self.queues.keys().next().cloned(),
        }?;
        let (target, queue) = self.queues.get_mut(&key)?;
        let target = target.clone();
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&key);
        }
        self.last_target = Some(key);
        let text = item?.text();
        let mut lines = split_text(&text, text_budget(nick, &target))
            .into_iter()
            .map(|part| format!("PRIVMSG {target} :{part}"));
        let first = lines.next();
        self.pending.extend(lines);
        first
    }

    /// When [`Self::next_line`] may yield a line (`None`: nothing waits).
    pub fn ready_at(&mut self, now: Instant, messages: bool) -> Option<Instant> {
        if !self.has_work(messages) {
            return None;
        }
        if !messages && !self.control.is_empty() {
            return Some(now);
        }
        Some(self.bucket.ready_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_per_interval() {
        let t0 = Instant::now();
        let mut b = Bucket::new(5, INTERVAL, t0);
        for _ in 0..5 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        assert_eq!(b.ready_at(t0), t0 + INTERVAL);
        assert!(!b.take(t0 + Duration::from_millis(1900)));
        assert!(b.take(t0 + Duration::from_millis(2000)));
        // A long quiet time refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }

    #[test]
    fn a_forgotten_target_loses_what_waited_for_it_and_others_keep_theirs() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0);
        o.notify("#Gone", "a".into(), "a".into());
        o.notify("#stays", "b".into(), "b".into());
        o.forget("#gone");
        assert_eq!(o.backlog(), 1);
        assert_eq!(
            o.next_line(t0, "bot", true).as_deref(),
            Some("PRIVMSG #stays :b")
        );
        assert_eq!(o.next_line(t0, "bot", true), None);
    }

    #[test]
    fn twenty_answer_lines_leave_at_the_buckets_pace() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0);
        for i in 0..20 {
            o.say("alice", format!("line {i}"));
        }
        let mut sent = Vec::new();
        let mut now = t0;
        while let Some(at) = o.ready_at(now, true) {
            now = at;
            if let Some(line) = o.next_line(now, "bot", true) {
                sent.push((now - t0, line));
            }
        }
        assert_eq!(sent.len(), 20);
        assert_eq!(sent[0].1, "PRIVMSG alice :line 0");
        assert!(sent[4].0 == Duration::ZERO);
        assert!(sent[5].0 >= INTERVAL, "{:?}", sent[5]);
        assert!(sent[19].0 >= INTERVAL * 15);
    }

    #[test]
    fn registration_lines_are_not_held_back_but_messages_wait_for_it() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0);
        o.say("#a", "early".into());
        for i in 0..12 {
            o.control(format!("AUTHENTICATE {i}"));
        }
        let lines: Vec<_> = (0..20)
            .filter_map(|_| o.next_line(t0, "bot", false))
            .collect();
        assert_eq!(lines.len(), 12, "{lines:?}");
        assert_eq!(
            o.ready_at(t0, false),
            None,
            "the message waits for registration"
        );
        // Registered: the burst is spent, so the message is paced.
        assert_eq!(o.next_line(t0, "bot", true), None);
        assert_eq!(o.ready_at(t0, true), Some(t0 + INTERVAL));
    }

    #[test]
    fn protocol_lines_go_first_and_targets_take_turns() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0);
        o.say("#a", "a1".into());
        o.say("#a", "a2".into());
        o.say("bob", "b1".into());
        o.control("PONG :x".into());
        let lines: Vec<_> = (0..4)
            .filter_map(|_| o.next_line(t0, "bot", true))
            .collect();
        assert_eq!(
            lines,
            vec![
                "PONG :x",
                "PRIVMSG #a :a1",
                "PRIVMSG bob :b1",
                "PRIVMSG #a :a2"
            ]
        );
    }

    #[test]
    fn a_backed_up_channel_gets_one_merged_summary() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0);
        for i in 0..200 {
            o.notify("#b", format!("build {i} failed"), format!("x #{i} failure"));
        }
        assert_eq!(o.backlog(), MERGE_AT);
        let lines: Vec<_> = (0..10)
            .filter_map(|_| o.next_line(t0, "bot", true))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "PRIVMSG #b :build 0 failed");
        assert_eq!(lines[1], "PRIVMSG #b :build 1 failed");
        assert!(
            lines[2].starts_with("PRIVMSG #b :198 events (merged"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("and 190 more"), "{}", lines[2]);
    }

    #[test]
    fn a_long_message_is_split_into_lines_that_keep_their_order() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0);
        o.say("#a", "y".repeat(1000));
        o.say("#b", "z".into());
        let lines: Vec<_> = (0..5)
            .filter_map(|_| o.next_line(t0, "bot", true))
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[..3].iter().all(|l| l.starts_with("PRIVMSG #a :y")));
        assert!(lines.iter().all(|l| l.len() + 2 <= 512));
        assert_eq!(lines[3], "PRIVMSG #b :z");
    }
}
