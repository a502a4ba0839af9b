//! The fuzz targets' smoke run (docs/fuzzing.md): `cargo fuzz build` (optimised), then every target in
//! fuzz/ for a few seconds (`CLOUDAI_FUZZ_SECONDS`, default 5), starting from its committed
//! seeds and regression inputs, so each of those replays first. Any crash, hang or bad answer
//! fails the test, with the input's path and libFuzzer's report.
//!
//! On a stable toolchain `RUSTC_BOOTSTRAP=1` lets cargo-fuzz pass its `-Z` flags; without a
//! sanitizer (`--sanitizer none`) that is all it needs. Without cargo-fuzz the test prints
//! `skipping: …` and passes, except under `CI=true`, where it fails: `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").canonicalize().expect("fuzz/ at the repo root")
}

/// `cargo` with the toolchain this test was built by (rustup's choice, via the environment).
fn cargo(fuzz: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(fuzz).env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn cargo_fuzz_installed(fuzz: &Path) -> bool {
    cargo(fuzz).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// The figures of libFuzzer's last lines: executions, exec/s, coverage.
fn figures(log: &str) -> String {
    let stat = |name: &str| {
        log.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string())).unwrap_or_default()
    };
    let last = log.lines().rev().find(|l| l.contains(" cov: ")).unwrap_or_default();
    let cov = last.split_whitespace().skip_while(|w| *w != "cov:").nth(1).unwrap_or("?");
    let ft = last.split_whitespace().skip_while(|w| *w != "ft:").nth(1).unwrap_or("?");
    format!(
        "{} runs, {} exec/s, cov {cov}, ft {ft}",
        stat("stat::number_of_executed_units:"),
        stat("stat::average_exec_per_sec:")
    )
}

#[test]
fn every_fuzz_target_runs_clean_from_its_seeds() {
    let fuzz = fuzz_dir();
    if !cargo_fuzz_installed(&fuzz) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cargo-fuzz is missing under CI=true: `.ci/run` installs it (cargo install cargo-fuzz --locked)"
        );
        println!("skipping: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)");
        return;
    }
    let seconds: u64 = std::env::var("CLOUDAI_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);

    let started = Instant::now();
    let build =
        cargo(&fuzz).args(["fuzz", "build", "--sanitizer", "none"]).status().expect("cargo fuzz build");
    assert!(build.success(), "cargo fuzz build failed: {build}");
    println!("cargo fuzz build: {:.0?}", started.elapsed());

    let list = cargo(&fuzz).args(["fuzz", "list"]).output().expect("cargo fuzz list");
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_string).collect();
    assert!(targets.len() >= 11, "fuzz targets: {targets:?}");

    let bin_dir = fuzz.join("target/x86_64-unknown-linux-gnu/release");
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut failed = Vec::new();
    for target in &targets {
        let corpus = scratch.path().join(target);
        let artifacts = scratch.path().join(format!("{target}-artifacts"));
        std::fs::create_dir_all(&corpus).expect("corpus folder");
        std::fs::create_dir_all(&artifacts).expect("artifacts folder");
        let mut run = Command::new(bin_dir.join(target));
        run.arg(&corpus);
        // The committed inputs: each is executed before any new one.
        for committed in ["seeds", "regressions"] {
            let dir = fuzz.join(committed).join(target);
            if dir.is_dir() {
                run.arg(dir);
            }
        }
        if target.starts_with("http_") {
            run.arg(format!("-dict={}", fuzz.join("dicts/http.dict").display()));
        }
        run.arg(format!("-max_total_time={seconds}"))
            .arg("-timeout=30")
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        let started = Instant::now();
        let output = run.output().unwrap_or_else(|e| panic!("run {target}: {e}"));
        let log = String::from_utf8_lossy(&output.stderr);
        println!("{target}: {} in {:.1?}", figures(&log), started.elapsed());
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("{target} failed ({}):\n{}", output.status, tail.join("\n"));
            failed.push(target.clone());
        }
    }
    if !failed.is_empty() {
        let kept = scratch.keep();
        panic!(
            "fuzz targets that found a crash: {failed:?}; their reports are above, the inputs in {}",
            kept.display()
        );
    }
}
