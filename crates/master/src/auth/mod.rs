//! Who may use the HTTP API: bearer tokens with roles ([`TokenService`]), the audit trail of
//! every change made through it ([`AuditLog`]), and the limit on failed token attempts.

mod audit;
mod bootstrap;
mod limiter;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

pub use audit::{AuditEvent, AuditLog};
pub(crate) use bootstrap::ensure_admin;
pub use bootstrap::{ADMIN_TOKEN_FILE, BootstrapError};
pub use cloudai_api::Role;
pub use limiter::FailedAttempts;
pub use tokens::{AuthError, TokenService};

/// How the HTTP API authenticates.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthConfig {
    /// Every request but `/health` (and `/openapi.json`) needs a valid token. Off only for a
    /// master on loopback (`--insecure`, `cloudai dev`): every request is then [`Principal::local`].
    pub required: bool,
    /// `/metrics` needs no token (for a Prometheus without one).
    pub metrics_public: bool,
    /// Most pending tasks one submitter may have; past it, submissions get 429.
    pub max_pending_per_submitter: usize,
    /// Failed token attempts allowed per client address in each `failed_attempts_window`;
    /// past it, every request from that address gets 429 until the window ends.
    pub max_failed_attempts: u32,
    pub failed_attempts_window: Duration,
}

impl Default for AuthConfig {
    /// Not required: what tests and `cloudai dev` (loopback only) run with.
    fn default() -> Self {
        Self {
            required: false,
            metrics_public: false,
            max_pending_per_submitter: 1000,
            max_failed_attempts: 10,
            failed_attempts_window: Duration::from_secs(60),
        }
    }
}

/// What the HTTP layer checks requests with. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub config: AuthConfig,
    pub tokens: TokenService,
    pub audit: AuditLog,
    pub attempts: FailedAttempts,
}

impl Auth {
    pub fn new(config: AuthConfig, tokens: TokenService, audit: AuditLog) -> Self {
        let attempts = FailedAttempts::new(config.max_failed_attempts, config.failed_attempts_window);
        Self { config, tokens, audit, attempts }
    }
}

/// Who is calling: the token's name and role, set on every request by the HTTP layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub role: Role,
    /// `None` for [`Principal::local`].
    pub token_id: Option<Arc<str>>,
}

/// The principal of every request to a master without authentication.
pub const LOCAL: &str = "local";

impl Principal {
    pub fn local() -> Self {
        Self { name: Arc::from(LOCAL), role: Role::Admin, token_id: None }
    }

    /// Has at least `role`.
    pub fn can(&self, role: Role) -> bool {
        self.role >= role
    }

    /// May see the env values of (and, with the submitter role, cancel) a task `submitted_by`.
    pub fn owns_or_operates(&self, submitted_by: Option<&str>) -> bool {
        self.can(Role::Operator) || submitted_by == Some(&*self.name)
    }
}
