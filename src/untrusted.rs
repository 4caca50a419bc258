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
    fn a_backslash_is_doubled_only_beside_escapes() {
        // Without doubling, "\\n" (two characters) and "\n" would print alike.
        assert_eq!(escape("\\n\n"), "\\\\n\\n");
    }
}
