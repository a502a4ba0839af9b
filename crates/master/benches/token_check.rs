//! Cost of checking one API token on the HTTP path: parse `cai_<id>_<secret>`, SHA-256 of
//! the secret, look the id up among 1,000 tokens, compare in constant time.
//!
//! `cargo bench -p cloudai-master --bench token_check`

use std::sync::Arc;

use cloudai_api::Role;
use cloudai_master::auth::TokenService;
use cloudai_store::{SqliteStore, Store, StoreConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn token_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (tokens, valid) = runtime.block_on(async {
        let store = SqliteStore::open(&dir.path().join("cloudai.db"), StoreConfig::default()).expect("store");
        let store: Arc<dyn Store> = Arc::new(store);
        let tokens = TokenService::load(store).await.expect("load");
        let mut last = String::new();
        for i in 0..1000 {
            last = tokens.create(&format!("ci-{i}"), Role::Submitter).await.expect("create").token;
        }
        (tokens, last)
    });
    // Same id, wrong secret: the whole check runs, then fails.
    let (head, _) = valid.rsplit_once('_').expect("token shape");
    let wrong = format!("{head}_{}", "0".repeat(64));

    c.bench_function("token check, valid (1,000 tokens)", |b| {
        b.iter(|| tokens.verify(std::hint::black_box(&valid)).expect("valid"))
    });
    c.bench_function("token check, wrong secret", |b| {
        b.iter(|| tokens.verify(std::hint::black_box(&wrong)).expect_err("refused"))
    });
}

criterion_group!(benches, token_check);
criterion_main!(benches);
