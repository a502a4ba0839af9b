//! Tokens, the audit trail and tasks' submitters survive a restart as written.

mod common;

use cloudai_store::{AuditRecord, Store, StoreError, StoredToken};
use common::{open, task};

fn token(id: &str, role: &str) -> StoredToken {
    StoredToken {
        id: id.into(),
        name: format!("name-{id}"),
        role: role.into(),
        secret_hash: vec![7; 32],
        created_at_ms: 10,
        revoked_at_ms: None,
    }
}

fn audit(at_ms: i64, action: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at_ms,
        actor: "ci".into(),
        action: action.into(),
        target: "t1".into(),
        status: 201,
        detail: None,
    }
}

#[tokio::test]
async fn tokens_audit_and_submitters_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.insert_token(&token("aaaaaaaaaaaa", "admin")).await.expect("insert");
    store.insert_token(&token("bbbbbbbbbbbb", "reader")).await.expect("insert");
    let twice = store.insert_token(&token("aaaaaaaaaaaa", "reader")).await;
    assert!(matches!(twice, Err(StoreError::TokenExists(id)) if id == "aaaaaaaaaaaa"));
    store.revoke_token("bbbbbbbbbbbb", 20).await.expect("revoke");
    store.revoke_token("bbbbbbbbbbbb", 30).await.expect("revoking again keeps the first time");
    assert!(matches!(store.revoke_token("cccccccccccc", 20).await, Err(StoreError::NoSuchToken(_))));
    store.append_audit((1..=5).map(|i| audit(i, &format!("action-{i}"))).collect()).await.expect("audit");
    let submitted = task(1).with_submitter("alice");
    store.insert_task(&submitted, &submitted.created_event()).await.expect("insert task");
    store.close().await;

    let store = open(dir.path());
    let tokens = store.list_tokens().await.expect("tokens");
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], token("aaaaaaaaaaaa", "admin"));
    assert_eq!(tokens[1].revoked_at_ms, Some(20));
    let newest = store.list_audit(None, 2).await.expect("audit");
    assert_eq!(newest.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["action-5", "action-4"]);
    let older = store.list_audit(Some(newest[1].seq), 10).await.expect("audit");
    assert_eq!(older.iter().map(|r| r.at_ms).collect::<Vec<_>>(), [3, 2, 1]);
    let read = store.get_task(&submitted.task_id).await.expect("get").expect("found");
    assert_eq!(read.submitted_by.as_deref(), Some("alice"));
    store.close().await;
}
