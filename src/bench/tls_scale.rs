//! `tls-scale` (issue 14): one master with `tls_workers` connected,
//! authenticated TLS workers from the generator ([`super::fleet`]): the
//! master's memory (target 150 MB), `bbctl status --json` (target 20 ms),
//! and a reconnect storm: with `tls_builds` builds running on generator
//! workers, the master is killed with SIGKILL and restarted on the same
//! state dir and port; every worker dials again at once, listing its held
//! steps; the time until all are connected and every build is re-adopted
//! (target 10 s).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::Ctx;
use super::fleet::Fleet;
use super::harness::{self, Master, kb_to_mb};
use super::remote::{Listener, SECRET};
use super::report::{Report, Row, Target};
use super::sampling::{bbctl_version_ms, sample};
use super::stats::ms;

/// The generator's worker names.
fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("g{i}")).collect()
}

/// A master listening on `127.0.0.1:port` (fixed, so that a restarted
/// master listens where the workers dial), with `n` remote workers and a
/// builder `hold` that any of them may run.
fn config(port: u16, n: usize) -> String {
    let mut text =
        format!("[master]\nworker_listen = [\"127.0.0.1:{port}\"]\nworker_grace = \"120s\"\n\n");
    for name in names(n) {
        text += &format!("[[worker]]\nname = \"{name}\"\nsecret = \"{SECRET}\"\n\n");
    }
    let all: Vec<String> = names(n).iter().map(|w| format!("\"{w}\"")).collect();
    text += &format!(
        "[[builder]]\nname = \"hold\"\nworkers = [{}]\n  [[builder.step]]\n  name = \"s\"\n  command = [\"sleep\", \"600\"]\n",
        all.join(", ")
    );
    text
}

/// A loopback port free now (bound, read, released).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr().context("no local address")?.port())
}

/// Raise this process's open-file limit (inherited by the master it
/// starts) to at least `want`, within the hard limit.
fn raise_nofile(want: u64) -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= want {
        return Ok(soft);
    }
    let new = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    eprintln!("   RLIMIT_NOFILE of bbbench (and so of its master) raised from {soft} to {new}");
    Ok(new)
}

/// What `status` says about workers and running builds.
struct Seen {
    connected: usize,
    running: usize,
    attached: usize,
}

fn seen(master: &Master) -> Result<Seen> {
    let status = master.status()?;
    let connected = status["workers"]
        .as_array()
        .map_or(0, |ws| ws.iter().filter(|w| w["connected"] == true).count());
    let running = status["running"].as_array().map_or(0, Vec::len);
    let attached = status["running"].as_array().map_or(0, |r| {
        r.iter()
            .filter(|b| b["waiting_for_worker"] == false)
            .count()
    });
    Ok(Seen {
        connected,
        running,
        attached,
    })
}

/// Poll `cond` every `every` until it holds, or fail after `limit`;
/// returns the time it took.
fn wait_for(
    limit: Duration,
    every: Duration,
    fleet: &Fleet,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        fleet.check()?;
        if cond()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("not reached within {limit:?}");
        }
        std::thread::sleep(every);
    }
}

/// The `tls-scale` scenario.
pub fn scale(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let n = s.tls_workers;
    let builds = s.tls_builds;
    raise_nofile(n as u64 * 2 + 1024)?;
    let dir = ctx.scratch.dir("fleet")?;
    let path = dir.join("master.toml");
    harness::write(&path, &config(free_port()?, n))?;
    let mut master = Master::start(&ctx.bins, &dir, Some(&path))?;
    let listener = Listener::of(&master)?;

    let start = Instant::now();
    let fleet = Fleet::start(listener.addr, &listener.fingerprint, SECRET, names(n))?;
    wait_for(
        Duration::from_secs(120),
        Duration::from_millis(10),
        &fleet,
        || Ok(fleet.connected() == n),
    )
    .context("the generator's workers did not all connect")?;
    let cold = start.elapsed();
    let cold_dials = fleet.failed_dials();
    eprintln!("   dials retried while connecting the first time: {cold_dials}");
    let seen_now = seen(&master)?;
    if seen_now.connected != n {
        bail!(
            "the generator has {n} workers welcomed, the master shows {} connected",
            seen_now.connected
        );
    }
    report.push(Row::measured(
        "tls-scale",
        &format!("{n} TLS workers dial at once: start -> all connected (no target)"),
        "ms",
        &[cold.as_secs_f64() * 1e3],
    ));

    // Memory once the links are up and have exchanged a ping or two.
    std::thread::sleep(Duration::from_secs(if s.quick { 1 } else { 3 }));
    let rss = sample(0, 5, || {
        std::thread::sleep(Duration::from_millis(100));
        Ok(kb_to_mb(master.rss_kb()?))
    })?;
    report.push(
        Row::measured(
            "tls-scale",
            &format!("master RSS, {n} TLS workers connected"),
            "MB",
            &rss,
        )
        .target(Target::median_below(150.0)),
    );

    let times = sample(s.warmup, s.repeats, || {
        Ok(master.ctl_timed(&["status", "--json"])?.0)
    })?;
    report.push(
        Row::measured(
            "tls-scale",
            &format!("bbctl status --json, {n} TLS workers connected (wall)"),
            "ms",
            &ms(&times),
        )
        .baseline(bbctl_version_ms(ctx)?)
        .target(Target::median_below(20.0)),
    );

    for _ in 0..builds {
        master.ctl_timed(&["force-build", "hold"])?;
    }
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(20),
        &fleet,
        || {
            let st = seen(&master)?;
            Ok(st.running == builds && st.attached == builds && fleet.held() == builds)
        },
    )
    .context("the builds did not all start on generator workers")?;

    let rounds = if s.quick { 1 } else { 3 };
    let mut to_connected = Vec::new();
    let mut to_adopted = Vec::new();
    for _ in 0..rounds {
        master.kill9()?;
        // Every link sees the kill at once (the kernel closes them); wait
        // for that so that the count below starts from zero.
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(2),
            &fleet,
            || Ok(fleet.connected() == 0),
        )
        .context("the generator did not notice the master's death")?;
        let start = Instant::now();
        master = Master::spawn(&ctx.bins, &dir, Some(&path))?;
        master.wait_serving(Duration::from_secs(60))?;
        let mut connected_at = None;
        wait_for(
            Duration::from_secs(120),
            Duration::from_millis(20),
            &fleet,
            || {
                if connected_at.is_none() && fleet.connected() == n {
                    connected_at = Some(start.elapsed());
                }
                let st = seen(&master)?;
                Ok(st.connected == n && st.running == builds && st.attached == builds)
            },
        )
        .context("reconnect storm: not every worker connected and every build re-adopted")?;
        let adopted = start.elapsed();
        to_connected.push(connected_at.unwrap_or(adopted));
        to_adopted.push(adopted);
        if fleet.held() != builds {
            bail!(
                "after the restart the generator holds {} steps, not {builds}",
                fleet.held()
            );
        }
    }
    eprintln!(
        "   dials retried in {rounds} storm(s) (no listener yet, closed or refused before the welcome): {}",
        fleet.failed_dials() - cold_dials
    );
    report.push(Row::measured(
        "tls-scale",
        &format!("reconnect storm: master restart -> all {n} TLS workers connected (no target)"),
        "ms",
        &ms(&to_connected),
    ));
    report.push(
        Row::measured(
            "tls-scale",
            &format!(
                "reconnect storm: master restart -> {n} connected and all {builds} running builds re-adopted"
            ),
            "ms",
            &ms(&to_adopted),
        )
        .target(Target::median_below(10_000.0)),
    );
    master.stop()?;
    drop(fleet);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::remote;

    #[test]
    fn the_configs_are_valid() {
        let dir = std::path::Path::new("/");
        let fleet = crate::config::parse_str(&config(9989, 3), "fleet.toml", dir).unwrap();
        assert_eq!(fleet.workers.len(), 3);
        assert_eq!(fleet.builders[0].workers.len(), 3);
        let pair = remote::config(
            "max_log_size = \"2G\"",
            &[("D", &remote::command_step(&["date", "+%s%N"]))],
        );
        let pair = crate::config::parse_str(&pair, "pair.toml", dir).unwrap();
        let names: Vec<&str> = pair.builders.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["D-unix", "D-tls"]);
    }
}
