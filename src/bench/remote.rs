//! Remote workers for the TLS scenarios: a master listening for workers
//! on TCP with TLS on loopback (`worker_listen = ["127.0.0.1:0"]`, its
//! self-signed certificate), and two real `bbworker` processes started by
//! hand, one dialling it over TLS with the pinned fingerprint and one over
//! the Unix worker socket, so that every figure is taken over both
//! transports in the same run, on the same master, alternately.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Ctx;
use super::harness::{self, Master};

/// The secret of every benchmark worker (inline in the master's config,
/// in a 0600 file for `bbworker`).
pub(super) const SECRET: &str = "bench-secret-0123456789abcdef";

/// How a remote worker reaches the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// The master's Unix worker socket.
    Unix,
    /// TCP with TLS on loopback, the master's certificate pinned.
    Tls,
}

impl Link {
    /// Both, in the order they are measured.
    pub(super) const BOTH: [Link; 2] = [Link::Unix, Link::Tls];

    /// The worker's name, and the suffix of its builders' names.
    pub(super) fn name(self) -> &'static str {
        match self {
            Link::Unix => "unix",
            Link::Tls => "tls",
        }
    }

    /// For row labels.
    pub(super) fn label(self) -> &'static str {
        match self {
            Link::Unix => "remote worker on the Unix socket",
            Link::Tls => "remote worker over TLS (loopback)",
        }
    }
}

/// The master's TLS listener, as `bbctl status --json` shows it.
#[derive(Debug, Clone)]
pub(super) struct Listener {
    /// The bound address (the real port, also when configured as 0).
    pub(super) addr: SocketAddr,
    /// `sha256:<hex>` of its certificate.
    pub(super) fingerprint: String,
}

impl Listener {
    /// The first listen address and the fingerprint from `status`.
    pub(super) fn of(master: &Master) -> Result<Listener> {
        let status = master.status()?;
        let tls = &status["tls"];
        let addr = tls["listen"][0]
            .as_str()
            .ok_or_else(|| anyhow!("bbctl status --json shows no TLS listener: {tls}"))?;
        Ok(Listener {
            addr: addr
                .parse()
                .with_context(|| format!("bad listen address {addr:?} in status"))?,
            fingerprint: tls["fingerprint"]
                .as_str()
                .ok_or_else(|| anyhow!("bbctl status --json shows no fingerprint: {tls}"))?
                .to_string(),
        })
    }
}

/// A master config: `[master]` with a TLS listener on a free loopback port
/// plus `master_extra`, the workers `unix` and `tls` (remote, secret
/// [`SECRET`]), and for each `(name, steps)` two builders, `<name>-unix` and
/// `<name>-tls`, each served by the worker of that name; `steps` is the
/// TOML of their `[[builder.step]]` tables.
pub(super) fn config(master_extra: &str, builders: &[(&str, &str)]) -> String {
    let mut text = format!("[master]\nworker_listen = [\"127.0.0.1:0\"]\n{master_extra}\n\n");
    for link in Link::BOTH {
        text += &format!(
            "[[worker]]\nname = \"{}\"\nsecret = \"{SECRET}\"\n\n",
            link.name()
        );
    }
    for (name, steps) in builders {
        for link in Link::BOTH {
            text += &format!(
                "[[builder]]\nname = \"{name}-{0}\"\nworkers = [\"{0}\"]\n{steps}\n",
                link.name()
            );
        }
    }
    text
}

/// One `[[builder.step]]` running `argv`.
pub(super) fn command_step(argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "  [[builder.step]]\n  name = \"s\"\n  command = [{}]\n",
        argv.join(", ")
    )
}

/// A master started on [`config`] with both remote workers connected.
pub(super) struct Pair {
    /// The master (dropped first, then the workers).
    pub(super) master: Master,
    workers: Vec<Worker>,
}

impl Pair {
    /// Start the master on `config`, then a `bbworker` per [`Link`], and
    /// wait until both are connected.
    pub(super) fn start(ctx: &Ctx, config: &str) -> Result<Pair> {
        let dir = ctx.scratch.dir("tls")?;
        let path = dir.join("master.toml");
        harness::write(&path, config)?;
        let master = Master::start(&ctx.bins, &dir, Some(&path))?;
        let listener = Listener::of(&master)?;
        let secret = dir.join("worker.secret");
        harness::write(&secret, SECRET)?;
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", secret.display()))?;
        let mut workers = Vec::new();
        for link in Link::BOTH {
            let mut cmd = Command::new(&ctx.bins.bbworker);
            match link {
                Link::Unix => cmd.arg("--master").arg(dir.join("worker.sock")),
                Link::Tls => cmd
                    .arg("--master")
                    .arg(format!("tls://{}", listener.addr))
                    .args(["--fingerprint", &listener.fingerprint]),
            };
            let work = dir.join(format!("w-{}", link.name()));
            cmd.args(["--name", link.name()])
                .arg("--secret-file")
                .arg(&secret)
                .arg("--dir")
                .arg(&work);
            workers.push(Worker::spawn(
                cmd,
                &dir.join(format!("w-{}.log", link.name())),
            )?);
        }
        let pair = Pair { master, workers };
        pair.master
            .wait_local_workers(Link::BOTH.len(), Duration::from_secs(30))
            .context("the remote workers did not connect (see w-*.log in the state dir)")?;
        Ok(pair)
    }

    /// The work dir of a link's worker (where its steps run, per builder).
    pub(super) fn work_dir(&self, link: Link) -> std::path::PathBuf {
        self.master.dir.join(format!("w-{}", link.name()))
    }

    /// The peak resident memory (VmHWM) of a link's worker, in kB.
    pub(super) fn worker_peak_kb(&self, link: Link) -> Result<u64> {
        let i = Link::BOTH.iter().position(|l| *l == link).unwrap_or(0);
        harness::proc_kb(self.workers[i].child.id(), "VmHWM")
    }
}

/// A `bbworker` started by hand, stopped (TERM, then KILL) when dropped.
pub(super) struct Worker {
    child: Child,
}

impl Worker {
    /// Start `cmd` with its output to `log`.
    pub(super) fn spawn(mut cmd: Command, log: &Path) -> Result<Worker> {
        let out =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot share the worker log")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Worker { child })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
