//! One-time login tokens and the sessions they open, in memory only: a daemon restart
//! logs every browser out, which is the safe way round. Secrets are kept as their
//! sha256, so the table itself holds nothing a browser could present.
//!
//! A session is two secrets: the cookie, and a key the page keeps in its origin's storage
//! and sends with each request. Cookies are not kept apart by port, so any other web
//! server on the loopback address may be sent the cookie; the key stays with the UI's own
//! origin (scheme, host and port).

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
    /// Cookie digest → the session.
    sessions: HashMap<Digest32, Session>,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    expires: Instant,
    /// Digest of the key the page sends beside the cookie.
    key: Digest32,
}

/// What a redeemed token gives the browser.
#[derive(Debug)]
pub struct NewSession {
    /// The HttpOnly cookie's value.
    pub cookie: String,
    /// The key the page keeps and sends (`X-Hutch-UI-Key`, or `ui_key=` on websockets).
    pub key: String,
}

impl UiSessions {
    /// A new single-use token, valid for `lifetime`.
    pub fn issue_token(&self, lifetime: Duration) -> String {
        let token = random_secret();
        let mut t = self.lock();
        let now = Instant::now();
        insert_bounded(&mut t.tokens, digest(&token), now + lifetime, |e| *e, now);
        token
    }

    /// Uses up `token`: a new session when the token was live, else None (unknown, used
    /// before or expired).
    pub fn redeem(&self, token: &str) -> Option<NewSession> {
        let mut t = self.lock();
        let expires = t.tokens.remove(&digest(token))?;
        let now = Instant::now();
        if expires <= now {
            return None;
        }
        let new = NewSession {
            cookie: random_secret(),
            key: random_secret(),
        };
        let session = Session {
            expires: now + SESSION_LIFETIME,
            key: digest(&new.key),
        };
        insert_bounded(
            &mut t.sessions,
            digest(&new.cookie),
            session,
            |s| s.expires,
            now,
        );
        Some(new)
    }

    /// The session of `cookie` and `key`, if live, by a short id (for logs and events).
    pub fn session(&self, cookie: &str, key: &str) -> Option<Arc<str>> {
        let id = digest(cookie);
        let mut t = self.lock();
        let session = *t.sessions.get(&id)?;
        if session.expires <= Instant::now() {
            t.sessions.remove(&id);
            return None;
        }
        // Digests of equal length compared whole: no early exit on the first difference.
        let key = digest(key);
        let same = session
            .key
            .iter()
            .zip(key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then(|| hex::encode(&id[..6]).into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Inserts, first dropping what expired and then, when still full, the entry that
/// expires first.
fn insert_bounded<V>(
    table: &mut HashMap<Digest32, V>,
    key: Digest32,
    value: V,
    expires: impl Fn(&V) -> Instant,
    now: Instant,
) {
    table.retain(|_, v| expires(v) > now);
    while table.len() >= MAX_ENTRIES {
        let Some(oldest) = table
            .iter()
            .min_by_key(|(_, v)| expires(v))
            .map(|(k, _)| *k)
        else {
            break;
        };
        table.remove(&oldest);
    }
    table.insert(key, value);
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
        let new = s.redeem(&token).expect("a fresh token is live");
        assert!(s.session(&new.cookie, &new.key).is_some());
        assert!(s.redeem(&token).is_none(), "a used token is refused");
        assert!(
            s.session(&token, &new.key).is_none(),
            "a token is no session"
        );
        assert!(s.session("guess", &new.key).is_none());
    }

    #[test]
    fn a_cookie_without_its_key_is_refused() {
        let s = UiSessions::default();
        let new = s.redeem(&s.issue_token(TOKEN_LIFETIME)).unwrap();
        assert!(s.session(&new.cookie, "").is_none());
        assert!(s.session(&new.cookie, &new.cookie).is_none());
        let other = s.redeem(&s.issue_token(TOKEN_LIFETIME)).unwrap();
        assert!(s.session(&new.cookie, &other.key).is_none());
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
