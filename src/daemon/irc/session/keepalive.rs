//! Time passing: registration deadlines, keepalive PING/PONG, rejoins and nick reclaim.

use std::time::Instant;

use super::super::line::irc_lower;
use super::{Level, Out, Phase, Session, join_line};

impl Session {
    /// The earliest time [`Self::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let keepalive = (self.phase == Phase::Ready && self.pong_deadline.is_none())
            .then(|| self.last_rx + self.timing.keepalive);
        [
            self.phase_deadline,
            self.pong_deadline,
            keepalive,
            self.reclaim_at,
            self.rejoin_at.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed: deadlines, keepalive, rejoins, nick reclaim.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        if let Some(deadline) = self.phase_deadline
            && now >= deadline
        {
            self.phase_deadline = None;
            match self.phase {
                Phase::SaslStart | Phase::SaslResult => {
                    out.push(Out::Send("AUTHENTICATE *".into()));
                    out.extend(self.sasl_failed(
                        format!(
                            "no answer to SASL within {} s (services down?)",
                            self.timing.sasl_timeout.as_secs()
                        ),
                        now,
                    ));
                }
                Phase::NickServ => {
                    out.push(Out::Log(
                        Level::Warn,
                        format!(
                            "NickServ did not confirm IDENTIFY within {} s; joining anyway",
                            self.timing.nickserv_timeout.as_secs()
                        ),
                    ));
                    out.extend(self.welcome_done_after_nickserv(now));
                }
                _ => {
                    self.phase = Phase::Closed;
                    out.push(Out::Close {
                        reason: format!(
                            "registration did not complete within {} s",
                            self.timing.register_timeout.as_secs()
                        ),
                        quit: true,
                    });
                    return out;
                }
            }
        }
        if self.phase != Phase::Ready {
            return out;
        }
        if let Some(deadline) = self.pong_deadline
            && now >= deadline
        {
            self.phase = Phase::Closed;
            out.push(Out::Close {
                reason: format!(
                    "no PONG within {} s: the server is not answering",
                    self.timing.pong_timeout.as_secs()
                ),
                quit: false,
            });
            return out;
        }
        if self.pong_deadline.is_none() && now >= self.last_rx + self.timing.keepalive {
            self.pong_deadline = Some(now + self.timing.pong_timeout);
            self.ping_sent = Some(now);
            out.push(Out::Send(format!("PING :bbmaster-{}", self.nick)));
        }
        let due: Vec<String> = self
            .rejoin_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.rejoin_at.remove(&key);
            if let Some(channel) = self.channels.iter().find(|c| irc_lower(&c.name) == key) {
                out.push(Out::Send(join_line(channel)));
            }
        }
        if let Some(at) = self.reclaim_at
            && now >= at
        {
            self.reclaim_at = Some(now + self.timing.reclaim_every);
            out.push(Out::Send(format!("NICK {}", self.id.nick)));
        }
        out
    }
}
