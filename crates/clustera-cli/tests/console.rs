//! `clustera console`: the subcommand serves the pages on the development broker, prints its
//! URL, and `--read-only` refuses mutations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Dev, BIN};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_console_serves_its_pages_and_read_only_refuses_mutations() {
    let dev = Dev::start(&["orders:2"]);
    let mut child = Command::new(BIN)
        .args([
            "console",
            "--read-only",
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            &dev.addr,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let _console = Killed(child);
    let url = url.trim().trim_end_matches('/').to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        for page in [
            "/",
            "/topics",
            "/topics/orders",
            "/groups",
            "/kernels",
            "/dlq",
        ] {
            let r = http.get(format!("{url}{page}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{page}");
            let body = r.text().await.unwrap();
            assert!(body.contains("read-only"), "{page} shows the mode");
            assert!(
                !body.contains("method=\"post\""),
                "{page} shows no mutating form"
            );
        }
        let produce = http
            .post(format!("{url}/topics/orders/produce"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("value=x")
            .send()
            .await
            .unwrap();
        assert_eq!(produce.status(), 403);
        let missing = http.get(format!("{url}/topics/nope")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert!(missing.text().await.unwrap().contains("unknown topic nope"));
        let bad = http
            .get(format!("{url}/topics/orders?partition=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert!(bad
            .text()
            .await
            .unwrap()
            .contains("partition: &quot;x&quot; is not valid"));
    });
}
