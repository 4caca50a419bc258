//! IRC lines: parsing what the server sends, and making what we send safe.
//!
//! Everything that came from a build (a builder's name, a reason, a step's
//! name) goes through [`clean`] before it is put on a line: a CR or LF in
//! it would otherwise end our line and start a command of the builder's
//! choosing. Long texts are cut by [`split_text`] at UTF-8 boundaries so
//! that the line the server relays stays within 512 bytes.

/// The longest line we accept from the server (IRCv3 tags included).
pub const MAX_IN_LINE: usize = 8191;

/// The longest line on the wire, CR LF included (RFC 1459).
pub const MAX_LINE: usize = 512;

/// What the server adds in front of our PRIVMSG when relaying it
/// (`:nick!user@host `): the nick is known, user and host are not, so
/// their maximum (10 + 63 bytes) is assumed.
const RELAY_PREFIX_RESERVE: usize = 1 + 1 + 10 + 1 + 63 + 1;

/// One line from the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// IRCv3 tags (`@account=alice;...`), values unescaped.
    pub tags: Vec<(String, String)>,
    /// The source (`nick!user@host` or a server name), without the colon.
    pub prefix: Option<String>,
    /// The command or numeric, upper case.
    pub command: String,
    /// The parameters, the trailing one included.
    pub params: Vec<String>,
}

impl Message {
    /// Parses one line (without CR LF); `None` for an empty line.
    pub fn parse(line: &str) -> Option<Message> {
        let mut rest = line.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
        let mut msg = Message::default();
        if let Some(tagged) = rest.strip_prefix('@') {
            let (tags, after) = tagged.split_once(' ').unwrap_or((tagged, ""));
            for tag in tags.split(';').filter(|t| !t.is_empty()) {
                let (key, value) = tag.split_once('=').unwrap_or((tag, ""));
                msg.tags.push((key.to_owned(), unescape_tag(value)));
            }
            rest = after.trim_start_matches(' ');
        }
        if let Some(prefixed) = rest.strip_prefix(':') {
            let (prefix, after) = prefixed.split_once(' ').unwrap_or((prefixed, ""));
            msg.prefix = Some(prefix.to_owned());
            rest = after.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return None;
        }
        msg.command = command.to_ascii_uppercase();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                msg.params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            msg.params.push(param.to_owned());
            rest = after;
        }
        Some(msg)
    }

    /// The nick of the source (`nick` of `nick!user@host`).
    pub fn nick(&self) -> Option<&str> {
        let prefix = self.prefix.as_deref()?;
        Some(prefix.split(['!', '@']).next().unwrap_or(prefix))
    }

    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parameter `i`, or "".
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// The last parameter, or "".
    pub fn trailing(&self) -> &str {
        self.params.last().map(String::as_str).unwrap_or("")
    }
}

/// IRCv3 tag value escapes (`\:` `\s` `\\` `\r` `\n`).
fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Case-insensitive equality of nicks and channels (rfc1459 casemapping:
/// `[]\~` are the upper case of `{}|^`).
pub fn irc_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// The rfc1459 lower case of a nick or channel, for map keys.
pub fn irc_lower(s: &str) -> String {
    s.bytes().map(|b| fold(b) as char).collect()
}

fn fold(b: u8) -> u8 {
    match b {
        b'[' => b'{',
        b']' => b'}',
        b'\\' => b'|',
        b'~' => b'^',
        _ => b.to_ascii_lowercase(),
    }
}

/// `text` without control characters: CR, LF and tabs become spaces, the
/// rest (NUL, IRC colour and format codes, DEL, C1) are dropped.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\r' | '\n' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// A word fit to be a parameter of ours (a nick, a channel, a key): no
/// space, no control character, not starting with `:`.
pub fn is_param(word: &str) -> bool {
    !word.is_empty() && !word.starts_with(':') && !word.chars().any(|c| c == ' ' || c.is_control())
}

/// How many bytes of text fit in one `PRIVMSG target :text` sent as
/// `nick`, once the server has put its prefix in front.
pub fn text_budget(nick: &str, target: &str) -> usize {
    let fixed = RELAY_PREFIX_RESERVE + nick.len() + "PRIVMSG ".len() + target.len() + " :".len();
    MAX_LINE.saturating_sub(fixed + 2).max(64)
}

/// `text` (cleaned) cut into pieces of at most `budget` bytes, on UTF-8
/// boundaries, preferring a space; no piece is empty unless `text` is.
pub fn split_text(text: &str, budget: usize) -> Vec<String> {
    let text = clean(text);
    let budget = budget.max(4);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while rest.len() > budget {
        let mut cut = budget;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(space) = rest[..cut].rfind(' ')
            && space > budget / 2
        {
            cut = space;
        }
        out.push(rest[..cut].to_owned());
        rest = rest[cut..].trim_start_matches(' ');
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// A line reader with a length limit: bytes in, lines out. A line longer
/// than [`MAX_IN_LINE`] is dropped whole (and said so), never split into
/// two lines that the server did not send.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// Inside an over-long line: skip to its end.
    discarding: bool,
}

/// What [`LineBuf::next_line`] yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line, CR LF removed, invalid UTF-8 replaced.
    Text(String),
    /// A line longer than the limit was dropped.
    TooLong,
}

impl LineBuf {
    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line: Vec<u8> = self.buf.drain(..=end).collect();
                    if std::mem::take(&mut self.discarding) || end > MAX_IN_LINE {
                        return Some(Line::TooLong);
                    }
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\r', '\n']);
                    if text.is_empty() {
                        continue;
                    }
                    return Some(Line::Text(text.to_owned()));
                }
                None => {
                    if self.buf.len() > MAX_IN_LINE {
                        self.buf.clear();
                        self.discarding = true;
                    }
                    return None;
                }
            }
        }
    }
}

/// Standard base64 (for SASL PLAIN), with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_prefix_params_and_trailing() {
        let m =
            Message::parse("@account=alice;time=2020 :alice!a@h PRIVMSG #builds :!force hello now")
                .unwrap();
        assert_eq!(m.tag("account"), Some("alice"));
        assert_eq!(m.nick(), Some("alice"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#builds", "!force hello now"]);
        let m = Message::parse("PING :irc.example").unwrap();
        assert_eq!((m.command.as_str(), m.trailing()), ("PING", "irc.example"));
        let m = Message::parse(":srv 001 bot :Welcome").unwrap();
        assert_eq!(m.param(0), "bot");
        let m = Message::parse("@a=x\\sy\\:z :n CAP * LS :sasl").unwrap();
        assert_eq!(m.tag("a"), Some("x y;z"));
        assert!(Message::parse("").is_none());
        assert!(Message::parse(":only.prefix").is_none());
    }

    #[test]
    fn case_mapping_is_rfc1459() {
        assert!(irc_eq("Bot[1]", "bot{1}"));
        assert!(!irc_eq("bot", "bot_"));
        assert_eq!(irc_lower("#Builds\\"), "#builds|");
    }

    #[test]
    fn clean_strips_line_breaks_and_controls() {
        assert_eq!(clean("a\r\nQUIT :x\x01\x03\x04b\tc\u{85}"), "a  QUIT :xb c");
    }

    #[test]
    fn split_respects_utf8_and_budget() {
        let text = "é".repeat(300); // 600 bytes
        let parts = split_text(&text, 101);
        assert!(parts.iter().all(|p| p.len() <= 101), "{parts:?}");
        assert_eq!(parts.concat(), text);
        assert_eq!(parts[0].len(), 100);
        let parts = split_text("aaaa bbbb cccc", 10);
        assert_eq!(parts, vec!["aaaa bbbb", "cccc"]);
        assert_eq!(split_text("", 10), vec![""]);
        assert_eq!(split_text("x\ny", 10), vec!["x y"]);
    }

    #[test]
    fn a_relayed_line_stays_within_512_bytes() {
        let nick = "bbmaster";
        let target = "#builds";
        let budget = text_budget(nick, target);
        for part in split_text(&"x".repeat(2000), budget) {
            let relayed = format!(
                ":{nick}!{}@{} PRIVMSG {target} :{part}\r\n",
                "u".repeat(10),
                "h".repeat(63)
            );
            assert!(relayed.len() <= MAX_LINE, "{}", relayed.len());
        }
    }

    #[test]
    fn line_buffer_joins_reads_and_drops_overlong_lines() {
        let mut b = LineBuf::default();
        b.push(b"PING :a\r\nPI");
        assert_eq!(b.next_line(), Some(Line::Text("PING :a".into())));
        assert_eq!(b.next_line(), None);
        b.push(b"NG :b\n\r\n");
        assert_eq!(b.next_line(), Some(Line::Text("PING :b".into())));
        assert_eq!(b.next_line(), None);
        b.push(&vec![b'x'; MAX_IN_LINE + 10]);
        assert_eq!(b.next_line(), None);
        b.push(b"tail\r\nOK\r\n");
        assert_eq!(b.next_line(), Some(Line::TooLong));
        assert_eq!(b.next_line(), Some(Line::Text("OK".into())));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"a\0a\0p"), "YQBhAHA=");
    }
}
