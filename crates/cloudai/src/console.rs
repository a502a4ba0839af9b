//! The master's interactive console (`master> `), with line editing and history, on its
//! own thread so it never holds up the async runtime. It is a client of the master's own
//! HTTP API, showing its typed answers with the CLI's views.

use std::error::Error;
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use cloudai_api::history::Field;
use cloudai_api::{ApiClient, ClientError, HistoryQuery};
use cloudai_domain::{TaskId, TaskStatus, WorkerId};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio_util::sync::CancellationToken;

use crate::render;

const HELP: &str = "\
commands:
  help              this list
  workers           every worker: id, active, CPU, memory, GPU, tasks, last seen
  status <worker>   one worker in detail
  history <worker> [range]
                    CPU, memory and GPU over the last range (default 15m)
  alerts            firing alerts, then recently resolved ones
  tasks [status]    the newest 100 tasks, optionally only one status
  task <id>         one task in detail
  logs <id>         a task's output so far
  cancel <id>       cancel a task
  quit              stop the master";

/// A client of the master's own HTTP API: the console sees what any client sees.
#[derive(Clone)]
pub struct Console {
    client: ApiClient,
    /// The master's runtime: client calls are async and run there.
    runtime: tokio::runtime::Handle,
}

impl Console {
    /// A console for the master at `client`'s address, running its calls on `runtime`.
    pub fn new(client: ApiClient, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }

    /// A console on a running master; call from within the master's runtime.
    pub fn for_master(master: &cloudai_master::Master) -> Self {
        let addr = crate::config::dialable(master.http_addr);
        // A TLS master's certificate names localhost (and loopback), never 0.0.0.0.
        let client = match &master.ca_pem {
            Some(ca) => match ApiClient::new(&format!("https://localhost:{}", addr.port()))
                .with_ca_cert(ca.as_bytes())
            {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "console: the cluster CA is unusable");
                    ApiClient::new(&format!("https://localhost:{}", addr.port()))
                }
            },
            None => ApiClient::new(&format!("http://{addr}")),
        };
        // The console is on the master's own terminal: it gets the master's in-process token.
        let client = match master.console_token.as_deref().map(|t| client.clone().with_token(t)) {
            Some(Ok(with_token)) => with_token,
            _ => client,
        };
        Self::new(client, tokio::runtime::Handle::current())
    }

    /// Runs a client call to completion from the console's thread.
    fn call(&self, call: impl Future<Output = String>) -> String {
        self.runtime.block_on(call)
    }
}

/// Whether to run the console: only on a terminal, and not when turned off.
pub fn wanted(no_console: bool) -> bool {
    !no_console && std::io::stdin().is_terminal()
}

/// How often an idle console looks at the shutdown token.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// The console's thread, to be joined at shutdown.
pub struct ConsoleThread(std::thread::JoinHandle<()>);

impl ConsoleThread {
    /// Waits up to `deadline` for the console to stop; an idle console stops within
    /// [`IDLE_CHECK`] of the shutdown, one whose line is half typed only when it ends.
    /// `false` if it is still reading (its terminal may be left in raw mode).
    pub async fn join(self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while !self.0.is_finished() {
            if tokio::time::Instant::now() >= until {
                tracing::warn!("the console is still reading a line; not waiting for it");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.0.join().is_err() {
            tracing::warn!("the console thread panicked");
        }
        true
    }
}

/// Starts the console thread; `quit`, end of input or Ctrl-C cancels `shutdown`, and a
/// shutdown from elsewhere stops it.
///
/// Call before the master listens for signals: the editor takes SIGINT over for its life
/// (and gives it back when dropped), and a handler installed after it chains to it, so an
/// outside SIGINT still reaches the master.
pub fn spawn(console: Console, shutdown: CancellationToken) -> Option<ConsoleThread> {
    let editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the console");
            return None;
        }
    };
    let spawned = std::thread::Builder::new().name("console".into()).spawn(move || {
        if let Err(e) = run(editor, &console, &shutdown) {
            tracing::warn!(error = %e, "console stopped");
        }
    });
    match spawned {
        Ok(handle) => Some(ConsoleThread(handle)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the console");
            None
        }
    }
}

/// Keeps the terminal out of line mode between prompts, so a first keystroke wakes the
/// console (in line mode nothing is readable before Enter, and the editor would get no
/// keys to edit); the editor sets its own raw mode around each line and comes back to this.
/// Ctrl-C is a key here too (not the terminal's SIGINT, which the editor would swallow
/// outside a line): it wakes the console, whose editor reads it. Dropping it restores the
/// terminal as it was.
struct KeyMode(Option<nix::sys::termios::Termios>);

impl KeyMode {
    fn enter() -> Self {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(original) = tcgetattr(&stdin) else { return Self(None) };
        let mut keys = original.clone();
        keys.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        if tcsetattr(&stdin, SetArg::TCSANOW, &keys).is_err() {
            return Self(None);
        }
        Self(Some(original))
    }
}

impl Drop for KeyMode {
    fn drop(&mut self) {
        if let Some(original) = &self.0 {
            let _ =
                nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, original);
        }
    }
}

/// Waits until a key is typed (`true`) or `shutdown` fires (`false`), so that the editor
/// only blocks on a read once the user is typing.
fn wait_for_input(shutdown: &CancellationToken) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let timeout = PollTimeout::try_from(IDLE_CHECK).unwrap_or(PollTimeout::NONE);
    while !shutdown.is_cancelled() {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            // Readable, closed or in error: the editor's read says which.
            Ok(_) | Err(_) => return true,
        }
    }
    false
}

fn run(mut editor: DefaultEditor, console: &Console, shutdown: &CancellationToken) -> rustyline::Result<()> {
    let _keys = KeyMode::enter();
    println!("CloudAI master console. Type 'help' for commands.");
    loop {
        // The prompt shows before the wait, as the editor would show it.
        print!("master> ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if !wait_for_input(shutdown) {
            println!();
            return Ok(());
        }
        // The editor clears the line and draws its own prompt.
        match editor.readline("master> ") {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line);
                match execute(console, line) {
                    Outcome::Print(text) => println!("{text}"),
                    Outcome::Quit => {
                        shutdown.cancel();
                        return Ok(());
                    }
                }
            }
            // Ctrl-C stops the master as SIGINT does: gracefully, a second time at once.
            Err(ReadlineError::Interrupted) => {
                if shutdown.is_cancelled() {
                    eprintln!("second Ctrl-C: exiting now");
                    std::process::exit(130);
                }
                tracing::info!("Ctrl-C: shutting down (again to exit at once)");
                shutdown.cancel();
            }
            Err(ReadlineError::Eof) => {
                shutdown.cancel();
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Print(String),
    Quit,
}

/// Runs one console command and returns what to print. Blocks on the master's runtime:
/// call it from a thread of its own, not from an async task.
pub fn execute(console: &Console, line: &str) -> Outcome {
    let client = &console.client;
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let arg = words.next();
    let text = match (command, arg) {
        ("help", _) => HELP.into(),
        ("workers", _) => console.call(workers(client)),
        ("status", Some(id)) => console.call(status(client, id)),
        ("status", None) => "usage: status <worker>".into(),
        ("history", Some(id)) => console.call(history(client, id, words.next())),
        ("history", None) => "usage: history <worker> [range, e.g. 15m or 2h]".into(),
        ("alerts", _) => console.call(alerts(client)),
        ("tasks", status) => console.call(tasks(client, status)),
        ("task", Some(id)) => console.call(task(client, id)),
        ("logs", Some(id)) => console.call(logs(client, id)),
        ("cancel", Some(id)) => console.call(cancel(client, id)),
        ("task" | "logs" | "cancel", None) => format!("usage: {command} <task id>"),
        ("quit" | "exit", _) => return Outcome::Quit,
        (other, _) => format!("unknown command {other:?}; type 'help'"),
    };
    Outcome::Print(text)
}

/// What to print when a call fails: the master's own words when it refused, else what
/// went wrong with its causes (an answer that does not parse names the field).
fn failed(e: ClientError) -> String {
    if let ClientError::Refused { message, .. } = e {
        return message;
    }
    let mut text = format!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

async fn workers(client: &ApiClient) -> String {
    client.api_workers().await.map_or_else(failed, |workers| render::workers_table(&workers))
}

async fn status(client: &ApiClient, raw: &str) -> String {
    let Ok(id) = WorkerId::parse(raw) else { return format!("worker {raw:?} not found") };
    client.worker(&id).await.map_or_else(failed, |worker| render::worker_detail(&worker))
}

async fn alerts(client: &ApiClient) -> String {
    client.alerts(None).await.map_or_else(failed, |list| render::alerts_table(&list.alerts))
}

/// About this many rows, whatever the range.
const HISTORY_ROWS: u64 = 15;

async fn history(client: &ApiClient, raw: &str, range: Option<&str>) -> String {
    let range = match range.map(crate::config::parse_duration).transpose() {
        Ok(range) => range.unwrap_or(Duration::from_secs(15 * 60)),
        Err(e) => return e,
    };
    let Ok(id) = WorkerId::parse(raw) else { return format!("worker {raw:?} not found") };
    let range_ms = u64::try_from(range.as_millis()).unwrap_or(u64::MAX).max(HISTORY_ROWS);
    let step_ms = (range_ms / HISTORY_ROWS).max(1000);
    let query = HistoryQuery {
        since: Some(format!("{range_ms}ms")),
        until: None,
        step: Some(format!("{step_ms}ms")),
        fields: vec![Field::Cpu, Field::Memory, Field::Gpu],
    };
    match client.worker_metrics(&id, Some(&query)).await {
        Ok(metrics) => match metrics.history {
            Some(history) => render::history_table(raw, range, &history),
            None => format!("error: the master sent no history for {raw}"),
        },
        Err(e) => failed(e),
    }
}

async fn tasks(client: &ApiClient, status: Option<&str>) -> String {
    let status = match status.map(str::parse::<TaskStatus>).transpose() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let query = render::newest_tasks(status, render::NEWEST_TASKS);
    client.list_tasks(&query).await.map_or_else(failed, render::newest_tasks_table)
}

async fn task(client: &ApiClient, raw: &str) -> String {
    let Ok(id) = TaskId::parse(raw) else { return format!("task {raw:?} not found") };
    client.task(&id).await.map_or_else(failed, |t| render::task_detail(&t))
}

/// The console shows at most the last this many bytes of a task's output.
const LOG_BYTES: usize = 64 * 1024;

async fn logs(client: &ApiClient, raw: &str) -> String {
    let Ok(id) = TaskId::parse(raw) else { return format!("task {raw:?} not found") };
    let logs = match client.task_logs(&id, None).await {
        Ok(logs) => logs,
        Err(e) => return failed(e),
    };
    let text: String = logs.logs.iter().map(|c| c.data.as_str()).collect();
    let mut start = text.len().saturating_sub(LOG_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let text = text[start..].trim_end();
    if text.is_empty() { "(no output)".into() } else { text.to_string() }
}

async fn cancel(client: &ApiClient, raw: &str) -> String {
    let Ok(id) = TaskId::parse(raw) else { return format!("task {raw:?} not found") };
    match client.cancel_task(&id).await {
        Ok(t) if t.status == TaskStatus::Cancelled => format!("{id} cancelled"),
        Ok(_) => format!("{id} is being stopped"),
        // A task that has ended is refused with its status: "task … is already completed".
        Err(e) => failed(e),
    }
}
