//! The command-line client and the console, as a user drives them.

mod common;

use std::process::Command;
use std::time::Duration;

use cloudai::console::{Console, Outcome, execute};
use common::*;

fn cloudai(api: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env("CLOUDAI_ADDR", api)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cloudai");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn cli(api: &str, args: &[&str]) -> (i32, String, String) {
    let (api, args): (String, Vec<String>) = (api.to_string(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || cloudai(&api, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("cli thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_session_with_the_cli_and_the_console() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let worker = InProcessWorker::start(sized_worker(master.grpc_addr, "cli-worker", 2.0, None));
    let api = format!("http://{}", master.http_addr);

    let (code, id, err) = cli(
        &api,
        &[
            "task",
            "submit",
            "--cpu",
            "0.5",
            "--mem",
            "32",
            "--env",
            "WHO=cli",
            "--",
            "sh",
            "-c",
            "echo hello $WHO",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.lines().count(), 1, "only the id on stdout: {id:?}");

    let (code, out, err) = cli(&api, &["task", "logs", "-f", &id]).await;
    assert_eq!((code, out.as_str()), (0, "hello cli\n"), "{err}");
    assert_eq!(get_task(&api, &id).await["status"], "completed");

    let (code, out, _) = cli(&api, &["task", "ls", "-o", "json"]).await;
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).expect("a JSON array");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (code, out, _) = cli(&api, &["task", "get", &id, "-o", "json"]).await;
    assert_eq!(code, 0);
    let one: serde_json::Value = serde_json::from_str(&out).expect("a JSON object");
    assert_eq!(one["task_id"], id.as_str());
    let (code, out, _) = cli(&api, &["task", "ls", "--status", "completed"]).await;
    assert!(code == 0 && out.contains(&id) && out.contains("completed"), "{out}");
    let (code, out, _) = cli(&api, &["worker", "ls"]).await;
    assert!(code == 0 && out.contains("cli-worker") && out.contains("ACTIVE"), "{out}");
    let (code, out, _) = cli(&api, &["worker", "status", "cli-worker", "-o", "json"]).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).expect("json")["worker_id"], "cli-worker");

    // The master says no: non-zero exit and its message.
    let (code, _, err) = cli(&api, &["task", "cancel", &id]).await;
    assert!(code != 0 && err.contains("already completed"), "{err}");
    let (code, _, err) = cli(&api, &["task", "get", "no-such-task"]).await;
    assert!(code != 0 && err.contains("not found"), "{err}");
    let (code, _, err) = cli(&api, &["task", "submit", "--cpu", "0", "--", "true"]).await;
    assert!(code != 0 && err.contains("cpu_required"), "{err}");
    let (code, _, err) = cli("http://127.0.0.1:1", &["task", "ls"]).await;
    assert!(code != 0 && err.contains("cannot reach the master"), "{err}");

    // The console answers the same questions.
    let console = Console::for_master(&master);
    let run = |line: &'static str| {
        let console = console.clone();
        tokio::task::spawn_blocking(move || match execute(&console, line) {
            Outcome::Print(text) => text,
            Outcome::Quit => "<quit>".into(),
        })
    };
    let workers = run("workers").await.expect("console");
    assert!(workers.contains("cli-worker") && workers.contains("1 workers, 1 active"), "{workers}");
    let tasks = run("tasks completed").await.expect("console");
    assert!(tasks.contains(&id), "{tasks}");
    let id_static: &'static str = Box::leak(format!("logs {id}").into_boxed_str());
    assert_eq!(run(id_static).await.expect("console"), "hello cli");
    assert!(run("tasks bogus").await.expect("console").contains("unknown status"));
    assert!(run("status nobody").await.expect("console").contains("not found"));
    assert_eq!(run("alerts").await.expect("console"), "no alerts", "a healthy cluster");
    assert_eq!(run("quit").await.expect("console"), "<quit>");

    worker.stop().await;
    master.shutdown().await;
}
