//! Glob patterns of scheduler filters (`branches`, `files`): `*` and `?`
//! within one path segment, `**` across segments (`src/**`, `**/*.rs`).
//!
//! Matched by simulating the pattern as a small automaton, so time is
//! linear in the text whatever the pattern: the text comes from change
//! sources and may be hostile.

/// One piece of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// This character.
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` (not followed by `/`): any run of characters.
    Deep,
    /// `**/`: nothing, or any run of characters ending with `/`.
    DeepDir,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    out.push(Token::DeepDir);
                    i += 3;
                } else {
                    out.push(Token::Deep);
                    i += 2;
                }
                continue;
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            c => out.push(Token::Lit(c)),
        }
        i += 1;
    }
    out
}

/// Does `text` match `pattern` as a whole?
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let toks = tokens(pattern);
    let m = toks.len();
    let mut states = vec![false; m + 1];
    states[0] = true;
    close(&toks, &mut states);
    let mut next = vec![false; m + 1];
    for c in text.chars() {
        next.iter_mut().for_each(|s| *s = false);
        let mut any = false;
        for (i, on) in states.iter().enumerate().take(m) {
            if !on {
                continue;
            }
            match toks[i] {
                Token::Lit(x) if x == c => next[i + 1] = true,
                Token::One if c != '/' => next[i + 1] = true,
                Token::Star if c != '/' => next[i] = true,
                Token::Deep => next[i] = true,
                Token::DeepDir => {
                    next[i] = true;
                    if c == '/' {
                        next[i + 1] = true;
                    }
                }
                _ => {}
            }
        }
        close(&toks, &mut next);
        for (s, n) in states.iter_mut().zip(&next) {
            *s = *n;
            any |= *n;
        }
        if !any {
            return false;
        }
    }
    states[m]
}

/// Add the states reachable without a character: past `*`, `**`, `**/`
/// that match nothing.
fn close(toks: &[Token], states: &mut [bool]) {
    for i in 0..toks.len() {
        if states[i] && matches!(toks[i], Token::Star | Token::Deep | Token::DeepDir) {
            states[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn stars_stay_in_a_segment_double_stars_cross_them() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainline"));
        assert!(glob_match("release/*", "release/1.0"));
        assert!(!glob_match("release/*", "release/1.0/hotfix"));
        assert!(glob_match("release/**", "release/1.0/hotfix"));
        assert!(glob_match("src/**", "src/a/b.rs"));
        assert!(!glob_match("src/**", "docs/a.md"));
        assert!(glob_match("Cargo.*", "Cargo.toml"));
        assert!(!glob_match("Cargo.*", "sub/Cargo.toml"));
        assert!(glob_match("**/*.rs", "a.rs"));
        assert!(glob_match("**/*.rs", "src/deep/a.rs"));
        assert!(!glob_match("**/*.rs", "src/deep/a.rsx"));
        assert!(glob_match("v?.*", "v1.2"));
        assert!(!glob_match("v?", "v/"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn a_long_hostile_text_is_matched_in_linear_time() {
        let text = "a".repeat(100_000);
        let pattern = "*a*a*a*a*a*a*a*a*b";
        let start = std::time::Instant::now();
        assert!(!glob_match(pattern, &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
