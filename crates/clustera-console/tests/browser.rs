//! End-to-end: a kernel on the development broker (librdkafka's mock cluster), the console
//! serving it, and Debian's Chromium driving the pages through chromedriver (WebDriver).
//! Needs `chromium` and `chromium-driver` (installed by scripts/test.sh). Screenshots go to
//! `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Context, Kernel, KernelError, Message, Outcome, Runtime};
use fantoccini::{Client, ClientBuilder, Locator};

/// Fails values starting with `poison` until healed; records what it processed.
#[derive(Default)]
struct Shared {
    healed: AtomicBool,
    processed: Mutex<Vec<(String, Option<String>)>>,
}

struct Poisoned(Arc<Shared>);

impl Kernel for Poisoned {
    fn name(&self) -> &str {
        "orders-kernel"
    }

    fn default_topics(&self) -> Vec<String> {
        vec!["orders".into()]
    }

    async fn process(&self, msg: &Message, _ctx: &mut Context) -> Result<Outcome, KernelError> {
        let value = String::from_utf8_lossy(msg.value().unwrap_or_default()).into_owned();
        if value.starts_with("poison") && !self.0.healed.load(Ordering::SeqCst) {
            return Err(KernelError::permanent(format!("cannot parse {value:?}")));
        }
        let from = msg
            .header(clustera_console::dlq::REPLAYED_FROM)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        self.0.processed.lock().unwrap().push((value, from));
        Ok(Outcome::Ack)
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port, killed on drop.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: install Debian's chromium and chromium-driver (scripts/test.sh does)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver(child, port)
    }

    async fn browser(&self, profile: &std::path::Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display())]
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.1))
            .await
            .expect("starting Chromium through chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves a console on a free port; its base URL.
async fn console(
    bootstrap: &str,
    configure: impl FnOnce(&mut clustera_console::Options),
) -> String {
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    let mut options = clustera_console::Options::new(client);
    options.sample_interval = Duration::from_millis(500);
    configure(&mut options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(clustera_console::serve(
        listener,
        options,
        std::future::pending(),
    ));
    url
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Reloads `url` until `cond` holds on its source; panics with `what` after 30 s.
async fn wait_page(browser: &Client, url: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.goto(url).await.unwrap();
        let source = browser.source().await.unwrap();
        if cond(&source) {
            return source;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within 30 s; last page:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits for the page that a submitted form leads to, with this flash message.
async fn expect_flash(browser: &Client, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        // The previous page's message, or a stale element while the next page loads.
        if let Ok(e) = browser.find(Locator::Css("div.flash")).await {
            if let Ok(t) = e.text().await {
                if t == expected {
                    return;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("flash {expected:?} not shown within 30 s; last: {last:?}");
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_a_running_kernel_and_replays_its_dead_letter_in_chromium() {
    let broker = MockBroker::start(1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    for (t, p) in [
        ("orders", 2),
        ("orders.dlq", 1),
        ("clustera.status", 1),
        ("clustera.console.handled", 1),
    ] {
        broker.create_topic(t, p).unwrap();
    }
    let shared = Arc::new(Shared::default());
    let mut config = Config::for_brokers("orders-kernel", &bootstrap, &["orders"]);
    config.group_id = "orders-kernel".into();
    config.runtime.commit_interval = Duration::from_millis(100);
    config.runtime.retry_initial_delay = Duration::from_millis(5);
    config.runtime.retry_max_delay = Duration::from_millis(20);
    config.runtime.max_attempts = Some(2);
    config.runtime.status_topic = Some("clustera.status".into());
    config.runtime.status_interval = Duration::from_millis(500);
    config.properties.insert(
        "group.protocol".into(),
        clustera::config::Secret::new("consumer"),
    );
    let runtime = Runtime::new(config, Poisoned(shared.clone()));
    let stats = runtime.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let kernel = tokio::spawn(runtime.run_until(async {
        let _ = stopped.await;
    }));

    let script = "<script>window.__xss=1</script>";
    let mut records: Vec<kafka::ProducedRecord> = (0..5)
        .map(|i| {
            (
                Some(format!("k{i}").into_bytes()),
                format!("{{\"n\":{i}}}").into_bytes(),
                vec![],
            )
        })
        .collect();
    records.push((Some(b"x".to_vec()), script.as_bytes().to_vec(), vec![]));
    records.push((
        Some(b"p1".to_vec()),
        b"poison-1".to_vec(),
        vec![("trace".into(), "t-1".into())],
    ));
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || kafka::produce(&b, "orders", records))
        .await
        .unwrap()
        .unwrap();
    wait_for("the poison message dead-lettered", || {
        stats.snapshot().dead_lettered == 1
    })
    .await;
    wait_for("the six good messages processed", || {
        shared.processed.lock().unwrap().len() == 6
    })
    .await;

    let url = console(&bootstrap, |_| {}).await;
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;

    // Overview: the kernel's instance up, its group, the topics.
    let overview = wait_page(
        &browser,
        &format!("{url}/"),
        "the kernel instance up on the overview",
        |s| s.contains("orders-kernel") && s.contains("<span class=\"ok\">up</span>"),
    )
    .await;
    assert_eq!(
        browser
            .find(Locator::Id("brokers"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert!(overview.contains("/groups/orders-kernel"));
    shot(&browser, "overview").await;

    browser.goto(&format!("{url}/topics")).await.unwrap();
    let topics = browser
        .find(Locator::Id("topic-list"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for t in ["orders", "orders.dlq", "clustera.status"] {
        assert!(
            topics.lines().any(|l| l.starts_with(&format!("{t} "))),
            "{t} listed in:\n{topics}"
        );
    }

    // The group: every message committed, so its lag is exactly 0 on both partitions.
    let group = wait_page(
        &browser,
        &format!("{url}/groups/orders-kernel"),
        "the group's lag at 0",
        |s| s.contains("id=\"group-lag\">0<"),
    )
    .await;
    let rows = browser.find_all(Locator::Css("#lag tr")).await.unwrap();
    assert_eq!(
        rows.len(),
        1 + 2,
        "a header and one row per partition of orders:\n{group}"
    );
    // Lag over time: samples every 500 ms, so a chart once there are two.
    wait_page(
        &browser,
        &format!("{url}/groups/orders-kernel"),
        "the lag chart",
        |s| s.contains("id=\"lag-chart\""),
    )
    .await;
    shot(&browser, "group").await;

    browser.goto(&format!("{url}/kernels")).await.unwrap();
    let instances = browser
        .find_all(Locator::Css("#kernels tr.kernel"))
        .await
        .unwrap();
    assert_eq!(instances.len(), 1, "one live instance");
    assert!(instances[0].text().await.unwrap().contains("up"));
    shot(&browser, "kernels").await;

    // The <script> value renders as text and does not run, whichever partition it is on.
    let mut seen = 0;
    for p in 0..2 {
        browser
            .goto(&format!("{url}/topics/orders?partition={p}&filter=__xss"))
            .await
            .unwrap();
        for cell in browser
            .find_all(Locator::Css("#messages td.value pre"))
            .await
            .unwrap()
        {
            assert_eq!(cell.text().await.unwrap(), script);
            seen += 1;
        }
        let ran = browser
            .execute("return window.__xss === undefined", vec![])
            .await
            .unwrap();
        assert_eq!(
            ran,
            serde_json::Value::Bool(true),
            "the value's script must not run"
        );
    }
    assert_eq!(seen, 1, "the script value is found exactly once");
    shot(&browser, "topic").await;

    // The dead letter: browsed with its provenance, replayed with the button, then processed.
    browser
        .goto(&format!("{url}/dlq/orders.dlq"))
        .await
        .unwrap();
    let letters = browser
        .find_all(Locator::Css("#messages tr.message"))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    let text = letters[0].text().await.unwrap();
    assert!(
        text.contains("orders")
            && text.contains("cannot parse \"poison-1\"")
            && text.contains("poison-1"),
        "{text}"
    );
    shot(&browser, "dead-letters").await;
    shared.healed.store(true, Ordering::SeqCst);
    letters[0]
        .find(Locator::Css("button.replay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_flash(&browser, "replayed 1 dead letter(s)").await;
    wait_for("the replayed message processed", || {
        shared.processed.lock().unwrap().len() == 7
    })
    .await;
    assert_eq!(
        shared.processed.lock().unwrap()[6],
        ("poison-1".to_owned(), Some("orders.dlq/0/0".to_owned())),
        "processed once, naming the dead letter it was replayed from"
    );

    // Mark the dead letter handled through the range form.
    let mark = browser
        .form(Locator::Css("form[action$='/handled']"))
        .await
        .unwrap();
    mark.set_by_name("from", "0").await.unwrap();
    mark.set_by_name("to", "0").await.unwrap();
    mark.set_by_name("note", "fixed in v2").await.unwrap();
    mark.submit().await.unwrap();
    expect_flash(
        &browser,
        "marked orders.dlq partition 0 offsets 0–0 handled",
    )
    .await;
    let status = browser
        .find_all(Locator::Css("#messages tr.message span.ok"))
        .await
        .unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].text().await.unwrap(), "handled");

    // A selection: tick the row, then "Replay selected"; the kernel processes it once more.
    browser
        .find(Locator::Css("#messages input[name='sel']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Id("replay-selection"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_flash(&browser, "replayed 1 dead letter(s)").await;
    wait_for("the selection processed", || {
        shared.processed.lock().unwrap().len() == 8
    })
    .await;
    assert_eq!(
        shared.processed.lock().unwrap()[7].1.as_deref(),
        Some("orders.dlq/0/0")
    );

    // Read-only: no replay button, and a replay request is refused.
    let read_only = console(&bootstrap, |o| o.read_only = true).await;
    browser
        .goto(&format!("{read_only}/dlq/orders.dlq"))
        .await
        .unwrap();
    assert_eq!(
        browser
            .find_all(Locator::Css("#messages tr.message"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(browser
        .find_all(Locator::Css("button.replay"))
        .await
        .unwrap()
        .is_empty());
    assert!(browser
        .find_all(Locator::Css("form[action$='/replay']"))
        .await
        .unwrap()
        .is_empty());
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{read_only}/dlq/orders.dlq/replay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("sel=0%3A0")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("read-only"));

    // CSRF: a replay without the page's token is refused by the read-write console.
    let forged = http
        .post(format!("{url}/dlq/orders.dlq/replay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("sel=0%3A0&csrf=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("CSRF"));
    let b = bootstrap.clone();
    let highs = tokio::task::spawn_blocking(move || kafka::high_watermarks(&b, "orders"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        highs.values().sum::<i64>(),
        9,
        "7 produced + 2 replays; the refused ones sent nothing"
    );

    // Token: without it, pages redirect to the login; with it they are served.
    let guarded = console(&bootstrap, |o| o.token = Some("s3cret".into())).await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let anonymous = no_redirect
        .get(format!("{guarded}/topics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    let wrong = no_redirect
        .get(format!("{guarded}/topics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 303);
    let ok = no_redirect
        .get(format!("{guarded}/topics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));

    browser.close().await.unwrap();
    let _ = stop.send(());
    let summary = kernel.await.unwrap().unwrap();
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(summary.acked, 8);
}
