//! The master's console on a real terminal: it answers, and a master stopped by a signal
//! stops its console first and gives the terminal back as it found it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::bin;
use nix::pty::openpty;
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, tcgetattr};
use nix::unistd::Pid;
use parking_lot::Mutex;

/// Everything the master wrote to the terminal so far.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<String>>);

impl Screen {
    fn watch(&self, mut terminal: std::fs::File) {
        let screen = self.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = terminal.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }

    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.0.lock().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} on the terminal:\n{}",
                self.0.lock()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn sigterm_stops_the_console_and_gives_the_terminal_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pty = openpty(None, None).expect("openpty");
    let before = tcgetattr(&pty.slave).expect("terminal modes");
    assert!(
        before.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "a fresh terminal is in line mode"
    );

    let terminal = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup terminal"));
    let mut master = Command::new(bin())
        .args(["master", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"])
        .env("CLOUDAI_DATA_DIR", dir.path())
        .env_remove("RUST_LOG")
        .stdin(terminal(&pty.slave))
        .stdout(terminal(&pty.slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cloudai master");
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = master.stderr.take().expect("piped stderr");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().push(line);
        }
    });
    let screen = Screen::default();
    let mut keyboard = std::fs::File::from(pty.master);
    screen.watch(keyboard.try_clone().expect("dup pty"));

    screen.wait_for("master> ").await;
    keyboard.write_all(b"workers\r").expect("type a command");
    screen.wait_for("no workers").await;

    kill(Pid::from_raw(master.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = master.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the master did not exit:\n{}",
            logs.lock().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let logs = logs.lock().join("\n");
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!logs.contains("still reading"), "an idle console stops with the master:\n{logs}");
    let after = tcgetattr(&pty.slave).expect("terminal modes");
    assert_eq!(after.local_flags, before.local_flags, "the terminal is back in line mode with echo");
}
