//! The web server under load (issue 18, docs/http.md): the `/` page and
//! `/api/v1/builds?limit=50` on the scale master (1,000 builders, 10,000
//! queued, 100,000 finished builds, written through the store), timed by
//! the server itself (`Server-Timing`) and at the client; and many
//! clients following one build that prints 10 MB (each holds the build
//! page's event stream and the step's followed log): every client gets
//! every byte, the lag from print to client, and the master's dispatch
//! with and without them. The clients stand for people on other
//! machines: their threads run at the lowest priority (nice 19,
//! `SCHED_OTHER`), and the CPU time of the master (its web threads apart)
//! and of the clients is reported beside the figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Ctx;
use super::cpu::{self, Snapshot, Spent};
use super::harness::{self, Master};
use super::latency::{epoch_ns, local_config, master_view, to_step_ms};
use super::report::{Report, Row, Target};
use super::sampling::sample;
use super::scale;
use super::stats::median;
use crate::daemon::web::runtime::THREAD_NAME;

/// How long any read of a benchmark client waits.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The address in the master's "web pages and HTTP API on" line.
fn web_addr(dir: &Path) -> Result<SocketAddr> {
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
        let found = log.lines().rev().find_map(|l| {
            let rest = l.split("HTTP API on http://").nth(1)?;
            rest.trim_end_matches('/').parse().ok()
        });
        if let Some(addr) = found {
            return Ok(addr);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the master logged no web address in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An answer's head read: the connection (at its body), the status, the
/// headers (names in lower case).
type Head = (BufReader<TcpStream>, u16, Vec<(String, String)>);

/// Send a GET of `path` with `headers`; the connection, its head read.
fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Head> {
    let mut stream = TcpStream::connect(addr).context("cannot connect to the web server")?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the answer's head was cut short");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((reader, status, headers))
}

/// One timed GET: wall time to the last byte, the server's own time
/// (`Server-Timing: app;dur=MS`), the body's size.
fn timed_get(addr: SocketAddr, path: &str) -> Result<(f64, f64, usize)> {
    let start = Instant::now();
    let (mut reader, status, headers) = send(addr, path, &[])?;
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    let wall = start.elapsed().as_secs_f64() * 1e3;
    if status != 200 {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    let server = headers
        .iter()
        .find(|(k, _)| k == "server-timing")
        .and_then(|(_, v)| v.split("dur=").nth(1)?.parse().ok())
        .ok_or_else(|| anyhow!("GET {path}: no Server-Timing header"))?;
    Ok((wall, server, body.len()))
}

/// `/`, `/queue` and `/api/v1/builds?limit=50` on the scale master.
pub fn pages(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let f = scale::fixture(ctx)?;
    let master = f.start_args(ctx, &["--http", "127.0.0.1:0"])?;
    let addr = web_addr(&master.dir)?;
    let sizes = format!(
        "{} builders, {} queued, {} finished",
        s.builders, s.queued, s.finished
    );
    for (path, target, what) in [
        ("/", Some(20.0), "the / page"),
        (
            "/api/v1/builds?limit=50",
            Some(5.0),
            "GET /api/v1/builds?limit=50",
        ),
        ("/queue", None, "the /queue page (every queued request)"),
    ] {
        let got = sample(s.warmup, s.repeats, || timed_get(addr, path))?;
        let server: Vec<f64> = got.iter().map(|g| g.1).collect();
        let wall: Vec<f64> = got.iter().map(|g| g.0).collect();
        let bytes = got.first().map_or(0, |g| g.2);
        let row = Row::measured(
            "web-pages",
            &format!("{what}, server time, {sizes}"),
            "ms",
            &server,
        );
        report.push(match target {
            Some(t) => row.target(Target::median_below(t)),
            None => row,
        });
        report.push(Row::measured(
            "web-pages",
            &format!(
                "{what}, wall at the client ({} KiB, no target)",
                bytes >> 10
            ),
            "ms",
            &wall,
        ));
    }
    drop(master);
    Ok(())
}

/// A chunked body, decoded.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                self.done = true;
                return Ok(0);
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
            return Ok(0);
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

/// What one follower got: the log's size, whether every line was as
/// printed (a timestamp line, later than the one before, or 65,535 `x`),
/// the lag of each timestamp line, whether its event stream told the
/// build's end, and the CPU time its thread took.
struct Followed {
    bytes: u64,
    intact: bool,
    lags_ms: Vec<f64>,
    /// Those of lines printed once all clients were connected (the
    /// others were a backlog when they came).
    live_lags_ms: Vec<f64>,
    finished_event: bool,
    cpu_ms: f64,
}

/// A line of the big step other than a timestamp: 65,535 `x` and a
/// newline (compared with one `memcmp`: the check must cost the clients
/// less than the transfer it checks).
static XS: [u8; 65_536] = {
    let mut line = [b'x'; 65_536];
    line[65_535] = b'\n';
    line
};

/// One client: the build page's event stream, then the step's log
/// followed from byte 0 to its end; then the events until the build's
/// end. Its thread runs at the lowest priority (nice 19, `SCHED_OTHER`):
/// it stands for a person on another machine, not for work of this one.
fn follow(addr: SocketAddr, build: u64, start: &Barrier) -> Result<Followed> {
    cpu::background_this_thread()?;
    let (events, status, _) = send(
        addr,
        &format!("/builds/{build}"),
        &[("accept", "text/event-stream")],
    )?;
    if status != 200 {
        bail!("the build page's event stream answered {status}");
    }
    let (log, status, _) = send(
        addr,
        &format!("/api/v1/builds/{build}/steps/0/log?follow=1"),
        &[],
    )?;
    if status != 200 {
        bail!("the followed log answered {status}");
    }
    start.wait();
    let joined = epoch_ns()?;
    let mut log = BufReader::with_capacity(
        256 << 10,
        Chunked {
            inner: log,
            left: 0,
            done: false,
        },
    );
    let mut got = Followed {
        bytes: 0,
        intact: true,
        lags_ms: Vec::new(),
        live_lags_ms: Vec::new(),
        finished_event: false,
        cpu_ms: 0.0,
    };
    let mut last_ns = 0u128;
    let mut line = Vec::with_capacity(70 << 10);
    loop {
        line.clear();
        let n = log.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let now = epoch_ns()?;
        got.bytes += n as u64;
        if let Some(ts) = line.strip_prefix(b"T ") {
            let ns: u128 = std::str::from_utf8(ts)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| anyhow!("a bad timestamp line in the log"))?;
            got.intact &= ns > last_ns;
            last_ns = ns;
            let lag = now.saturating_sub(ns) as f64 / 1e6;
            got.lags_ms.push(lag);
            if ns > joined {
                got.live_lags_ms.push(lag);
            }
        } else {
            got.intact &= line == XS;
        }
    }
    let mut events = BufReader::new(Chunked {
        inner: events,
        left: 0,
        done: false,
    });
    let mut text = String::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        text.clear();
        if events.read_line(&mut text)? == 0 {
            break;
        }
        if text.starts_with("data: ") && text.contains("\"build_finished\"") {
            got.finished_event = true;
            break;
        }
    }
    got.cpu_ms = cpu::this_thread_ms();
    Ok(got)
}

/// The step of the `big` builder: `chunks` times a line `T <ns since the
/// epoch>` and 64 KiB of `x`, 20 ms apart.
fn big_step(chunks: usize) -> String {
    format!(
        "i=0; while [ $i -lt {chunks} ]; do printf 'T %s\\n' \"$(date +%s%N)\"; \
         head -c 65535 /dev/zero | tr '\\000' x; echo; i=$((i+1)); sleep 0.02; done"
    )
}

/// GET `path` as JSON.
fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (mut reader, status, _) = send(addr, path, &[])?;
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    if status != 200 {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
}

/// Queue `big` and wait until its build runs; the build's id.
fn start_big(master: &Master, addr: SocketAddr) -> Result<u64> {
    let (_, out) = master.ctl_timed(&["force-build", "big", "--json"])?;
    let request = harness::last_json(&out.stdout)?["request_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("force-build --json printed no request_id"))?;
    let start = Instant::now();
    loop {
        if let Some(build) =
            get_json(addr, &format!("/api/v1/requests/{request}"))?["build"].as_u64()
        {
            return Ok(build);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the big build did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Has build `build` ended?
fn ended(addr: SocketAddr, build: u64) -> Result<bool> {
    Ok(!get_json(addr, &format!("/api/v1/builds/{build}"))?["result"].is_null())
}

/// Dispatch probes (`force-build D --wait`, to the step's process) while
/// build `build` runs; stops at its end or after `max` probes.
fn probes_while(master: &Master, addr: SocketAddr, build: u64, max: usize) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    while out.len() < max {
        out.push(to_step_ms(master, "D")?);
        if ended(addr, build)? {
            break;
        }
    }
    Ok(out)
}

/// Wait (at most 10 minutes) for build `build` to end.
fn wait_end(addr: SocketAddr, build: u64) -> Result<()> {
    let start = Instant::now();
    while !ended(addr, build)? {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("build {build} did not end within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// "wall W ms, of which the web's threads N ms": a CPU row's context.
fn spent(s: &Spent) -> String {
    format!(
        "{:.0} ms wall; {THREAD_NAME} threads {:.0} ms, the rest {:.0} ms",
        s.wall_ms,
        s.named_ms,
        s.total_ms - s.named_ms
    )
}

/// Many clients follow a build that prints 10 MB (`--quick`: 1 MB, 20
/// clients): each gets every byte (compared with the log file) and the
/// build's end on the page's event stream; the lag from print to client;
/// dispatch with and without them.
pub fn followers(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let (clients, chunks) = if s.quick { (20, 16) } else { (200, 160) };
    let step = big_step(chunks);
    let mut config = local_config(
        1,
        2,
        &[("big", &["sh", "-c", &step]), ("D", &["date", "+%s%N"])],
    );
    config += "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1024\n";
    let dir = ctx.scratch.dir("web")?;
    let path = dir.join("master.toml");
    harness::write(&path, &config)?;
    let master = Master::start(&ctx.bins, &dir, Some(&path))?;
    master.wait_local_workers(1, Duration::from_secs(30))?;
    let addr = web_addr(&dir)?;
    let probes = if s.quick { 10 } else { 40 };
    to_step_ms(&master, "D")?;

    // Without clients: dispatch while the big build prints.
    let quiet = start_big(&master, addr)?;
    let before = Snapshot::take(master.pid())?;
    let alone = probes_while(&master, addr, quiet, probes)?;
    wait_end(addr, quiet)?;
    let cpu_alone = Snapshot::take(master.pid())?.since(&before, THREAD_NAME);
    master.wait_idle(Duration::from_millis(20), Duration::from_secs(600))?;

    // With clients.
    let build = start_big(&master, addr)?;
    let before = Snapshot::take(master.pid())?;
    let barrier = Barrier::new(clients + 1);
    let (results, with_clients) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| follow(addr, build, &barrier)))
            .collect();
        barrier.wait();
        let probes = probes_while(&master, addr, build, probes);
        let results: Vec<Result<Followed>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
            })
            .collect();
        (results, probes)
    });
    let cpu_with = Snapshot::take(master.pid())?.since(&before, THREAD_NAME);
    let with_clients = with_clients?;
    let log = dir.join(format!("logs/{build}/0.log"));
    let want = std::fs::metadata(&log)
        .with_context(|| format!("cannot read {}", log.display()))?
        .len();
    let mut lags = Vec::new();
    let mut live_lags = Vec::new();
    let mut clients_cpu = 0.0;
    for (i, r) in results.into_iter().enumerate() {
        let got = r.with_context(|| format!("client {i}"))?;
        if got.bytes != want || !got.intact {
            bail!(
                "client {i} got {} bytes (intact: {}); the log has {want}",
                got.bytes,
                got.intact
            );
        }
        if got.lags_ms.len() != chunks {
            bail!(
                "client {i} saw {} of {chunks} timestamps",
                got.lags_ms.len()
            );
        }
        if !got.finished_event {
            bail!("client {i}'s event stream did not tell the build's end");
        }
        lags.extend(got.lags_ms);
        live_lags.extend(got.live_lags_ms);
        clients_cpu += got.cpu_ms;
    }
    let mb = want as f64 / 1e6;
    report.push(
        Row::measured(
            "web-sse",
            &format!(
                "{clients} clients following a {mb:.1} MB log: print -> client lag (every byte checked)"
            ),
            "ms",
            &lags,
        )
        .target(Target::median_below(100.0)),
    );
    report.push(Row::measured(
        "web-sse",
        "the same, only lines printed once all clients were connected (the rest were a backlog)",
        "ms",
        &live_lags,
    ));
    report.push(Row::measured(
        "web-sse",
        "force-build -> step running while the build prints, no web clients (no target)",
        "ms",
        &alone,
    ));
    report.push(
        Row::measured(
            "web-sse",
            &format!("force-build -> step running while the build prints, {clients} clients (baseline: none)"),
            "ms",
            &with_clients,
        )
        .baseline(median(&alone))
        .target(Target::excess_below(2.0)),
    );
    // The master's own view of the same probes (the first `D` build was
    // the warm-up): request accepted -> step sent.
    let (sent, _) = master_view(&dir.join("master.db"), "D")?;
    let sent = sent.get(1..).unwrap_or_default();
    let (sent_alone, sent_with) = sent.split_at(alone.len().min(sent.len()));
    for (what, samples) in [
        ("no web clients", sent_alone),
        (&*format!("{clients} clients"), sent_with),
    ] {
        report.push(Row::measured(
            "web-sse",
            &format!("master: accepted -> step sent of those probes, {what} (1 ms resolution)"),
            "ms",
            samples,
        ));
    }
    report.push(Row::measured(
        "web-sse",
        &format!(
            "master CPU while the build prints, no web clients ({})",
            spent(&cpu_alone)
        ),
        "ms",
        &[cpu_alone.total_ms],
    ));
    report.push(Row::measured(
        "web-sse",
        &format!(
            "master CPU while the build prints, {clients} clients ({})",
            spent(&cpu_with)
        ),
        "ms",
        &[cpu_with.total_ms],
    ));
    report.push(Row::measured(
        "web-sse",
        &format!("the {clients} clients' own CPU (bbbench threads at nice 19)"),
        "ms",
        &[clients_cpu],
    ));
    drop(master);
    Ok(())
}
