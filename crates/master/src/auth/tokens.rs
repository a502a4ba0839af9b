//! API tokens: `cai_<id>_<secret>`. The id (12 hex digits) is public and names the token;
//! the secret (32 random bytes, hex) is kept only as its SHA-256, in the store and in the
//! map checked on every request.

use std::collections::HashMap;
use std::sync::Arc;

use cloudai_api::{CreatedToken, Role, TokenInfo};
use cloudai_domain::time::unix_ms;
use cloudai_store::{Store, StoreError, StoredToken};
use parking_lot::RwLock;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Principal;

const PREFIX: &str = "cai_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// Why a token or a token change is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not one this master issued (expected cai_<id>_<secret>)")]
    Malformed,
    #[error("unknown or invalid token")]
    Invalid,
    #[error("token {0} has been revoked")]
    Revoked(String),
    #[error("token {0:?} not found")]
    NotFound(String),
    #[error("name: {0}")]
    BadName(String),
    #[error("token {0} is the last valid admin token: create another admin token before revoking it")]
    LastAdmin(String),
    #[error("the token store failed")]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn code(&self) -> cloudai_api::ErrorCode {
        use cloudai_api::ErrorCode;
        match self {
            AuthError::Malformed | AuthError::Invalid | AuthError::Revoked(_) => ErrorCode::Unauthenticated,
            AuthError::NotFound(_) => ErrorCode::NotFound,
            AuthError::BadName(_) => ErrorCode::InvalidArgument,
            AuthError::LastAdmin(_) => ErrorCode::Conflict,
            AuthError::Store(e) if e.is_disk_full() => ErrorCode::InsufficientStorage,
            AuthError::Store(_) => ErrorCode::Unavailable,
        }
    }
}

#[derive(Clone)]
struct Entry {
    hash: [u8; 32],
    role: Role,
    name: Arc<str>,
    id: Arc<str>,
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
    /// Lives in memory only (the console's): never listed, never stored.
    ephemeral: bool,
}

impl Entry {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.to_string(),
            name: self.name.to_string(),
            role: self.role,
            created_at_ms: self.created_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        }
    }
}

/// The tokens, checked in memory; every change is written to the store before it is
/// applied here (and answered). Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    store: Arc<dyn Store>,
    tokens: Arc<RwLock<HashMap<Arc<str>, Entry>>>,
    /// One change at a time, so "not the last admin" holds when the revocation lands.
    changes: Arc<tokio::sync::Mutex<()>>,
}

/// The SHA-256 of a secret as presented (its hex text).
fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equal without an early exit: how long the check takes says nothing about the hash.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `(id, secret)` of a presented token.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let rest = token.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    if !is_hex(id, ID_BYTES * 2) || !is_hex(secret, SECRET_BYTES * 2) {
        return Err(AuthError::Malformed);
    }
    Ok((id, secret))
}

/// A name shown in listings, the audit trail and tasks' `submitted_by`.
fn check_name(name: &str) -> Result<(), AuthError> {
    let max = cloudai_api::auth::MAX_TOKEN_NAME_BYTES;
    if name.is_empty() || name.len() > max {
        return Err(AuthError::BadName(format!("must be 1 to {max} bytes long")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-@".contains(*c))) {
        return Err(AuthError::BadName(format!("{c:?} is not allowed: use letters, digits and . _ - @")));
    }
    if name == super::LOCAL {
        return Err(AuthError::BadName(format!(
            "{:?} is reserved for masters without authentication",
            super::LOCAL
        )));
    }
    Ok(())
}

impl TokenService {
    /// Loads every stored token.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let mut tokens = HashMap::new();
        for t in store.list_tokens().await? {
            let (Ok(role), Ok(hash)) =
                (t.role.parse::<Role>(), <[u8; 32]>::try_from(t.secret_hash.as_slice()))
            else {
                tracing::warn!(token_id = t.id, "stored token with an unknown role or a bad hash; ignored");
                continue;
            };
            let id: Arc<str> = Arc::from(t.id);
            let entry = Entry {
                hash,
                role,
                name: Arc::from(t.name),
                id: id.clone(),
                created_at_ms: t.created_at_ms,
                revoked_at_ms: t.revoked_at_ms,
                ephemeral: false,
            };
            tokens.insert(id, entry);
        }
        Ok(Self {
            store,
            tokens: Arc::new(RwLock::new(tokens)),
            changes: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The principal a presented token stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, secret) = split(token)?;
        let presented = digest(secret);
        let tokens = self.tokens.read();
        let entry = tokens.get(id).ok_or(AuthError::Invalid)?;
        if !constant_time_eq(&presented, &entry.hash) {
            return Err(AuthError::Invalid);
        }
        if entry.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked(id.to_string()));
        }
        Ok(Principal { name: entry.name.clone(), role: entry.role, token_id: Some(entry.id.clone()) })
    }

    fn generate(name: &str, role: Role, ephemeral: bool) -> (Entry, String) {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        // rand's thread RNG is a CSPRNG seeded from the OS.
        let mut rng = rand::rng();
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let (id, secret) = (hex(&id), hex(&secret));
        let entry = Entry {
            hash: digest(&secret),
            role,
            name: Arc::from(name),
            id: Arc::from(id.as_str()),
            created_at_ms: unix_ms(),
            revoked_at_ms: None,
            ephemeral,
        };
        (entry, format!("{PREFIX}{id}_{secret}"))
    }

    /// Creates a token: durable in the store when this returns. The answer is the only
    /// place its secret ever appears.
    pub async fn create(&self, name: &str, role: Role) -> Result<CreatedToken, AuthError> {
        check_name(name)?;
        let _change = self.changes.lock().await;
        let (entry, token) = Self::generate(name, role, false);
        let stored = StoredToken {
            id: entry.id.to_string(),
            name: name.to_string(),
            role: role.as_str().to_string(),
            secret_hash: entry.hash.to_vec(),
            created_at_ms: entry.created_at_ms,
            revoked_at_ms: None,
        };
        self.store.insert_token(&stored).await?;
        let info = entry.info();
        self.tokens.write().insert(entry.id.clone(), entry);
        tracing::info!(token_id = info.id, name, %role, "api token created");
        Ok(CreatedToken { info, token })
    }

    /// A token that lives in this process only (for the console on the master's terminal).
    pub fn ephemeral(&self, name: &str, role: Role) -> String {
        let (entry, token) = Self::generate(name, role, true);
        self.tokens.write().insert(entry.id.clone(), entry);
        token
    }

    /// Revokes a token (durable when this returns); revoking a revoked one answers it as it
    /// is. The last valid admin token is kept, so the API cannot lock its admins out.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo, AuthError> {
        let _change = self.changes.lock().await;
        let entry = {
            let tokens = self.tokens.read();
            let entry =
                tokens.get(id).filter(|e| !e.ephemeral).ok_or_else(|| AuthError::NotFound(id.into()))?;
            if entry.revoked_at_ms.is_some() {
                return Ok(entry.info());
            }
            let other_admins = tokens
                .values()
                .filter(|e| !e.ephemeral && e.role == Role::Admin && e.revoked_at_ms.is_none())
                .filter(|e| *e.id != *id)
                .count();
            if entry.role == Role::Admin && other_admins == 0 {
                return Err(AuthError::LastAdmin(id.to_string()));
            }
            entry.clone()
        };
        let at_ms = unix_ms();
        self.store.revoke_token(id, at_ms).await?;
        let mut tokens = self.tokens.write();
        let revoked = tokens.get_mut(id).map(|e| {
            e.revoked_at_ms = Some(at_ms);
            e.info()
        });
        tracing::info!(token_id = id, name = %entry.name, "api token revoked");
        Ok(revoked.unwrap_or_else(|| entry.info()))
    }

    /// Every stored token, oldest first.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut list: Vec<TokenInfo> =
            self.tokens.read().values().filter(|e| !e.ephemeral).map(Entry::info).collect();
        list.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        list
    }

    /// Some valid stored admin token exists.
    pub fn has_admin(&self) -> bool {
        self.tokens
            .read()
            .values()
            .any(|e| !e.ephemeral && e.role == Role::Admin && e.revoked_at_ms.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_into_id_and_secret_or_are_malformed() {
        let (_, token) = TokenService::generate("ci", Role::Reader, false);
        let (id, secret) = split(&token).expect("a generated token parses");
        assert_eq!((id.len(), secret.len()), (12, 64));
        for bad in
            ["", "cai_", "cai_abc_def", "xyz_0123456789ab_00", &token.to_uppercase(), &format!("{token}0")]
        {
            assert!(matches!(split(bad), Err(AuthError::Malformed)), "{bad}");
        }
    }

    #[test]
    fn only_the_exact_hash_matches() {
        let a = digest("secret");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("ci-bot@team_1.x").is_ok());
        for bad in ["", "has space", "local", "ü", &"x".repeat(65)] {
            assert!(matches!(check_name(bad), Err(AuthError::BadName(_))), "{bad}");
        }
    }
}
