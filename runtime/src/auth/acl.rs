//! Topic access rules of a user (or of anonymous clients): canonical filters
//! in which `%u` stands for the user name and `%c` for the client id.
//!
//! A rule whose substitution is unusable (the name or id contains `/`, `+`
//! or `#`, or the client has no id) matches nothing: the rules fail closed.

use crate::config::AclConfig;
use crate::topic;
use crate::wasm::bindings::types::FilterKind;

/// Compiled rules.
#[derive(Debug, Clone)]
pub struct Acl {
    publish: Vec<String>,
    subscribe: Vec<String>,
    /// `#` among the rules: everything allowed, no per-call work.
    publish_all: bool,
    subscribe_all: bool,
}

/// Fill `%u` and `%c` into `pattern`; `None` when the result would not be a
/// valid filter of the intended shape.
fn fill(pattern: &str, user: &str, client: &str) -> Option<String> {
    let unusable = |value: &str| value.is_empty() || value.contains(['/', '+', '#']);
    if pattern.contains("%u") && unusable(user) || pattern.contains("%c") && unusable(client) {
        return None;
    }
    let filled = pattern.replace("%u", user).replace("%c", client);
    topic::validate_filter(&filled).ok().map(|()| filled)
}

impl Acl {
    pub fn new(config: &AclConfig) -> Self {
        Self {
            publish_all: config.publish.iter().any(|p| p == "#"),
            subscribe_all: config.subscribe.iter().any(|p| p == "#"),
            publish: config.publish.clone(),
            subscribe: config.subscribe.clone(),
        }
    }

    /// May `user` (with client id `client`) publish to `topic`?
    pub fn may_publish(&self, topic: &str, user: &str, client: &str) -> bool {
        self.publish_all
            || self
                .publish
                .iter()
                .filter_map(|p| fill(p, user, client))
                .any(|f| topic::matches_levels(&f, topic))
    }

    /// May they subscribe to `filter` of `kind`? Only if a rule covers every
    /// topic the filter can match.
    pub fn may_subscribe(&self, filter: &str, kind: FilterKind, user: &str, client: &str) -> bool {
        if self.subscribe_all {
            return true;
        }
        self.subscribe.iter().filter_map(|p| fill(p, user, client)).any(|rule| match kind {
            FilterKind::Wildcard => topic::covers(&rule, filter),
            FilterKind::Exact => topic::matches_levels(&rule, filter),
            FilterKind::Glob => topic::covers_glob(&rule, filter),
        })
    }

    /// May they receive a message on `topic`? Checked on every delivery.
    pub fn may_receive(&self, topic: &str, user: &str, client: &str) -> bool {
        self.subscribe_all
            || self
                .subscribe
                .iter()
                .filter_map(|p| fill(p, user, client))
                .any(|f| topic::matches_levels(&f, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(publish: &[&str], subscribe: &[&str]) -> Acl {
        Acl::new(&AclConfig {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn user_and_client_are_substituted() {
        let acl = acl(&["users/%u/#", "devices/%c/out"], &["users/%u/#", "public/+"]);
        assert!(acl.may_publish("users/alice/x", "alice", "d1"));
        assert!(!acl.may_publish("users/bob/x", "alice", "d1"));
        assert!(acl.may_publish("devices/d1/out", "alice", "d1"));
        assert!(!acl.may_publish("devices/d2/out", "alice", "d1"));
        assert!(acl.may_subscribe("users/alice/+", FilterKind::Wildcard, "alice", "d1"));
        assert!(!acl.may_subscribe("users/#", FilterKind::Wildcard, "alice", "d1"), "wider than the rule");
        assert!(acl.may_subscribe("public/news", FilterKind::Exact, "alice", "d1"));
        assert!(acl.may_receive("public/news", "alice", "d1"));
        assert!(!acl.may_receive("private/news", "alice", "d1"));
    }

    #[test]
    fn unusable_substitutions_fail_closed() {
        let acl = acl(&["users/%u/#", "devices/%c/#"], &[]);
        assert!(!acl.may_publish("users/a/b/x", "a/b", "c"), "a / in the name must not widen the rule");
        assert!(!acl.may_publish("users/+/x", "+", "c"));
        assert!(!acl.may_publish("devices//x", "u", ""), "no client id");
        assert!(!acl.may_subscribe("anything", FilterKind::Wildcard, "u", "c"));
    }

    #[test]
    fn hash_allows_everything_including_dollar_topics() {
        let acl = acl(&["#"], &["#"]);
        assert!(acl.may_publish("$SYS/x", "u", ""));
        assert!(acl.may_subscribe("$SYS/#", FilterKind::Wildcard, "u", ""));
    }
}
