//! NATS subjects and canonical topics.
//!
//! Tokens separated by `.` become levels separated by `/`; `*` becomes `+`
//! and `>` becomes `#`. A `/` or `%` inside a token is percent-escaped
//! (`%2F`, `%25`) so that `a/b.c` and `a.b.c` stay different topics. Going
//! back, levels are joined with `.` and the escapes undone. Edge cases,
//! documented for users of several protocols: a level containing `.` (an
//! MQTT topic `v1.2/x`) appears to NATS as extra tokens (`v1.2.x`); a NATS
//! `>` needs at least one more token, while MQTT's `#` also matches its
//! parent, which the guest filters out on delivery.

/// Why a subject is refused.
pub type SubjectError = &'static str;

fn escape(token: &str) -> String {
    token.replace('%', "%25").replace('/', "%2F")
}

fn unescape(level: &str) -> String {
    level.replace("%2F", "/").replace("%25", "%")
}

/// Check a subject (or, with `wildcards`, a subscription subject) and
/// return its canonical form.
pub fn to_topic(subject: &str, wildcards: bool) -> Result<String, SubjectError> {
    if subject.is_empty() {
        return Err("empty subject");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let mut levels = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.contains(|c: char| c.is_whitespace()) {
            return Err("empty token or whitespace");
        }
        let level = match *token {
            "*" if wildcards => "+".to_string(),
            ">" if wildcards && i + 1 == tokens.len() => "#".to_string(),
            _ if token.contains(['*', '>']) && wildcards && token.len() == 1 => {
                return Err("misplaced wildcard");
            }
            _ => {
                if token.contains(['+', '#']) {
                    // Canonical topics reserve these for wildcards.
                    return Err("'+' and '#' are not allowed in subjects here");
                }
                if !wildcards && (*token == "*" || *token == ">") {
                    return Err("wildcards in a publish subject");
                }
                escape(token)
            }
        };
        levels.push(level);
    }
    Ok(levels.join("/"))
}

/// The NATS subject of a canonical topic.
pub fn from_topic(topic: &str) -> String {
    topic.split('/').map(unescape).collect::<Vec<_>>().join(".")
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

    #[test]
    fn subjects_map_to_topics_and_back() {
        assert_eq!(to_topic("orders.eu.42", false).unwrap(), "orders/eu/42");
        assert_eq!(to_topic("orders.*.eu", true).unwrap(), "orders/+/eu");
        assert_eq!(to_topic("orders.>", true).unwrap(), "orders/#");
        assert_eq!(to_topic("a/b.c", false).unwrap(), "a%2Fb/c");
        assert_eq!(from_topic("a%2Fb/c"), "a/b.c");
        assert_eq!(from_topic("orders/eu/42"), "orders.eu.42");
        assert!(to_topic("a..b", false).is_err());
        assert!(to_topic("a.>.b", true).is_err());
        assert!(to_topic("a.*", false).is_err());
        assert!(to_topic("a b", false).is_err());
        assert!(to_topic("", true).is_err());
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
