//! The python-socketio client (tests/peers/socketio_client.py) as a child of the test; its stdout
//! lines (one JSON object per thing that happened) arrive on a channel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the client presents its token on connect.
#[derive(Debug, Clone, Copy)]
pub enum SocketAuth<'a> {
    None,
    /// `sio.connect(url, auth={"token": …})`, as the VAEL UI does.
    Payload(&'a str),
    /// `Authorization: Bearer …` on the handshake request.
    Header(&'a str),
}

pub struct SocketIoClient {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub name: &'static str,
}

impl SocketIoClient {
    /// Connect to Antibody's Socket.IO endpoint on `port` with `auth` and listen for `events`; the
    /// client exits after `count` of them (or at once on a refused connect: `connect_error`).
    pub fn start(
        name: &'static str,
        port: u16,
        transport: &str,
        auth: SocketAuth,
        events: &[&str],
        count: usize,
    ) -> Self {
        let python = super::python_env().join("bin/python");
        assert!(python.exists(), "{} missing: run tests/peers/setup.sh", python.display());
        let mut command = Command::new(python);
        command
            .arg(crate::repo_root().join("tests/peers/socketio_client.py"))
            .args(["--url", &format!("http://127.0.0.1:{port}"), "--transport", transport])
            .args(["--count", &count.to_string(), "--timeout", "90"]);
        match auth {
            SocketAuth::None => {}
            SocketAuth::Payload(token) => {
                command.args(["--token", token, "--token-via", "auth"]);
            }
            SocketAuth::Header(token) => {
                command.args(["--token", token, "--token-via", "header"]);
            }
        }
        for event in events {
            command.args(["--event", event]);
        }
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start client");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, name }
    }

    /// The next JSON line whose `event` is one of `events`, within `timeout`.
    pub fn next_of(&self, events: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{}: none of {events:?} within {timeout:?} ({e})", self.name));
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: {line:?}: {e}", self.name));
            if events.iter().any(|e| value["event"] == *e) {
                return value;
            }
        }
    }

    /// The next JSON line whose `event` is `event`, within `timeout`.
    pub fn next(&self, event: &str, timeout: Duration) -> Value {
        self.next_of(&[event], timeout)
    }
}

impl Drop for SocketIoClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
