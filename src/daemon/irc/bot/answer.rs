//! Answering commands said to the bot: notify settings here, the rest off the bot's loop.

use tokio::sync::mpsc;
use tracing::{error, info};

use crate::daemon::auth::Principal;
use crate::daemon::handle::MasterHandle;
use crate::protocol::{BuildId, Reply};

use super::super::commands::{self, Cmd};
use super::super::line::irc_eq;
use super::super::session::Incoming;
use super::{Back, Bot};

impl Bot {
    /// Someone asked something: answer off the bot's loop.
    pub(super) fn command(&mut self, incoming: Incoming) {
        let cmd = commands::parse(&incoming.text);
        let target = incoming.reply_to.clone();
        let prefix = if incoming.channel.is_some() {
            format!("{}: ", incoming.nick)
        } else {
            String::new()
        };
        match &cmd {
            Cmd::NotifyOn(events) | Cmd::NotifyOff(events) => {
                let answer = match self.channel_config(incoming.channel.as_deref()) {
                    None => "notify is set per channel: say it in the channel".to_string(),
                    Some((name, config)) => {
                        let on = matches!(cmd, Cmd::NotifyOn(_));
                        match self.prefs.set(&name, &config, events, on) {
                            Ok(now) => format!("{name} is notified of: {}", list_or_none(&now)),
                            Err(e) => {
                                error!("irc: {e}");
                                format!("not saved: {e}")
                            }
                        }
                    }
                };
                self.outbox.say(&target, format!("{prefix}{answer}"));
            }
            Cmd::NotifyList => {
                let answer = match self.channel_config(incoming.channel.as_deref()) {
                    None => "notify is set per channel: say it in the channel".to_string(),
                    Some((name, config)) => format!(
                        "{name} is notified of: {}",
                        list_or_none(&self.prefs.effective(&name, &config))
                    ),
                };
                self.outbox.say(&target, format!("{prefix}{answer}"));
            }
            _ => {
                let master = self.master.clone();
                let back = self.back_tx.clone();
                let who = Principal::IrcAccount {
                    account: incoming.account.clone(),
                };
                if matches!(cmd, Cmd::Force { .. } | Cmd::Stop { .. }) {
                    info!(
                        "irc: {} (account {}) asks {:?}",
                        incoming.nick,
                        incoming.account.as_deref().unwrap_or("none"),
                        incoming.text
                    );
                }
                tokio::spawn(async move {
                    let lines = if let Cmd::Watch(build) = cmd {
                        watch(&master, &who, build, &target, &back).await
                    } else {
                        commands::answer(
                            &master,
                            &who,
                            &incoming.nick,
                            &cmd,
                            crate::paths::now_ms(),
                        )
                        .await
                    };
                    let lines = lines.into_iter().map(|l| format!("{prefix}{l}")).collect();
                    let _ = back.send(Back::Say(target, lines)).await;
                });
            }
        }
    }

    /// The configured channel a command was said in, with its notify list.
    pub(super) fn channel_config(&self, channel: Option<&str>) -> Option<(String, Vec<String>)> {
        let channel = channel?;
        self.settings
            .channels
            .iter()
            .find(|c| irc_eq(&c.name, channel))
            .map(|c| (c.name.clone(), c.notify.clone()))
    }
}

/// `watch BUILD`: answer now if it is over, else register the watcher.
async fn watch(
    master: &MasterHandle,
    who: &Principal,
    build: BuildId,
    target: &str,
    back: &mpsc::Sender<Back>,
) -> Vec<String> {
    match master.build(who, build).await {
        Ok(Reply::Build(detail)) => match detail.summary.result {
            Some(result) => vec![format!(
                "build {build} ({}) already ended: {}",
                detail.summary.builder,
                result.as_str()
            )],
            None => {
                let _ = back.send(Back::Watch(build, target.to_owned())).await;
                vec![format!(
                    "watching build {build} ({}): one message when it ends",
                    detail.summary.builder
                )]
            }
        },
        Ok(_) => vec!["unexpected answer".into()],
        Err(e) => vec![format!("error: {}", e.message)],
    }
}

fn list_or_none(events: &[String]) -> String {
    if events.is_empty() {
        "nothing".into()
    } else {
        events.join(", ")
    }
}
