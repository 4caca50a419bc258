//! `queue`, `workers`, `ping`, `drain` and `undrain`: the queue and the
//! workers as an operator sees them.

use crate::untrusted::escape;
use std::io::{self, Write};
use std::time::Duration;

use super::{Ctx, print_json, unexpected};
use crate::client::render::{Table, ago};
use crate::client::{CliError, EXIT_FAILED};
use crate::paths::now_ms;
use crate::protocol::{ErrorReply, Reply, Request};

/// `bbctl queue [BUILDER]`.
pub async fn queue(ctx: &mut Ctx, builder: Option<String>) -> Result<u8, CliError> {
    let queued = match ctx.call(Request::Queue { builder }).await? {
        Reply::Queue(q) => q,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&queued)?;
        return Ok(0);
    }
    let mut out = io::stdout().lock();
    if queued.is_empty() {
        writeln!(out, "nothing queued")?;
        return Ok(0);
    }
    let now = now_ms();
    let mut table = Table::new(vec![
        "REQUEST",
        "BUILDER",
        "POS",
        "PRIO",
        "AGE",
        "RETRIES",
        "PROPERTIES",
        "REASON",
    ]);
    for q in &queued {
        let props: Vec<String> = q
            .properties
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        table.row(vec![
            crate::client::ids::request(q.request),
            q.builder.clone(),
            q.position.to_string(),
            q.priority.to_string(),
            ago(q.submitted_at_ms, now),
            q.retries.to_string(),
            props.join(" "),
            escape(q.reason.as_deref().unwrap_or_default()),
        ]);
    }
    table.print(&mut out, &ctx.style)?;
    Ok(0)
}

/// `bbctl workers`.
pub async fn workers(ctx: &mut Ctx) -> Result<u8, CliError> {
    let workers = match ctx.call(Request::Workers).await? {
        Reply::Workers(w) => w,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&workers)?;
        return Ok(0);
    }
    let now = now_ms();
    let mut table = Table::new(vec![
        "WORKER",
        "STATE",
        "SINCE",
        "LAST SEEN",
        "SLOTS",
        "RUNNING",
        "HOST",
        "PID",
        "VERSION",
        "LINK",
        "PEER",
        "RTT",
    ]);
    for w in &workers {
        let s = &w.status;
        let state = match (s.connected, s.draining) {
            (true, false) => "connected",
            (true, true) => "draining",
            (false, true) => "offline, draining",
            (false, false) => "offline",
        };
        let running: Vec<String> = s.running_builds.iter().map(|b| format!("#{b}")).collect();
        table.row(vec![
            format!("{}{}", s.name, if s.local { " (local)" } else { "" }),
            state.into(),
            w.connected_since_ms
                .map(|t| ago(t, now))
                .unwrap_or_default(),
            w.last_seen_ms.map(|t| ago(t, now)).unwrap_or_default(),
            format!("{}/{}", s.running_builds.len(), s.max_builds),
            running.join(" "),
            escape(w.host.as_deref().unwrap_or_default()),
            w.pid.map(|p| p.to_string()).unwrap_or_default(),
            w.software
                .as_deref()
                .map(|v| escape(&crate::client::render::version(v)))
                .unwrap_or_default(),
            link_label(w),
            w.peer.clone().unwrap_or_default(),
            w.ping_rtt_ms
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_default(),
        ]);
    }
    table.print(&mut io::stdout().lock(), &ctx.style)?;
    Ok(0)
}

/// How a worker is linked: `unix`, `tcp`, or `tls` with its version.
fn link_label(w: &crate::protocol::WorkerDetail) -> String {
    match (w.transport.as_deref(), &w.tls_version) {
        (None, _) => String::new(),
        (Some("tls"), Some(v)) => format!("tls ({})", escape(v)),
        (Some(other), _) => escape(other),
    }
}

/// `bbctl ping WORKER`.
pub async fn ping(ctx: &mut Ctx, worker: String) -> Result<u8, CliError> {
    let (worker, us) = match ctx.call(Request::Ping { worker }).await? {
        Reply::Pong {
            worker,
            round_trip_us,
        } => (worker, round_trip_us),
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&serde_json::json!({
            "worker": worker,
            "round_trip_us": us,
            "round_trip_ms": us as f64 / 1000.0,
        }))?;
    } else {
        writeln!(
            io::stdout().lock(),
            "pong from {worker}: {:.3} ms",
            us as f64 / 1000.0
        )?;
    }
    Ok(0)
}

/// `bbctl drain [--worker NAME] [--wait [--timeout D]]` and `undrain`.
pub async fn drain(
    ctx: &mut Ctx,
    worker: Option<String>,
    drain: bool,
    wait: bool,
    timeout: Option<Duration>,
) -> Result<u8, CliError> {
    let request = Request::Drain {
        worker: worker.clone(),
        drain,
    };
    let message = match ctx.call(request).await? {
        Reply::Done { message } => message,
        other => return Err(unexpected(other)),
    };
    if !ctx.json {
        eprintln!("{message}");
    }
    let drained = if wait {
        let wait_all = wait_until_idle(ctx, worker.as_deref());
        match timeout {
            Some(limit) => tokio::time::timeout(limit, wait_all).await.ok(),
            None => Some(wait_all.await),
        }
        .transpose()?
        .is_some()
    } else {
        false
    };
    if wait && !drained {
        // A failure prints nothing on stdout, with or without --json.
        eprintln!("bbctl: error: builds still running after the --timeout");
        return Ok(EXIT_FAILED);
    }
    if ctx.json {
        print_json(&serde_json::json!({
            "ok": true,
            "message": message,
            "worker": worker,
            "draining": drain,
            "drained": drained,
        }))?;
    }
    if wait && !ctx.json {
        eprintln!("drained: no build running");
    }
    Ok(0)
}

/// Wait until no build runs on the master (or on `worker`): look at
/// `status` after every event, not on a timer.
async fn wait_until_idle(ctx: &mut Ctx, worker: Option<&str>) -> Result<(), CliError> {
    let mut events = ctx.open_connection().await?.subscribe().await??;
    loop {
        let status = match ctx.call(Request::Status(Default::default())).await? {
            Reply::Status(s) => s,
            other => return Err(unexpected(other)),
        };
        let busy = match worker {
            Some(name) => status
                .workers
                .iter()
                .find(|w| w.name == name)
                .is_some_and(|w| !w.running_builds.is_empty()),
            None => !status.running.is_empty(),
        };
        if !busy {
            return Ok(());
        }
        match events.recv().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(CliError::Server(ErrorReply::failed(
                    "the master went away while waiting",
                )));
            }
        }
    }
}

/// `bbctl worker-command NAME`: the `bbworker` line for a second host.
pub async fn worker_command(ctx: &mut Ctx, name: String) -> Result<u8, CliError> {
    let status = match ctx
        .call(Request::Status(crate::protocol::StatusFilter::default()))
        .await?
    {
        Reply::Status(s) => s,
        other => return Err(unexpected(other)),
    };
    let workers = match ctx.call(Request::Workers).await? {
        Reply::Workers(w) => w,
        other => return Err(unexpected(other)),
    };
    let failed = |text: String| CliError::Server(ErrorReply::failed(text));
    let Some(worker) = workers.iter().find(|w| w.status.name == name) else {
        let names: Vec<&str> = workers.iter().map(|w| w.status.name.as_str()).collect();
        return Err(failed(format!(
            "no worker named `{}` in the master's config (workers: {})",
            escape(&name),
            names.join(", ")
        )));
    };
    if worker.status.local {
        return Err(failed(format!(
            "worker `{name}` is local: the master starts it itself"
        )));
    }
    let Some(tls) = &status.tls else {
        return Err(failed(
            "the master listens for no remote workers: set `[master] worker_listen` \
             (e.g. [\"0.0.0.0:9989\"]) and reload"
                .into(),
        ));
    };
    let Some(addr) = tls
        .listen
        .first()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        return Err(failed("the master shows no listen address".into()));
    };
    let line = command_line(
        &addr,
        tls.fingerprint.as_deref(),
        &name,
        worker.secret_file.as_deref(),
    );
    if worker.secret_file.is_none() {
        eprintln!(
            "note: worker `{name}` has an inline `secret` in the master's config: put it in the \
             file named above on the worker's host (mode 0600), or use `secret_file`"
        );
    }
    if ctx.json {
        print_json(&serde_json::json!({ "command": line }))?;
    } else {
        writeln!(io::stdout().lock(), "{line}")?;
    }
    Ok(0)
}

/// The one line: `tls://` with the fingerprint, or `tcp://` without; a
/// wildcard address is replaced by this host's name.
fn command_line(
    addr: &std::net::SocketAddr,
    fingerprint: Option<&str>,
    name: &str,
    secret_file: Option<&str>,
) -> String {
    let host = if addr.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let default_secret = format!("/etc/bbworker/{name}.secret");
    let mut line = match fingerprint {
        Some(fp) => format!(
            "bbworker --master tls://{host}:{} --fingerprint {fp}",
            addr.port()
        ),
        None => format!("bbworker --master tcp://{host}:{}", addr.port()),
    };
    line.push_str(&format!(
        " --name {name} --secret-file {} --dir /var/lib/bbworker/{name}",
        secret_file.unwrap_or(&default_secret)
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn the_command_line_names_address_fingerprint_name_and_secret_file() {
        let v6 = "[::1]:9989".parse().unwrap();
        assert_eq!(
            command_line(&v6, Some("sha256:ab"), "box-2", Some("/etc/box-2.secret")),
            "bbworker --master tls://[::1]:9989 --fingerprint sha256:ab --name box-2 \
             --secret-file /etc/box-2.secret --dir /var/lib/bbworker/box-2"
        );
        let v4 = "192.0.2.1:1".parse().unwrap();
        assert!(command_line(&v4, None, "w", None).starts_with(
            "bbworker --master tcp://192.0.2.1:1 --name w --secret-file /etc/bbworker/w.secret"
        ));
    }
}
