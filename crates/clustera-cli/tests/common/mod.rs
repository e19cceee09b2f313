//! What the `clustera` command tests share: the binary, and its development broker on a free
//! port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// The `clustera` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_clustera");

/// `clustera dev` on a free port, killed on drop.
pub struct Dev {
    pub child: Child,
    /// Its bootstrap address.
    pub addr: String,
}

impl Dev {
    /// Starts it with `topics` (`name:partitions`) and waits until it serves.
    pub fn start(topics: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(BIN);
        cmd.args(["dev", "--listen", &addr]);
        for t in topics {
            cmd.args(["--topic", t]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It prints the bootstrap address on stdout once it serves.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), addr, "dev broker announces its address");
        Dev { child, addr }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
