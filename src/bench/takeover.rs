//! Takeover (issue 19): two masters on one PostgreSQL store on loopback
//! (`--name m0`/`m1`, each its own `--worker-listen` port, plain TCP), one
//! remote `bbworker` given both (`--master` twice), and a build whose
//! step prints a line every 10 ms. The leader is killed with SIGKILL;
//! measured from the kill: until the standby answers as the leader, and
//! until the build's log grows again (the new leader restored its state,
//! the worker came over, the build was re-adopted and its output flows).
//! Then the build is stopped, the killed master comes back as a standby,
//! and the next round kills the other one. Median of 10 (2 with
//! `--quick`); the target is output flowing within 10 s.
//!
//! Without PostgreSQL's binaries, one `n/a` row says so.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Ctx;
use super::harness::{self, Master};
use super::pg::missing_postgres;
use super::remote::{SECRET, Worker};
use super::report::{Report, Row, Target};
use crate::testkit::postgres::{PASSWORD, PgServer};

/// How long any one wait of this scenario may take.
const LIMIT: Duration = Duration::from_secs(60);

/// One master of the pair: how to start it again.
struct Peer {
    /// `None` while killed.
    master: Option<Master>,
    dir: PathBuf,
    args: Vec<String>,
}

impl Peer {
    fn master(&self) -> Result<&Master> {
        self.master
            .as_ref()
            .ok_or_else(|| anyhow!("master {} is not running", self.dir.display()))
    }
}

/// A free TCP port on loopback (bound, then let go).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free loopback port")?
        .port())
}

/// The master's role as its `status --json` says (`leader`, `standby`),
/// or `None` while it does not answer.
fn role(master: &Master) -> Option<String> {
    let status = master.status().ok()?;
    status["leadership"]["role"].as_str().map(str::to_string)
}

/// Poll `cond` every millisecond until it holds, or fail after [`LIMIT`].
fn wait_for(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !cond()? {
        if start.elapsed() > LIMIT {
            bail!("{what}: not within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The build of builder `flow` running on `master`, attached to its
/// worker.
fn running_flow(master: &Master) -> Result<Option<u64>> {
    let status = master.status()?;
    Ok(status["running"].as_array().and_then(|r| {
        r.iter()
            .find(|b| b["builder"] == "flow" && b["waiting_for_worker"] == false)
            .and_then(|b| b["build"].as_u64())
    }))
}

/// The size of a file, 0 while it does not exist.
fn size(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The `takeover` scenario.
pub fn takeover(ctx: &Ctx, report: &mut Report) -> Result<()> {
    if let Some(why) = missing_postgres() {
        eprintln!("   skipped: {why}");
        report.push(Row::not_available(
            "takeover",
            "kill -9 of the leader -> standby serving -> output flowing",
            &format!("PostgreSQL is not installed: {why}"),
        ));
        return Ok(());
    }
    let rounds = if ctx.sizes.quick { 2 } else { 10 };
    let server = PgServer::start().context("cannot start a PostgreSQL server")?;
    server
        .create_database("takeover")
        .context("cannot create the benchmark database")?;
    let result = rounds_of_takeover(ctx, &server, rounds);
    let (serving, flowing) = match result {
        Ok(figures) => figures,
        Err(e) => {
            let log = server.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "   PostgreSQL's log (last lines):\n{}",
                lines[lines.len().saturating_sub(10)..].join("\n")
            );
            return Err(e);
        }
    };
    report.push(Row::measured(
        "takeover",
        "kill -9 of the leader -> the standby serves as the leader (no target)",
        "ms",
        &serving,
    ));
    report.push(
        Row::measured(
            "takeover",
            "kill -9 of the leader -> the running build's output flows again (re-adopted)",
            "ms",
            &flowing,
        )
        .target(Target::median_below(10_000.0)),
    );
    Ok(())
}

/// Set up the pair and the worker, and measure `rounds` takeovers: (to
/// serving, to output flowing), in ms.
fn rounds_of_takeover(ctx: &Ctx, server: &PgServer, rounds: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let dir = ctx.scratch.dir("takeover")?;
    let pgpass = dir.join("pgpass");
    harness::write(&pgpass, &format!("{PASSWORD}\n"))?;
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", pgpass.display()))?;
    let shared = dir.join("shared");
    fs::create_dir_all(&shared).with_context(|| format!("cannot create {}", shared.display()))?;
    let config = dir.join("master.toml");
    harness::write(
        &config,
        &format!(
            "[master]\nstore = {{ postgres = \"{}\", password_file = \"{}\", shared_dir = \"{}\" }}\nallow_plaintext = true\n\n\
             [[worker]]\nname = \"w\"\nsecret = \"{SECRET}\"\n\n\
             [[builder]]\nname = \"flow\"\nworkers = [\"w\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"while :; do echo tick; sleep 0.01; done\"\n",
            server.conninfo("takeover"),
            pgpass.display(),
            shared.display()
        ),
    )?;
    let mut peers = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..2 {
        let port = free_port()?;
        let address = format!("tcp://127.0.0.1:{port}");
        let state = dir.join(format!("m{i}"));
        fs::create_dir_all(&state).with_context(|| format!("cannot create {}", state.display()))?;
        let args = vec![
            "--name".to_string(),
            format!("m{i}"),
            "--worker-listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--advertise".to_string(),
            address.clone(),
        ];
        let mut master = Master::spawn_with(&ctx.bins, &state, Some(&config), &args)?;
        master.wait_serving(LIMIT)?;
        // The first one leads before the second starts.
        let want = if i == 0 { "leader" } else { "standby" };
        wait_for(&format!("m{i} is the {want}"), || {
            Ok(role(&master).as_deref() == Some(want))
        })?;
        peers.push(Peer {
            master: Some(master),
            dir: state,
            args,
        });
        addresses.push(address);
    }
    let secret = dir.join("worker.secret");
    harness::write(&secret, SECRET)?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", secret.display()))?;
    let mut cmd = Command::new(&ctx.bins.bbworker);
    for address in &addresses {
        cmd.args(["--master", address]);
    }
    cmd.args(["--name", "w", "--secret-file"])
        .arg(&secret)
        .arg("--dir")
        .arg(dir.join("work"));
    let _worker = Worker::spawn(cmd, &dir.join("worker.log"))?;

    let mut serving = Vec::new();
    let mut flowing = Vec::new();
    let mut leader = 0;
    for _ in 0..rounds {
        let standby = 1 - leader;
        let lead = peers[leader].master()?;
        lead.wait_local_workers(1, LIMIT).with_context(|| {
            format!(
                "the worker did not connect (see {}/worker.log)",
                dir.display()
            )
        })?;
        let (_, out) = lead.ctl_timed(&["force-build", "flow"])?;
        if !out.status.success() {
            bail!(
                "force-build flow failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut build = None;
        wait_for("the build runs", || {
            build = running_flow(lead)?;
            Ok(build.is_some())
        })?;
        let build = build.unwrap_or_default();
        let log = shared.join(format!("logs/{build}/0.log"));
        wait_for("the build's output reaches its log", || Ok(size(&log) > 0))?;

        let killed = Instant::now();
        if let Some(mut master) = peers[leader].master.take() {
            master.kill9()?;
        }
        let before = size(&log);
        let next = peers[standby].master()?;
        let mut served = None;
        wait_for("the standby leads and the output flows again", || {
            if served.is_none() && role(next).as_deref() == Some("leader") {
                served = Some(killed.elapsed());
            }
            Ok(served.is_some() && size(&log) > before)
        })?;
        flowing.push(killed.elapsed().as_secs_f64() * 1e3);
        serving.push(served.unwrap_or_default().as_secs_f64() * 1e3);

        // Stop the build, and bring the killed master back as a standby.
        let (_, out) = next.ctl_timed(&["stop", &build.to_string()])?;
        if !out.status.success() {
            bail!(
                "stop {build} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        wait_for("the build stopped", || Ok(running_flow(next)?.is_none()))?;
        let peer = &mut peers[leader];
        let mut master = Master::spawn_with(&ctx.bins, &peer.dir, Some(&config), &peer.args)?;
        master.wait_serving(LIMIT)?;
        wait_for("the restarted master is a standby", || {
            Ok(role(&master).as_deref() == Some("standby"))
        })?;
        peer.master = Some(master);
        leader = standby;
    }
    Ok((serving, flowing))
}
