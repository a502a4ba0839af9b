//! `/api/tokens` and `/api/audit`: API tokens with roles, and the audit trail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token may do. Each role can do everything the roles below it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `GET` only.
    Reader,
    /// Submit tasks; cancel only its own.
    Submitter,
    /// Submit and cancel any task.
    Operator,
    /// Everything, tokens included.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Submitter, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected admin, operator, submitter or reader"))
    }
}

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME_BYTES: usize = 64;

/// `POST /api/tokens` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci", "role": "reader"}))]
pub struct CreateToken {
    /// Who or what uses the token (1-64 of `A-Z a-z 0-9 . _ - @`, not `local`); tasks it
    /// submits record it.
    #[schema(pattern = "^(?!local$)[A-Za-z0-9._@-]{1,64}$")]
    pub name: String,
    pub role: Role,
}

/// A token as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// The public part of the token (`cai_<id>_…`), for revoking.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds; `null` while the token is valid.
    #[schema(required = true)]
    pub revoked_at_ms: Option<i64>,
}

/// `POST /api/tokens` answer: the only time the token itself is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// `cai_<id>_<secret>`: send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// One audited call (`GET /api/audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Greater for newer entries; pass the last one as `?before=` for the next page.
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The caller's token name (`local` without authentication).
    pub actor: String,
    /// `task.submit`, `task.cancel`, `token.create`, `token.revoke`, …
    pub action: String,
    /// A task id, a token id, a worker id.
    pub target: String,
    /// The HTTP status answered.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /api/audit`: a page of the trail, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// Pass as `?before=` for the next (older) page; `null` on the last one.
    #[schema(required = true)]
    pub next: Option<i64>,
}

/// What every answer shows for an env value the caller may not see (not the submitter,
/// nor an operator or admin).
pub const HIDDEN_VALUE: &str = "<hidden>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_spelled_as_sent() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Submitter);
        assert!(Role::Submitter > Role::Reader);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).expect("json"), format!("\"{role}\""));
        }
        assert!("root".parse::<Role>().is_err_and(|e| e.contains("expected admin")));
    }
}
