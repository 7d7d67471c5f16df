//! Who a client is and what it may do, decided by the host for every
//! protocol: guests only pass on the credentials their protocol carries.
//!
//! Users come from `[[auth.users]]` (and `auth.users_file`) with argon2id
//! password or token hashes and topic rules ([`acl`]). A verified TLS client
//! certificate names its user by common name. Clients without credentials
//! are anonymous, admitted only where the listener allows it, under
//! `[auth.anonymous]`. When no user is configured at all, credentials are
//! not checked and every admitted client is anonymous. Repeated failures
//! from one address make it wait ([`backoff`]).

pub mod acl;
pub mod backoff;
pub mod password;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::config::{AclConfig, AuthConfig};
use crate::wasm::bindings::types::Credentials;
use acl::Acl;
use backoff::Backoff;

/// Most verified credentials remembered, so a reconnecting client does not
/// pay an argon2 hash each time. Kept in memory only.
const MAX_VERIFIED: usize = 10_000;

/// A configured user.
#[derive(Debug)]
pub struct User {
    pub name: String,
    password_hash: Option<String>,
    token_hash: Option<String>,
    pub acl: Acl,
}

/// Who a connection's client is.
#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    User(Arc<User>),
}

impl Identity {
    /// The name for `%u`, logs and the guest.
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::User(user) => &user.name,
        }
    }
}

/// What the connection knows before the guest asks: the listener's policy
/// and any identity TLS established.
#[derive(Debug, Clone)]
pub struct ConnAuth {
    pub peer: IpAddr,
    pub allow_anonymous: bool,
    /// Common name of a verified client certificate.
    pub certificate_user: Option<String>,
}

/// Why authentication failed. The texts are safe to show a client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("bad user name or password")]
    BadCredentials,
    #[error("credentials required")]
    AnonymousRefused,
    #[error("too many failed attempts; retry in {} s", .0.as_secs().max(1))]
    Blocked(Duration),
}

/// The broker's users and rules.
pub struct Auth {
    users: HashMap<String, Arc<User>>,
    anonymous: Acl,
    backoff: Backoff,
    /// sha256(hash string, secret) of credentials that verified.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Verified against when the user is unknown, so timing does not tell.
    decoy_hash: Option<String>,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Self {
        let users: HashMap<String, Arc<User>> = config
            .users
            .iter()
            .map(|u| {
                let user = User {
                    name: u.name.clone(),
                    password_hash: u.password_hash.clone(),
                    token_hash: u.token_hash.clone(),
                    acl: Acl::new(&u.acl()),
                };
                (u.name.clone(), Arc::new(user))
            })
            .collect();
        let decoy_hash = if users.is_empty() { None } else { password::hash(b"decoy").ok() };
        Self {
            users,
            anonymous: Acl::new(&config.anonymous),
            backoff: Backoff::new(
                config.max_failures,
                Duration::from_millis(config.backoff_initial_ms),
                Duration::from_millis(config.backoff_max_ms),
            ),
            verified: Mutex::default(),
            decoy_hash,
        }
    }

    /// Whether any user is configured.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// The rules that apply to `identity`.
    pub fn acl<'a>(&'a self, identity: &'a Identity) -> &'a Acl {
        match identity {
            Identity::Anonymous => &self.anonymous,
            Identity::User(user) => &user.acl,
        }
    }

    /// The identity a connection has before any credentials: its
    /// certificate's user, anonymous where allowed, or none yet.
    pub fn initial_identity(&self, conn: &ConnAuth) -> Option<Identity> {
        match &conn.certificate_user {
            Some(name) => Some(self.certificate_identity(name)),
            None => conn.allow_anonymous.then_some(Identity::Anonymous),
        }
    }

    /// A certificate's user: the configured one of that name, or one with
    /// the default rules (everything).
    fn certificate_identity(&self, name: &str) -> Identity {
        let user = self.users.get(name).cloned().unwrap_or_else(|| {
            Arc::new(User {
                name: name.to_string(),
                password_hash: None,
                token_hash: None,
                acl: Acl::new(&AclConfig::default()),
            })
        });
        Identity::User(user)
    }

    /// Decide who presents `credentials` on a connection.
    pub fn authenticate(&self, credentials: &Credentials, conn: &ConnAuth) -> Result<Identity, AuthError> {
        let now = Instant::now();
        if let Some(wait) = self.backoff.blocked(conn.peer, now) {
            return Err(AuthError::Blocked(wait));
        }
        if let Some(name) = &conn.certificate_user {
            return Ok(self.certificate_identity(name));
        }
        let username = credentials.username.as_deref().filter(|u| !u.is_empty());
        let presented = username.is_some() || credentials.password.is_some() || credentials.token.is_some();
        if !presented || !self.has_users() {
            // No credentials, or nobody to check them against.
            return if conn.allow_anonymous {
                Ok(Identity::Anonymous)
            } else {
                Err(AuthError::AnonymousRefused)
            };
        }
        let found = match (username, &credentials.password, &credentials.token) {
            (Some(name), Some(password), _) => self.check_password(name, password),
            (None, _, Some(token)) => self.check_token(token.as_bytes()),
            _ => None,
        };
        match found {
            Some(user) => {
                self.backoff.succeeded(conn.peer);
                Ok(Identity::User(user))
            }
            None => {
                let wait = self.backoff.failed(conn.peer, now);
                tracing::info!(peer = %conn.peer, user = username.unwrap_or(""), ?wait, "authentication failed");
                Err(AuthError::BadCredentials)
            }
        }
    }

    fn check_password(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        match self.users.get(name) {
            Some(user) => {
                let hash = user.password_hash.as_deref()?;
                self.verify_cached(hash, password).then(|| user.clone())
            }
            None => {
                // Spend the same effort as for a real user.
                if let Some(decoy) = &self.decoy_hash {
                    password::verify(password, decoy);
                }
                None
            }
        }
    }

    fn check_token(&self, token: &[u8]) -> Option<Arc<User>> {
        self.users
            .values()
            .find(|user| user.token_hash.as_deref().is_some_and(|hash| self.verify_cached(hash, token)))
            .cloned()
    }

    fn verify_cached(&self, hash: &str, secret: &[u8]) -> bool {
        let key: [u8; 32] =
            Sha256::new().chain_update(hash).chain_update([0]).chain_update(secret).finalize().into();
        if self.verified.lock().contains(&key) {
            return true;
        }
        if !password::verify(secret, hash) {
            return false;
        }
        let mut verified = self.verified.lock();
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn conn(allow_anonymous: bool) -> ConnAuth {
        ConnAuth { peer: [127, 0, 0, 1].into(), allow_anonymous, certificate_user: None }
    }

    fn credentials(user: Option<&str>, password: Option<&str>, token: Option<&str>) -> Credentials {
        Credentials {
            username: user.map(str::to_string),
            password: password.map(|p| p.as_bytes().to_vec()),
            token: token.map(str::to_string),
        }
    }

    fn auth() -> Auth {
        let mut config = AuthConfig { max_failures: 2, backoff_initial_ms: 60_000, ..AuthConfig::default() };
        config.users.push(UserConfig {
            name: "alice".into(),
            password_hash: Some(password::hash(b"wonderland").unwrap()),
            token_hash: Some(password::hash(b"t0ken").unwrap()),
            publish: vec!["users/%u/#".into()],
            subscribe: vec!["#".into()],
        });
        Auth::new(&config)
    }

    #[test]
    fn passwords_tokens_and_anonymous() {
        let auth = auth();
        let ok =
            auth.authenticate(&credentials(Some("alice"), Some("wonderland"), None), &conn(false)).unwrap();
        assert_eq!(ok.name(), "alice");
        let again = auth.authenticate(&credentials(Some("alice"), Some("wonderland"), None), &conn(false));
        assert!(again.is_ok(), "cached verification agrees");
        let token = auth.authenticate(&credentials(None, None, Some("t0ken")), &conn(false)).unwrap();
        assert_eq!(token.name(), "alice");
        assert_eq!(
            auth.authenticate(&credentials(None, None, None), &conn(false)).unwrap_err(),
            AuthError::AnonymousRefused
        );
        assert_eq!(
            auth.authenticate(&credentials(None, None, None), &conn(true)).unwrap().name(),
            "anonymous"
        );
    }

    #[test]
    fn failures_lead_to_a_wait_even_for_good_credentials() {
        let auth = auth();
        let bad = credentials(Some("alice"), Some("guess"), None);
        assert_eq!(auth.authenticate(&bad, &conn(false)).unwrap_err(), AuthError::BadCredentials);
        let unknown = credentials(Some("mallory"), Some("guess"), None);
        assert_eq!(auth.authenticate(&unknown, &conn(false)).unwrap_err(), AuthError::BadCredentials);
        let good = credentials(Some("alice"), Some("wonderland"), None);
        assert!(matches!(auth.authenticate(&good, &conn(false)), Err(AuthError::Blocked(_))));
    }

    #[test]
    fn without_users_credentials_are_not_checked() {
        let auth = Auth::new(&AuthConfig::default());
        let any = credentials(Some("who"), Some("ever"), None);
        assert_eq!(auth.authenticate(&any, &conn(true)).unwrap().name(), "anonymous");
        assert!(auth.authenticate(&any, &conn(false)).is_err());
    }

    #[test]
    fn a_certificate_names_the_user() {
        let auth = auth();
        let conn = ConnAuth { certificate_user: Some("alice".into()), ..conn(false) };
        let identity = auth.authenticate(&credentials(None, None, None), &conn).unwrap();
        assert_eq!(identity.name(), "alice");
        assert!(!auth.acl(&identity).may_publish("users/bob/x", "alice", ""), "alice's rules apply");
    }
}
