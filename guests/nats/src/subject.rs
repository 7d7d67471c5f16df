//! NATS subjects and canonical topics.
//!
//! Tokens separated by `.` become levels separated by `/`; `*` becomes `+`
//! and `>` becomes `#` in a subscription; published, they are plain tokens.
//! A `/`, `%`, `+` or `#` inside a token is
//! percent-escaped (`%2F`, `%25`, `%2B`, `%23`) so that `a/b.c` and `a.b.c`
//! stay different topics and a literal `+` or `#` (legal in NATS) is no
//! wildcard; the RESP guest escapes channels the same way, so a NATS subject
//! `a+b` and a Redis channel `a+b` are one topic. Going back, levels are
//! joined with `.` and the escapes undone. Edge cases, documented for users
//! of several protocols: a level containing `.` (an MQTT topic `v1.2/x`)
//! appears to NATS as extra tokens (`v1.2.x`); a NATS `>` needs at least one
//! more token, while MQTT's `#` also matches its parent, which the guest
//! filters out on delivery.

/// Why a subject is refused.
pub type SubjectError = &'static str;

/// Characters a token may hold that a canonical topic level may not, with
/// their escapes.
const ESCAPES: [(char, &str); 4] = [('%', "%25"), ('/', "%2F"), ('+', "%2B"), ('#', "%23")];

/// Append `token` with the characters of [`ESCAPES`] percent-escaped.
fn escape_into(topic: &mut String, token: &str) {
    if !token.contains(['%', '/', '+', '#']) {
        topic.push_str(token);
        return;
    }
    for c in token.chars() {
        match ESCAPES.iter().find(|(raw, _)| *raw == c) {
            Some((_, escaped)) => topic.push_str(escaped),
            None => topic.push(c),
        }
    }
}

/// Append `level` with the escapes of [`escape_into`] undone, in one pass
/// (so an escape's output is never read as the start of another).
fn unescape_into(subject: &mut String, level: &str) {
    let mut rest = level;
    while let Some(at) = rest.find('%') {
        subject.push_str(&rest[..at]);
        let tail = &rest[at..];
        match ESCAPES.iter().find(|(_, escaped)| tail.starts_with(escaped)) {
            Some((raw, escaped)) => {
                subject.push(*raw);
                rest = &tail[escaped.len()..];
            }
            None => {
                subject.push('%');
                rest = &tail[1..];
            }
        }
    }
    subject.push_str(rest);
}

/// What the `*` and `>` tokens of a subject mean, which depends on what it
/// is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wildcards {
    /// A subscription: `*` becomes `+`, and `>` (last only) becomes `#`.
    Match,
    /// A publish subject: plain tokens, as nats-server routes them (even
    /// after a pedantic connection's `Invalid Publish Subject`). The topic
    /// level `*` then matches the filters `a/+` and `#` but no subscription
    /// to another literal level, as nats-server matches `a.*` published.
    Literal,
}

/// Whether a publish subject passes nats-server's pedantic check: no empty
/// tokens, no `*` or `>` tokens.
pub fn is_literal(subject: &str) -> bool {
    !subject.is_empty() && subject.split('.').all(|token| !matches!(token, "" | "*" | ">"))
}

/// Check a subject and return its canonical form.
pub fn to_topic(subject: &str, wildcards: Wildcards) -> Result<String, SubjectError> {
    let mut topic = String::with_capacity(subject.len());
    to_topic_into(&mut topic, subject, wildcards)?;
    Ok(topic)
}

/// [`to_topic`], appended to `topic`: for every published message, into a
/// reused buffer, copied whole when the subject is plain. After an error
/// `topic` may hold part of the mapping.
pub fn to_topic_into(topic: &mut String, subject: &str, wildcards: Wildcards) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err("empty subject");
    }
    if wildcards != Wildcards::Match && is_plain(subject) {
        // Copied whole, then the dots swapped in place: for short subjects
        // `split` costs a searcher per token and `push` a check per char.
        let start = topic.len();
        topic.push_str(subject);
        swap_ascii(&mut topic[start..], b'.', b'/');
        return Ok(());
    }
    let mut tokens = subject.split('.').peekable();
    let mut first = true;
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err("empty token or whitespace");
        }
        if !first {
            topic.push('/');
        }
        first = false;
        match (token, wildcards) {
            ("*", Wildcards::Match) => topic.push('+'),
            (">", Wildcards::Match) if last => topic.push('#'),
            (">", Wildcards::Match) => return Err("misplaced wildcard"),
            _ => escape_into(topic, token),
        }
    }
    Ok(())
}

/// What [`is_plain`] makes of each byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ByteClass {
    Plain,
    Dot,
    /// `*` or `>`: a wildcard when it is a whole token.
    Wildcard,
    /// Escaped, whitespace, a control character or not ASCII: the full
    /// rules decide.
    Other,
}

/// [`ByteClass`] of every byte, so the check per byte is one look-up.
const BYTE_CLASSES: [ByteClass; 256] = {
    let mut classes = [ByteClass::Other; 256];
    let mut byte = 0x21; // after space and the control characters
    while byte < 0x7f {
        classes[byte] = match byte as u8 {
            b'.' => ByteClass::Dot,
            b'*' | b'>' => ByteClass::Wildcard,
            b'%' | b'/' | b'+' | b'#' => ByteClass::Other,
            _ => ByteClass::Plain,
        };
        byte += 1;
    }
    classes
};

/// Whether `subject` is the common publish subject, checked in one pass
/// over its bytes: ASCII, tokens neither empty nor wildcards, nothing to
/// escape or refuse. Anything else goes through the full rules of
/// [`to_topic_into`].
fn is_plain(subject: &str) -> bool {
    let bytes = subject.as_bytes();
    let mut token_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        match BYTE_CLASSES[usize::from(byte)] {
            ByteClass::Plain => {}
            ByteClass::Dot if i == token_start => return false,
            ByteClass::Dot => token_start = i + 1,
            ByteClass::Wildcard if i == token_start && bytes.get(i + 1).is_none_or(|&b| b == b'.') => {
                return false;
            }
            ByteClass::Wildcard => {}
            ByteClass::Other => return false,
        }
    }
    token_start < bytes.len()
}

/// Replace every `from` byte of `text` with `to`, both ASCII.
fn swap_ascii(text: &mut str, from: u8, to: u8) {
    assert!(from.is_ascii() && to.is_ascii());
    // SAFETY: only the byte `from` is replaced, by `to`; both are ASCII, and
    // no byte of a multi-byte UTF-8 sequence is, so every char stays whole
    // and the string stays UTF-8.
    let bytes = unsafe { text.as_bytes_mut() };
    for byte in bytes {
        if *byte == from {
            *byte = to;
        }
    }
}

/// The NATS subject of a canonical topic.
pub fn from_topic(topic: &str) -> String {
    let mut subject = String::with_capacity(topic.len());
    from_topic_into(&mut subject, topic);
    subject
}

/// [`from_topic`], appended to `subject`: for every delivery, into a
/// reused buffer.
pub fn from_topic_into(subject: &mut String, topic: &str) {
    if !topic.contains('%') {
        // Nothing escaped (the usual case): copied whole, separators swapped.
        let start = subject.len();
        subject.push_str(topic);
        swap_ascii(&mut subject[start..], b'/', b'.');
        return;
    }
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            subject.push('.');
        }
        unescape_into(subject, level);
    }
}

/// Does subscription `subject` (NATS syntax) match the concrete `subject`?
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(actual)) if literal == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Wildcards::{Literal, Match};

    #[test]
    fn subjects_map_to_topics_and_back() {
        assert_eq!(to_topic("orders.eu.42", Literal).unwrap(), "orders/eu/42");
        assert_eq!(to_topic("orders.*.eu", Match).unwrap(), "orders/+/eu");
        assert_eq!(to_topic("orders.>", Match).unwrap(), "orders/#");
        assert_eq!(to_topic("a/b.c", Literal).unwrap(), "a%2Fb/c");
        assert_eq!(from_topic("a%2Fb/c"), "a/b.c");
        // Legal in NATS, wildcards in topics: escaped like RESP channels.
        assert_eq!(to_topic("a+b.#.c%", Literal).unwrap(), "a%2Bb/%23/c%25");
        assert_eq!(to_topic("+.*", Match).unwrap(), "%2B/+");
        assert_eq!(from_topic("a%2Bb/%23/c%25"), "a+b.#.c%");
        assert_eq!(from_topic("orders/eu/42"), "orders.eu.42");
        assert_eq!(from_topic("é/ü/x"), "é.ü.x", "separators swapped in place around multi-byte chars");
        assert_eq!(to_topic("é.ü.x", Literal).unwrap(), "é/ü/x");
        assert!(to_topic("a..b", Literal).is_err());
        assert!(to_topic("a.>.b", Match).is_err());
        assert!(to_topic("a b", Literal).is_err());
        assert!(to_topic("", Match).is_err());
    }

    #[test]
    fn the_plain_path_agrees_with_the_full_rules() {
        let subjects = [
            "a",
            "a.b.c",
            "orders.eu.42",
            "a..b",
            ".a",
            "a.",
            "a.*",
            "*",
            ">",
            "a.>",
            "a*b.c",
            "a>.b",
            "a b",
            "a\tb",
            "a/b",
            "a%b",
            "a+b",
            "a#b",
            "é.x",
            "_INBOX.abc.1",
        ];
        // The rules without the fast path.
        let full = |subject: &str| {
            let mut topic = String::new();
            for (i, token) in subject.split('.').enumerate() {
                if token.is_empty() || token.contains(char::is_whitespace) {
                    return None;
                }
                if i > 0 {
                    topic.push('/');
                }
                escape_into(&mut topic, token);
            }
            Some(topic)
        };
        for subject in subjects {
            assert_eq!(to_topic(subject, Literal).ok(), full(subject), "{subject}");
        }
    }

    #[test]
    fn escapes_round_trip() {
        // Literal escape texts in a subject must come back as themselves.
        for subject in ["%2F", "%252F", "a%2Bb", "%23%", "%", "%%2", "a/b+c#d%e", "+", "#.x", "é%2B", "a.b.c"]
        {
            let topic = to_topic(subject, Literal).unwrap();
            assert!(!topic.contains(['+', '#']), "{subject} -> {topic}");
            assert_eq!(from_topic(&topic), subject, "via {topic}");
            // Delivery relies on this: a subscription without wildcards
            // matches one topic, which maps back to the subject as subscribed.
            assert_eq!(to_topic(subject, Match).unwrap(), topic, "{subject} subscribed");
        }
    }

    #[test]
    fn wildcards_published_are_plain_tokens() {
        assert_eq!(to_topic("a.*", Literal).unwrap(), "a/*");
        assert_eq!(to_topic(">", Literal).unwrap(), ">");
        assert_eq!(to_topic("a.>.b", Literal).unwrap(), "a/>/b");
        assert_eq!(to_topic("*.x+", Literal).unwrap(), "*/x%2B");
        for subject in ["a.*", ">", "a.>.b", "*.x+"] {
            assert!(!is_literal(subject), "{subject}");
            assert_eq!(from_topic(&to_topic(subject, Literal).unwrap()), subject);
        }
        for subject in ["a", "a.b", "a*.>b", "+.#"] {
            assert!(is_literal(subject), "{subject}");
        }
        for subject in ["", "a..b", ".a", "a."] {
            assert!(!is_literal(subject), "{subject:?}");
        }
        // Matched as nats-server matches them: by the wildcards of a
        // subscription, never by another literal token.
        assert!(matches("a.*", "a.*"));
        assert!(matches(">", "a.>.b"));
        assert!(!matches("a.b", "a.*"));
    }

    #[test]
    fn nats_matching() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("_INBOX.x.*", "_INBOX.x.1"));
    }
}
