//! Helpers shared by the store tests.
#![allow(dead_code)]

use std::path::Path;

use cloudai_domain::{Task, TaskId, TaskSpec};
use cloudai_store::{SqliteStore, StoreConfig};

pub fn spec(priority: i32) -> TaskSpec {
    let body = format!(
        r#"{{"driver":"process","command":["echo","hi"],"cpu_required":1,"memory_required":64,"priority":{priority}}}"#
    );
    TaskSpec::from_json(body.as_bytes()).expect("valid spec")
}

pub fn task(created_at_ms: i64) -> Task {
    Task::new(TaskId::generate(), spec(0), created_at_ms)
}

pub fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("data/cloudai.db"), StoreConfig::default()).expect("open store")
}

pub fn open_with(dir: &Path, config: StoreConfig) -> SqliteStore {
    SqliteStore::open(&dir.join("data/cloudai.db"), config).expect("open store")
}
