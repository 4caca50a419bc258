//! Text that came from outside (step output, worker names, reasons,
//! artifact names, property values) shown where control characters would
//! act instead of being read: a terminal, a table, the master's log.
//!
//! A newline in a worker name would forge a log line or a table row; an
//! escape sequence in a reason could retitle a window, write the clipboard
//! (OSC 52) or wipe `watch`'s screen; a right-to-left override makes
//! `evil\u{202e}txt.exe` read as something else. [`Escaped`] shows every
//! such character as a visible escape instead, and leaves the rest alone.

use std::fmt;

/// Whether `c` must not reach a terminal as itself: C0 and C1 controls,
/// DEL, and the Unicode bidirectional overrides and isolates.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Displays a string with every unsafe character escaped (`\n`, `\t`,
/// `\r`, `\x1b`, `\u{202e}`, ...) and a backslash doubled only when it
/// could be mistaken for such an escape, so safe text reads as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if !s.chars().any(is_unsafe) {
            return f.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if (c as u32) < 0x100 && is_unsafe(c) => write!(f, "\\x{:02x}", c as u32)?,
                c if is_unsafe(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

/// `s` escaped, as an owned string.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

/// `s` escaped and cut to at most `max` bytes (at a character boundary),
/// with a marker saying how long it was: for untrusted text the master
/// keeps or logs (a worker's error strings, host and software names), so
/// that neither its size nor its characters can hurt.
pub fn capped(s: &str, max: usize) -> String {
    let escaped = escape(s);
    if escaped.len() <= max {
        return escaped;
    }
    let mut cut = max;
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}... [truncated: {} bytes in all]",
        &escaped[..cut],
        s.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        assert_eq!(escape("hello, wörld: C:\\path"), "hello, wörld: C:\\path");
    }

    #[test]
    fn controls_and_overrides_become_visible() {
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\x1b]52;c;SGVsbG8=\x07"), "\\x1b]52;c;SGVsbG8=\\x07");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\u{9b}2J"), "\\x9b2J");
        assert_eq!(escape("tab\there\x7f"), "tab\\there\\x7f");
    }

    #[test]
    fn capped_text_is_escaped_and_short() {
        assert_eq!(capped("short", 10), "short");
        let long = "é".repeat(100);
        let c = capped(&long, 11);
        assert!(c.starts_with("ééééé..."), "{c}");
        assert!(c.ends_with("[truncated: 200 bytes in all]"), "{c}");
        assert_eq!(capped("a\nb", 100), "a\\nb");
    }

    #[test]
    fn a_backslash_is_doubled_only_beside_escapes() {
        // Without doubling, "\\n" (two characters) and "\n" would print alike.
        assert_eq!(escape("\\n\n"), "\\\\n\\n");
    }
}

/// Escapes step output on its way to a terminal, chunk by chunk: newlines,
/// tabs, `\r\n` and SGR colour sequences (`ESC [ ... m`) pass as they are,
/// so coloured compiler output still reads well; every other control
/// character or sequence (window titles, OSC 52 clipboard writes, screen
/// clears, cursor moves, bare `\r`), invalid UTF-8 and bidi overrides are
/// shown escaped. A sequence or character split between two chunks is
/// held back until the next one, so the result does not depend on where
/// the stream was cut.
#[derive(Debug, Default)]
pub struct TerminalFilter {
    pending: Vec<u8>,
}

/// The longest SGR sequence passed through; longer ones are escaped.
const MAX_SGR: usize = 64;

impl TerminalFilter {
    /// Filter the next chunk; returns what may be written now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            match step(&input[i..], false) {
                Step::Emit(len, bytes) => {
                    out.extend_from_slice(&bytes);
                    i += len;
                }
                Step::NeedMore => {
                    self.pending = input[i..].to_vec();
                    break;
                }
            }
        }
        out
    }

    /// The end of the stream: whatever was held back, escaped.
    pub fn finish(&mut self) -> Vec<u8> {
        let input = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match step(&input[i..], true) {
                Step::Emit(len, bytes) => {
                    out.extend_from_slice(&bytes);
                    i += len;
                }
                Step::NeedMore => unreachable!("at the end nothing waits for more"),
            }
        }
        out
    }
}

/// What to do with the start of the input.
enum Step {
    /// Consume this many bytes and write these.
    Emit(usize, Vec<u8>),
    /// The input ends inside a sequence or character: wait for more.
    NeedMore,
}

/// One decision at the start of `input`; `at_end` means no more will come.
fn step(input: &[u8], at_end: bool) -> Step {
    let b = input[0];
    match b {
        b'\n' | b'\t' => Step::Emit(1, vec![b]),
        b'\r' => match input.get(1) {
            Some(b'\n') => Step::Emit(2, b"\r\n".to_vec()),
            None if !at_end => Step::NeedMore,
            _ => Step::Emit(1, b"\\r".to_vec()),
        },
        0x1b => match sgr_len(input) {
            Ok(len) => Step::Emit(len, input[..len].to_vec()),
            Err(true) if !at_end => Step::NeedMore,
            Err(_) => Step::Emit(1, b"\\x1b".to_vec()),
        },
        0x00..=0x1f | 0x7f => Step::Emit(1, format!("\\x{b:02x}").into_bytes()),
        0x20..=0x7e => {
            // Plain ASCII runs are the common case: take them whole.
            let run = input
                .iter()
                .position(|&c| !(0x20..=0x7e).contains(&c))
                .unwrap_or(input.len());
            Step::Emit(run, input[..run].to_vec())
        }
        _ => {
            let width = utf8_width(b);
            if width == 0 {
                return Step::Emit(1, format!("\\x{b:02x}").into_bytes());
            }
            if input.len() < width {
                // A character cut by the chunk boundary, unless the bytes
                // that are there already show it is not one.
                let plausible = input[1..].iter().all(|c| c & 0xc0 == 0x80);
                if plausible && !at_end {
                    return Step::NeedMore;
                }
                return Step::Emit(1, format!("\\x{b:02x}").into_bytes());
            }
            match std::str::from_utf8(&input[..width]) {
                Ok(s) => {
                    let c = s.chars().next().expect("one character");
                    if is_unsafe(c) {
                        Step::Emit(width, Escaped(s).to_string().into_bytes())
                    } else {
                        Step::Emit(width, input[..width].to_vec())
                    }
                }
                Err(_) => Step::Emit(1, format!("\\x{b:02x}").into_bytes()),
            }
        }
    }
}

/// The length of the SGR sequence (`ESC [ digits ; : m`) at the start of
/// `input`; `Err(true)` when the input ends before it could be told,
/// `Err(false)` when it is not one.
fn sgr_len(input: &[u8]) -> Result<usize, bool> {
    match input.get(1) {
        None => return Err(true),
        Some(b'[') => {}
        Some(_) => return Err(false),
    }
    for (i, &c) in input.iter().enumerate().skip(2) {
        match c {
            b'0'..=b'9' | b';' | b':' if i < MAX_SGR => {}
            b'm' => return Ok(i + 1),
            _ => return Err(false),
        }
    }
    Err(input.len() < MAX_SGR)
}

/// The length of the UTF-8 sequence a leading byte announces; 0 when it
/// cannot lead one.
fn utf8_width(b: u8) -> usize {
    match b {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Escape `s` for a terminal but keep SGR colour sequences: for text this
/// program has coloured itself (table cells). Untrusted fields are escaped
/// with [`escape`] before they are coloured, so they bring no SGR of their
/// own.
pub fn escape_keeping_sgr(s: &str) -> String {
    let mut filter = TerminalFilter::default();
    let mut out = filter.push(s.as_bytes());
    out.extend(filter.finish());
    // Newlines and tabs pass the filter; a cell must not hold them either.
    String::from_utf8_lossy(&out)
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    fn filter(chunks: &[&[u8]]) -> String {
        let mut f = TerminalFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.push(c));
        }
        out.extend(f.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ordinary_output_and_colour_pass() {
        let text = "\x1b[1;31merror\x1b[0m: x\tyé ✓\r\nnext\n";
        assert_eq!(filter(&[text.as_bytes()]), text);
    }

    #[test]
    fn everything_else_is_escaped() {
        assert_eq!(
            filter(&[b"\x1b]0;title\x07\x1b]52;c;SGVsbG8=\x07\x1b[2J\x1b[H\rX"]),
            "\\x1b]0;title\\x07\\x1b]52;c;SGVsbG8=\\x07\\x1b[2J\\x1b[H\\rX"
        );
        assert_eq!(
            filter(&["a\u{202e}b\u{9b}c".as_bytes()]),
            "a\\u{202e}b\\x9bc"
        );
        assert_eq!(filter(&[b"\xff\xc3("]), "\\xff\\xc3(");
    }

    #[test]
    fn a_cut_anywhere_gives_the_same_result() {
        let text = "ok \x1b[32mgreen\x1b[0m é✓ \x1b]0;t\x07 \r\n\rend".as_bytes();
        let whole = filter(&[text]);
        for cut in 0..=text.len() {
            assert_eq!(filter(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
        for size in 1..4 {
            let chunks: Vec<&[u8]> = text.chunks(size).collect();
            assert_eq!(filter(&chunks), whole, "chunks of {size}");
        }
    }

    #[test]
    fn table_cells_keep_their_colour_but_not_their_lines() {
        assert_eq!(
            escape_keeping_sgr("\x1b[32mok\x1b[0m\nforged"),
            "\x1b[32mok\x1b[0m\\nforged"
        );
    }
}
