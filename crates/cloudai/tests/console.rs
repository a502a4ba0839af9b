//! The master's console on a real terminal: it answers, Ctrl-C stops the master as SIGINT
//! does, and a master stopped by a signal stops its console first and gives the terminal back
//! as it found it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::bin;
use nix::pty::openpty;
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, Termios, tcgetattr};
use nix::unistd::Pid;
use parking_lot::Mutex;

/// A `cloudai` process whose controlling terminal is a pseudo-terminal the test types into.
struct OnTerminal {
    child: Child,
    terminal: OwnedFd,
    keyboard: std::fs::File,
    screen: Arc<Mutex<String>>,
    logs: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl OnTerminal {
    fn start(command: &str) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let pty = openpty(None, None).expect("openpty");
        let on_terminal = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup terminal"));
        let mut cmd = Command::new(bin());
        cmd.args([command, "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"])
            .env("CLOUDAI_DATA_DIR", data.path())
            .env_remove("RUST_LOG")
            .stdin(on_terminal(&pty.slave))
            .stdout(on_terminal(&pty.slave))
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A session of its own with the pty as its terminal, so Ctrl-C there is its SIGINT.
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn cloudai");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().push(line);
            }
        });
        let keyboard = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(String::new()));
        let (mut display, shown) = (keyboard.try_clone().expect("dup pty"), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = display.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, terminal: pty.slave, keyboard, screen, logs, _data: data }
    }

    fn modes(&self) -> Termios {
        tcgetattr(&self.terminal).expect("terminal modes")
    }

    fn logs(&self) -> String {
        self.logs.lock().join("\n")
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.keyboard.write_all(keys).expect("type on the terminal");
    }

    async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.screen.lock().contains(needle) {
            let screen = self.screen.lock().clone();
            assert!(tokio::time::Instant::now() < deadline, "no {needle:?} on the terminal:\n{screen}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the stderr reader catch up.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "cloudai did not exit:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_stops_the_console_and_gives_the_terminal_back() {
    let mut master = OnTerminal::start("master");
    let before = master.modes();
    assert!(
        before.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "a fresh terminal is in line mode"
    );
    master.wait_for("master> ").await;
    master.type_keys(b"workers\r");
    master.wait_for("no workers").await;

    kill(Pid::from_raw(master.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = master.wait_exit().await;
    let logs = master.logs();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!logs.contains("still reading"), "an idle console stops with the master:\n{logs}");
    assert_eq!(master.modes().local_flags, before.local_flags, "the terminal is back in line mode with echo");
}

#[tokio::test]
async fn ctrl_c_at_the_prompt_stops_the_master_with_exit_0() {
    let mut master = OnTerminal::start("master");
    let before = master.modes();
    master.wait_for("master> ").await;
    master.type_keys(b"\x03");
    let status = master.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", master.logs());
    assert!(master.logs().contains("shutting down"), "{}", master.logs());
    assert_eq!(master.modes().local_flags, before.local_flags, "the terminal is given back");
}

#[tokio::test]
async fn ctrl_c_in_a_half_typed_line_stops_cloudai_dev_with_exit_0() {
    let mut dev = OnTerminal::start("dev");
    let before = dev.modes();
    dev.wait_for("master> ").await;
    dev.type_keys(b"wor");
    dev.wait_for("wor").await;
    dev.type_keys(b"\x03");
    let status = dev.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", dev.logs());
    assert!(dev.logs().contains("shutting down"), "{}", dev.logs());
    assert_eq!(dev.modes().local_flags, before.local_flags, "the terminal is given back");
}

#[tokio::test]
async fn an_outside_sigint_stops_a_master_whose_console_is_up() {
    let mut master = OnTerminal::start("master");
    master.wait_for("master> ").await;
    kill(Pid::from_raw(master.child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let status = master.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", master.logs());
}
