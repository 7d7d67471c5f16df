//! Canonical topics and filters: validation, matching, and grant coverage.
//!
//! A topic is a non-empty UTF-8 string of `/`-separated levels with no `+`,
//! `#` or NUL. A wildcard filter may use `+` as a whole level (one level) and
//! `#` as the last level (that level's parent and everything below). Topics
//! starting with `$` are not matched by a filter whose first level is a
//! wildcard, so `#` does not see `$SYS/...`.

/// Longest topic or filter, in bytes (the MQTT limit).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a topic or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_TOPIC_BYTES} bytes")]
    TooLong,
    #[error("contains a NUL character")]
    Nul,
    #[error("contains a wildcard (`+` or `#`)")]
    WildcardInTopic,
    #[error("`+` must stand alone in its level")]
    BadPlus,
    #[error("`#` must stand alone in the last level")]
    BadHash,
}

fn check_length(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

fn check_common(s: &str) -> Result<(), TopicError> {
    check_length(s)?;
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// The `/`-separated levels of a topic or filter, split byte by byte:
/// the router splits every published topic, and `str::split` with a
/// `char` sets up a searcher per level, a cost that shows for short topics.
#[derive(Clone)]
pub struct Levels<'a> {
    rest: Option<&'a str>,
}

/// The levels of `topic` (one empty level for an empty string, as
/// `str::split` gives).
pub fn levels(topic: &str) -> Levels<'_> {
    Levels { rest: Some(topic) }
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|byte| byte == b'/') {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Check a topic a message is published to.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_length(topic)?;
    // Every publish runs this: one pass over the bytes for NUL and both
    // wildcards, where `contains` took one for each. A NUL anywhere is
    // reported before a wildcard, as by the other checks.
    match topic.bytes().position(|b| matches!(b, 0 | b'+' | b'#')) {
        None => Ok(()),
        Some(at) if topic.as_bytes()[at..].contains(&0) => Err(TopicError::Nul),
        Some(_) => Err(TopicError::WildcardInTopic),
    }
}

/// Check a wildcard filter.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('+') && level != "+" {
            return Err(TopicError::BadPlus);
        }
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::BadHash);
        }
    }
    Ok(())
}

/// Check a filter of any kind before it reaches the router.
pub fn validate_exact_or_glob(filter: &str) -> Result<(), TopicError> {
    check_common(filter)
}

/// Does the wildcard `filter` match `topic`? Both must be valid. A filter
/// starting with a wildcard does not match a `$` topic (MQTT 4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    matches_levels(filter, topic)
}

/// Does `filter` match `topic` level by level, without the `$` rule? Grants
/// use this: a grant of `#` allows `$SYS/...` too.
pub fn matches_levels(filter: &str, topic: &str) -> bool {
    // The default publish grant, checked on every publish: no splitting.
    if filter == "#" {
        return true;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        match filter_level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Is every topic matched by the wildcard filter `inner` also matched by the
/// wildcard filter `outer`? Used to check a subscription against grants.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut inner_levels = inner.split('/');
    for outer_level in outer.split('/') {
        let Some(inner_level) = inner_levels.next() else {
            // `a/#` covers `a`: `#` includes its parent level.
            return outer_level == "#";
        };
        match (outer_level, inner_level) {
            ("#", _) => return true,
            (_, "#") => return false,
            ("+", _) => {}
            (_, "+") => return false,
            (a, b) if a == b => {}
            _ => return false,
        }
    }
    inner_levels.next().is_none()
}

/// The part of a glob pattern before its first special character.
pub fn glob_literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    &pattern[..end]
}

/// Is every topic a glob `pattern` can match also matched by wildcard filter
/// `outer`? Conservative: only filters of literal levels ending in `#` can
/// cover a glob, and only when the glob's literal prefix spans those levels.
pub fn covers_glob(outer: &str, pattern: &str) -> bool {
    if outer == "#" {
        return true;
    }
    let Some(base) = outer.strip_suffix("/#") else {
        return !pattern.contains(['*', '?', '[', '\\']) && matches_levels(outer, pattern);
    };
    if base.split('/').any(|level| level == "+") {
        return false;
    }
    glob_literal_prefix(pattern).starts_with(&format!("{base}/"))
}

/// Does a Redis-style glob `pattern` match `text`? Supports `*`, `?`,
/// `[abc]`, `[a-z]`, `[^a]` and `\x`. Iterative with one backtrack point,
/// so hostile patterns cannot blow up.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_matches(p, pi, t[ti])
                        && matched
                    {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_pi, star_ti)) => {
                pi = star_pi + 1;
                ti = star_ti + 1;
                star = Some((star_pi, star_ti + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Match byte `c` against the class starting at `p[start] == b'['`.
/// Returns whether it matched and the index after the class.
fn class_matches(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == b'^';
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() && (p[i] != b']' || first) {
        first = false;
        let mut lo = p[i];
        if lo == b'\\' && i + 1 < p.len() {
            i += 1;
            lo = p[i];
        }
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            let hi = p[i + 2];
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    if i >= p.len() {
        return None; // unterminated class: treat `[` literally
    }
    Some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_split_as_str_split_does() {
        for topic in ["", "a", "a/b", "/", "a//b", "/a/", "é/ü/€", "$SYS/x/y/z"] {
            let ours: Vec<&str> = levels(topic).collect();
            let std: Vec<&str> = topic.split('/').collect();
            assert_eq!(ours, std, "{topic:?}");
        }
    }

    #[test]
    fn filters_validate() {
        assert!(validate_filter("a/+/c").is_ok());
        assert!(validate_filter("#").is_ok());
        assert!(validate_filter("a/#").is_ok());
        assert_eq!(validate_filter("a/#/c"), Err(TopicError::BadHash));
        assert_eq!(validate_filter("a/b#"), Err(TopicError::BadHash));
        assert_eq!(validate_filter("a+/b"), Err(TopicError::BadPlus));
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic("a/+"), Err(TopicError::WildcardInTopic));
    }

    #[test]
    fn topics_validate() {
        assert!(validate_topic("a/b/c").is_ok());
        assert!(validate_topic("$SYS/x").is_ok());
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_topic(&"a".repeat(MAX_TOPIC_BYTES + 1)), Err(TopicError::TooLong));
        assert_eq!(validate_topic("a/#"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a/\0"), Err(TopicError::Nul));
        // A NUL is reported wherever it is, before or after a wildcard.
        assert_eq!(validate_topic("a/+/\0"), Err(TopicError::Nul));
        assert_eq!(validate_topic("\0/+"), Err(TopicError::Nul));
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("+", "a/b"));
        assert!(matches("+/+", "/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        // Grants match level by level without the `$` rule.
        assert!(matches_levels("#", "$SYS/x"));
        assert!(matches_levels("#", "a"));
        assert!(matches_levels("a/#", "a/b"));
        assert!(!matches_levels("a/+", "a/b/c"));
    }

    #[test]
    fn grant_coverage() {
        assert!(covers("#", "a/+/c"));
        assert!(covers("a/#", "a/b/#"));
        assert!(covers("a/#", "a"));
        assert!(!covers("a/#", "#"));
        assert!(!covers("a/+", "a/#"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/b", "a/+"));
        assert!(covers_glob("news/#", "news/*"));
        assert!(!covers_glob("news/#", "new*"));
        assert!(covers_glob("#", "*"));
    }

    #[test]
    fn globs() {
        assert!(glob_matches("news.*", "news.sport"));
        assert!(glob_matches("h?llo", "hello"));
        assert!(glob_matches("h[ae]llo", "hallo"));
        assert!(!glob_matches("h[^e]llo", "hello"));
        assert!(glob_matches("h[a-c]llo", "hbllo"));
        assert!(glob_matches("a\\*", "a*"));
        assert!(!glob_matches("a\\*", "ab"));
        assert!(glob_matches("*a*b*c*", "xxaxxbxxc"));
        assert!(!glob_matches("*a*b*c*d", "xxaxxbxxc"));
        assert!(glob_matches("*", ""));
    }
}
