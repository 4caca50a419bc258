//! Git pollers at rest (issue 15): 100 pollers at a 10 s interval on
//! repositories that do not change; the master's own CPU use (target: at
//! most 5 % of one core), and beside it the CPU of the git processes it
//! waited for (`ls-remote`, one per poll).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Ctx;
use super::harness::{self, Master};
use super::report::{Report, Row, Target};

/// `git ARGS` in `dir` with no user or system config.
fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.org",
        ])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The `pollers` scenario.
pub fn pollers(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let (n, windows, window) = if ctx.sizes.quick {
        (20, 1, Duration::from_secs(12))
    } else {
        (100, 3, Duration::from_secs(60))
    };
    let interval = "10s";
    let dir = ctx.scratch.dir("pl")?;
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    git(&src, &["init", "-q"])?;
    std::fs::write(src.join("a.txt"), "a")?;
    git(&src, &["add", "a.txt"])?;
    git(&src, &["commit", "-q", "-m", "one"])?;
    let mut config = String::new();
    for i in 0..n {
        let repo = dir.join(format!("r{i}.git"));
        git(
            &dir,
            &[
                "clone",
                "-q",
                "--bare",
                "src",
                repo.to_str().context("path")?,
            ],
        )?;
        config.push_str(&format!(
            "[[poller]]\nname = \"p{i}\"\nrepository = \"{}\"\nbranches = [\"main\"]\ninterval = \"{interval}\"\n\n",
            repo.display()
        ));
    }
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let config_path = dir.join("master.toml");
    harness::write(&config_path, &config)?;
    let master = Master::start(&ctx.bins, &state, Some(&config_path))?;
    // Warm-up: every poller has taken its baseline (its mirror has the
    // branch), then one more interval.
    let start = Instant::now();
    loop {
        let done = (0..n)
            .filter(|i| {
                state
                    .join(format!("pollers/p{i}.git/refs/heads/main"))
                    .exists()
            })
            .count();
        if done == n {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("only {done} of {n} pollers took their baseline within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(10));
    let mut own = Vec::new();
    let mut children = Vec::new();
    for _ in 0..windows {
        let (o0, c0) = super::cpu::cpu_secs(master.pid())?;
        let t0 = Instant::now();
        std::thread::sleep(window);
        let (o1, c1) = super::cpu::cpu_secs(master.pid())?;
        let secs = t0.elapsed().as_secs_f64();
        own.push((o1 - o0) / secs * 100.0);
        children.push((c1 - c0) / secs * 100.0);
    }
    report.push(
        Row::measured(
            "pollers",
            &format!("{n} pollers every {interval}, repositories unchanged: master CPU"),
            "% core",
            &own,
        )
        .target(Target::median_below(5.0)),
    );
    report.push(Row::measured(
        "pollers",
        "the same: CPU of the git processes it ran",
        "% core",
        &children,
    ));
    Ok(())
}
