//! One-time login tokens and the sessions they open, in memory only: a daemon restart
//! logs every browser out, which is the safe way round. Secrets are kept as their
//! sha256, so the table itself holds nothing a browser could present.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a login token lives unless the admin asks for less.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The longest lifetime a token may be given.
pub const TOKEN_LIFETIME_MAX: Duration = Duration::from_secs(3600);

/// How long a browser stays logged in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Tokens or sessions held at once; the oldest go first (bounded memory whatever is asked).
const MAX_ENTRIES: usize = 64;

type Digest32 = [u8; 32];

/// The tokens not yet used and the sessions not yet expired.
#[derive(Debug, Default)]
pub struct UiSessions {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    /// Token digest → when it expires.
    tokens: HashMap<Digest32, Instant>,
    /// Session digest → when it expires.
    sessions: HashMap<Digest32, Instant>,
}

impl UiSessions {
    /// A new single-use token, valid for `lifetime`.
    pub fn issue_token(&self, lifetime: Duration) -> String {
        let token = random_secret();
        let mut t = self.lock();
        insert_bounded(&mut t.tokens, digest(&token), Instant::now() + lifetime);
        token
    }

    /// Uses up `token`: a new session's secret when the token was live, else None (unknown,
    /// used before or expired).
    pub fn redeem(&self, token: &str) -> Option<String> {
        let mut t = self.lock();
        let expires = t.tokens.remove(&digest(token))?;
        if expires <= Instant::now() {
            return None;
        }
        let session = random_secret();
        insert_bounded(
            &mut t.sessions,
            digest(&session),
            Instant::now() + SESSION_LIFETIME,
        );
        Some(session)
    }

    /// The session `secret` names, if live, by a short id (for logs and events).
    pub fn session(&self, secret: &str) -> Option<Arc<str>> {
        let key = digest(secret);
        let mut t = self.lock();
        match t.sessions.get(&key) {
            Some(expires) if *expires > Instant::now() => Some(hex::encode(&key[..6]).into()),
            Some(_) => {
                t.sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Inserts, first dropping what expired and then, when still full, the entry that
/// expires first.
fn insert_bounded(table: &mut HashMap<Digest32, Instant>, key: Digest32, expires: Instant) {
    let now = Instant::now();
    table.retain(|_, e| *e > now);
    while table.len() >= MAX_ENTRIES {
        let Some(oldest) = table.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else {
            break;
        };
        table.remove(&oldest);
    }
    table.insert(key, expires);
}

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// 64 hex digits, 244 random bits (two v4 UUIDs from the OS's random source).
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_one_session_once() {
        let s = UiSessions::default();
        let token = s.issue_token(TOKEN_LIFETIME);
        assert_eq!(token.len(), 64);
        let session = s.redeem(&token).expect("a fresh token is live");
        assert!(s.session(&session).is_some());
        assert!(s.redeem(&token).is_none(), "a used token is refused");
        assert!(s.session(&token).is_none(), "a token is no session");
        assert!(s.session("guess").is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let s = UiSessions::default();
        let token = s.issue_token(Duration::ZERO);
        assert!(s.redeem(&token).is_none());
    }

    #[test]
    fn the_tables_stay_bounded() {
        let s = UiSessions::default();
        let first = s.issue_token(TOKEN_LIFETIME);
        for _ in 0..MAX_ENTRIES {
            s.issue_token(TOKEN_LIFETIME_MAX);
        }
        assert_eq!(s.lock().tokens.len(), MAX_ENTRIES);
        assert!(s.redeem(&first).is_none(), "the oldest went first");
    }
}
