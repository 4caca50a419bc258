//! The IRC bot (issue 17) against a real IRC server, Debian's `ngircd` on
//! loopback (`crate::testkit::ircd`): how soon a finished build reaches a
//! client in the channel, and a flood of failures (the bot is not kicked,
//! every channel hears a merged summary, and the master's dispatch does
//! not slow down). Without ngircd both print a line saying so and report
//! "not available".

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Ctx;
use super::harness::{Master, last_json};
use super::latency::{local_config, start_local};
use super::report::{Report, Row, Target};
use super::stats::{median, ms};
use crate::testkit::ircd::{IrcClient, IrcdError, Ngircd};

/// The bot's nick in these runs.
const NICK: &str = "bbot";

/// How long anything the bot should say may take to arrive.
const LONG: Duration = Duration::from_secs(30);

/// `[irc]` for ngircd on `port`, with `channels` (name, notify words).
fn irc_section(port: u16, channels: &[(&str, &str)]) -> String {
    let channels: Vec<String> = channels
        .iter()
        .map(|(name, notify)| format!("{{ name = \"{name}\", notify = [\"{notify}\"] }}"))
        .collect();
    format!(
        "[irc]\nserver = \"127.0.0.1\"\nport = {port}\ntls = false\nnick = \"{NICK}\"\nchannels = [{}]\n",
        channels.join(", ")
    )
}

/// ngircd in a scratch dir, or `None` after reporting the scenario as
/// not available (ngircd is not installed).
fn server(ctx: &Ctx, report: &mut Report, scenario: &str, metric: &str) -> Result<Option<Ngircd>> {
    let dir = ctx.scratch.dir("irc")?;
    match Ngircd::start(&dir) {
        Ok(server) => Ok(Some(server)),
        Err(IrcdError::NotInstalled) => {
            eprintln!("   SKIPPED {scenario}: ngircd is not installed (apt-get install ngircd)");
            report.push(Row::not_available(
                scenario,
                metric,
                "ngircd is not installed",
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A client in `channels`, and a master whose bot has joined them all.
fn client_and_master(
    ctx: &Ctx,
    server: &Ngircd,
    config: &str,
    channels: &[&str],
) -> Result<(IrcClient, Master)> {
    let mut client = IrcClient::connect(server.port, "watcher")?;
    for channel in channels {
        client.send(&format!("JOIN {channel}"))?;
        client.expect(&format!("the watcher in {channel}"), LONG, |l| {
            l.starts_with(":watcher!") && l.contains("JOIN") && l.contains(channel)
        })?;
    }
    let master = start_local(ctx, config, 1)?;
    for channel in channels {
        client.expect(&format!("the bot joining {channel}"), LONG, |l| {
            l.starts_with(&format!(":{NICK}!")) && l.contains("JOIN") && l.contains(channel)
        })?;
    }
    Ok((client, master))
}

/// A finished build to the notification line at a client in the channel:
/// the client's arrival time minus the build's `finished_at_ms`. Builds
/// are paced a little slower than the bot's bucket refills (one line per
/// 2 s), after letting it refill from registration, so that every line
/// finds a token: the figure is the bot's latency, not its flood control.
/// The baseline is one client's PRIVMSG to another through the same
/// server.
pub(super) fn notify(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let metric = "build finished -> notification line at a client in the channel (ngircd, loopback, bucket not empty)";
    let Some(server) = server(ctx, report, "irc-notify", metric)? else {
        return Ok(());
    };
    let builds = if ctx.sizes.quick { 5 } else { 50 };
    let pace = Duration::from_millis(2100);
    let config = local_config(1, 2, &[("B", &["true"])])
        + &irc_section(server.port, &[("#builds", "finished")]);
    let (mut client, master) = client_and_master(ctx, &server, &config, &["#builds"])?;
    // Registration used up the burst: let the bucket refill a little.
    thread::sleep(Duration::from_millis(2500));
    let mut latencies = Vec::new();
    const WARMUP: usize = 1;
    for i in 0..WARMUP + builds {
        let start = Instant::now();
        let (_, out) = master.ctl_timed(&["force-build", "B", "--wait", "--json"])?;
        let build = last_json(&out.stdout)?["build_id"]
            .as_u64()
            .ok_or_else(|| anyhow!("force-build --wait --json printed no build_id"))?;
        let needle = format!("PRIVMSG #builds :B #{build} ");
        let got = client.expect(&format!("the notification of build {build}"), LONG, |l| {
            l.contains(&needle)
        })?;
        let (_, out) = master.ctl_timed(&["build", &build.to_string(), "--json"])?;
        let finished = last_json(&out.stdout)?["finished_at_ms"]
            .as_u64()
            .ok_or_else(|| anyhow!("build {build} has no finished_at_ms"))?;
        if i >= WARMUP {
            latencies.push(got.at_ms - finished as f64);
        }
        thread::sleep(pace.saturating_sub(start.elapsed()));
    }

    // Baseline: a message from one client to another through ngircd.
    let mut sender = IrcClient::connect(server.port, "sender")?;
    sender.send("JOIN #builds")?;
    client.expect("the sender in #builds", LONG, |l| {
        l.starts_with(":sender!") && l.contains("JOIN")
    })?;
    let mut relay = Vec::new();
    for i in 0..if ctx.sizes.quick { 3 } else { 10 } {
        let t0 = harness_epoch_ms();
        sender.send(&format!("PRIVMSG #builds :relay {i}"))?;
        let got = client.expect("the relayed message", LONG, |l| {
            l.ends_with(&format!(":relay {i}"))
        })?;
        relay.push(got.at_ms - t0);
        // ngircd delays a client that talks fast: stay under its pace.
        thread::sleep(Duration::from_millis(1100));
    }
    report.push(
        Row::measured(
            "irc-notify",
            &format!("{metric}, {builds} builds"),
            "ms",
            &latencies,
        )
        .baseline(median(&relay))
        .target(Target::median_below(50.0)),
    );
    drop(master);
    Ok(())
}

fn harness_epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// What one flood run measured.
struct Flood {
    /// `force-build B --wait` wall times during the flood, ms.
    dispatch: Vec<f64>,
    /// With the bot: per channel, the lines it got and when the last
    /// failure was accounted for (s from the flood's start).
    channels: Vec<(String, usize, f64)>,
}

/// `failures` failing builds forced at an even pace over `secs`, while
/// the main thread measures `force-build B --wait` again and again; with
/// `bot`, the bot announces every failure in `#a` and `#b`, and the run
/// checks it was not kicked and that each channel heard of every failure
/// (single lines plus merged summaries, at least one merged).
fn flood_run(ctx: &Ctx, server: Option<&Ngircd>, failures: usize, secs: f64) -> Result<Flood> {
    let channels = ["#a", "#b"];
    let mut config = local_config(1, 8, &[("B", &["true"]), ("F", &["false"])]);
    let (mut client, master) = match server {
        Some(server) => {
            config += &irc_section(server.port, &[("#a", "failure"), ("#b", "failure")]);
            let (client, master) = client_and_master(ctx, server, &config, &channels)?;
            (Some(client), master)
        }
        None => (None, start_local(ctx, &config, 1)?),
    };
    let connections_before = match client.as_mut() {
        Some(c) => Some(c.connections_received()?),
        None => None,
    };
    let mut flooder = master.ctl();
    flooder.args(["force-build", "F"]);
    let program = flooder.get_program().to_owned();
    let args: Vec<_> = flooder.get_args().map(|a| a.to_owned()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let flood = {
        let done = Arc::clone(&done);
        let every = Duration::from_secs_f64(secs / failures as f64);
        thread::spawn(move || -> Result<()> {
            let start = Instant::now();
            for i in 0..failures {
                let out = Command::new(&program)
                    .args(&args)
                    .env_remove("BBCTL_SOCKET")
                    .output()
                    .context("cannot run bbctl force-build F")?;
                if !out.status.success() {
                    done.store(true, Ordering::SeqCst);
                    bail!(
                        "force-build F failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let next = every * (i as u32 + 1);
                thread::sleep(next.saturating_sub(start.elapsed()));
            }
            done.store(true, Ordering::SeqCst);
            Ok(())
        })
    };
    let mut dispatch = Vec::new();
    while !done.load(Ordering::SeqCst) {
        dispatch.push(master.ctl_timed(&["force-build", "B", "--wait"])?.0);
    }
    flood
        .join()
        .map_err(|_| anyhow!("the flooding thread panicked"))??;
    master.wait_idle(Duration::from_millis(100), Duration::from_secs(120))?;

    let mut heard = Vec::new();
    if let Some(client) = client.as_mut() {
        // Per channel: failures named one by one, and counted in merged
        // summaries ("12 events (merged, the channel was busy): ...").
        let mut counted = [0usize; 2];
        let mut lines = [0usize; 2];
        let mut merged = [0usize; 2];
        let mut done_at = [0f64; 2];
        let deadline = Instant::now() + Duration::from_secs(120);
        while counted.iter().any(|&c| c < failures) {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = client
                .expect("the bot's announcements", left, |l| {
                    l.starts_with(&format!(":{NICK}!"))
                })
                .with_context(|| {
                    format!("each channel should hear of {failures} failures; counted {counted:?}")
                })?;
            if got.line.contains(" QUIT") || got.line.contains(" KICK") {
                bail!("the bot left: {}", got.line);
            }
            for (i, channel) in channels.iter().enumerate() {
                let Some((_, text)) = got.line.split_once(&format!("PRIVMSG {channel} :")) else {
                    continue;
                };
                lines[i] += 1;
                if let Some((n, _)) = text.split_once(" events (merged") {
                    counted[i] += n
                        .parse::<usize>()
                        .with_context(|| format!("a merged count in {text:?}"))?;
                    merged[i] += 1;
                } else if text.starts_with("F #") {
                    counted[i] += 1;
                }
                if counted[i] >= failures && done_at[i] == 0.0 {
                    done_at[i] = start.elapsed().as_secs_f64();
                }
            }
        }
        for (i, channel) in channels.iter().enumerate() {
            if counted[i] != failures {
                bail!("{channel} heard of {} failures, not {failures}", counted[i]);
            }
            if merged[i] == 0 {
                bail!("{channel} got no merged summary for {failures} failures");
            }
            heard.push((channel.to_string(), lines[i], done_at[i]));
        }
        let status = master.status()?;
        if status["irc"]["state"] != "connected" {
            bail!(
                "the bot is not connected after the flood: {}",
                status["irc"]
            );
        }
        let after = client.connections_received()?;
        if Some(after) != connections_before {
            bail!(
                "the bot connected again during the flood ({connections_before:?} -> {after} connections)"
            );
        }
        if let Some(server) = server {
            let log = server.log();
            if log.contains("Excess Flood") {
                bail!("ngircd saw a flood:\n{log}");
            }
        }
    }
    Ok(Flood {
        dispatch: ms(&dispatch),
        channels: heard,
    })
}

/// 200 failures in 10 s (`--quick`: 40 in 2 s) with the bot in two
/// channels: not kicked, a merged summary in each channel, every failure
/// accounted for; `force-build --wait` measured during the same flood
/// without the bot is the baseline of the same figure with it.
pub(super) fn flood(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let (failures, secs) = if ctx.sizes.quick {
        (40, 2.0)
    } else {
        (200, 10.0)
    };
    let metric = format!(
        "force-build --wait during {failures} failures in {secs} s, the bot announcing them in 2 channels (wall)"
    );
    let Some(server) = server(ctx, report, "irc-flood", &metric)? else {
        return Ok(());
    };
    let without = flood_run(ctx, None, failures, secs)?;
    let with = flood_run(ctx, Some(&server), failures, secs)?;
    report.push(
        Row::measured("irc-flood", &metric, "ms", &with.dispatch)
            .baseline(median(&without.dispatch))
            .target(Target::ratio_below(1.25)),
    );
    for (channel, lines, done_at) in &with.channels {
        report.push(Row::measured(
            "irc-flood",
            &format!(
                "{channel}: every failure told (not kicked, merged), {lines} lines; s from the flood's start (no target)"
            ),
            "s",
            &[*done_at],
        ));
    }
    Ok(())
}
