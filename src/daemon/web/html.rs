//! HTML building blocks: escaping (everything a build, a worker or a
//! request supplies is untrusted and passes through [`esc`]), the page
//! frame, and how results, times and durations look.

use std::fmt::Write as _;

use crate::protocol::BuildResult;

/// `text` escaped for HTML text and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` for a URL path segment (builder names are plain, but a link is
/// never where escaping is skipped).
pub fn url_segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The CSS of every page: small, readable on a phone, no external files.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72rem;\
padding:.5rem 1rem;line-height:1.4;color:#222;background:#fff}\
nav a{margin-right:1rem}table{border-collapse:collapse;width:100%;margin:.5rem 0}\
td,th{border-bottom:1px solid #ddd;padding:.25rem .4rem;text-align:left;vertical-align:top}\
.wide{overflow-x:auto}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;\
white-space:pre-wrap;word-break:break-all;max-height:40rem;overflow-y:auto}\
.r{display:inline-block;padding:0 .4rem;border-radius:.2rem;color:#fff;background:#888}\
.success{background:#2a7d2a}.failure{background:#c0392b}.exception{background:#8e44ad}\
.cancelled{background:#7f8c8d}.retry{background:#d68910}.skipped{background:#95a5a6}\
.running{background:#2471a3}.grid a{display:inline-block;width:1.1rem;height:1.1rem;\
margin:1px;border-radius:.15rem}small{color:#666}form.inline{display:inline}\
@media (max-width:40rem){td,th{padding:.2rem}body{padding:.25rem}}";

/// A whole page: `title` (escaped here), the navigation, `body` (already
/// HTML), and `script` run with `nonce` (the only script the page's
/// Content-Security-Policy admits).
pub fn page(prefix: &str, title: &str, body: &str, script: &str, nonce: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} - bbmaster</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"{p}/\">builders</a><a href=\"{p}/queue\">queue</a>\
         <a href=\"{p}/workers\">workers</a><a href=\"{p}/changes\">changes</a><a href=\"{p}/api/v1/status\">json</a></nav>\
         <h1>{t}</h1>{body}",
        t = esc(title),
        p = esc(prefix),
    );
    if !script.is_empty() {
        let _ = write!(out, "<script nonce=\"{nonce}\">{script}</script>");
    }
    out.push_str("</body></html>");
    out
}

/// The word for a result (`running` while there is none).
pub fn result_word(result: Option<BuildResult>) -> &'static str {
    match result {
        None => "running",
        Some(r) => r.as_str(),
    }
}

/// A result as a coloured label.
pub fn result_label(result: Option<BuildResult>) -> String {
    let word = result_word(result);
    format!("<span class=\"r {word}\">{word}</span>")
}

/// A duration in ms for people: `850 ms`, `12.3 s`, `4 min 2 s`, `2 h 5 min`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A time (ms since the epoch) as UTC, `2026-12-02 03:45:03`, in a
/// `<time>` element that the page's script may show in local time.
pub fn time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "<time data-ms=\"{ms}\">{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z</time>",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_untrusted_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(url_segment("a b/../c"), "a%20b%2F..%2Fc");
    }

    #[test]
    fn times_and_durations_read_well() {
        assert!(time(0).contains("1970-01-01 00:00:00Z"));
        assert!(time(1_795_829_827_315).contains("2026-11-28 01:37:07Z"));
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_300), "12.3 s");
        assert_eq!(duration(242_000), "4 min 2 s");
    }
}
