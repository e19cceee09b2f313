//! A throwaway PostgreSQL server for tests and demos (found by [`pg_bin`]): `initdb` into a
//! temporary directory,
//! `wal_level=logical`, a free loopback port. initdb and postgres refuse to run as root, so
//! when this process is root they run as the `postgres` system user, through `setpriv`.
//!
//! [`Postgres::stop`] and [`Postgres::restart`] stop the server (`pg_ctl stop -m fast`: open
//! connections are terminated with `57P01`) and start it again on the same data directory
//! and port, as an operator restarting PostgreSQL would.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where PostgreSQL's server binaries (`initdb`, `postgres`, `pg_ctl`, `pg_isready`) are:
/// `CLUSTERA_PG_BIN`, else `pg_config --bindir`, else `initdb` on `PATH`, else Debian's and
/// Ubuntu's `/usr/lib/postgresql/<version>/bin` (the newest). `scripts/install-postgres.sh`
/// installs them where missing.
pub fn pg_bin() -> Result<PathBuf, String> {
    static FOUND: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_pg_bin).clone()
}

fn find_pg_bin() -> Result<PathBuf, String> {
    let has_initdb = |dir: &std::path::Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("CLUSTERA_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "CLUSTERA_PG_BIN={}: no initdb there",
                dir.display()
            ))
        };
    }
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort();
    pg_config
        .into_iter()
        .chain(on_path)
        .chain(debian.into_iter().rev().map(|(_, dir)| dir))
        .find(|dir| has_initdb(dir))
        .ok_or_else(|| {
            "PostgreSQL's server binaries (initdb, postgres, pg_ctl) are not installed: run \
             scripts/install-postgres.sh, or set CLUSTERA_PG_BIN to their directory"
                .to_owned()
        })
}

/// A running server, stopped and deleted when dropped.
pub struct Postgres {
    /// The server, `None` while stopped.
    child: Option<Child>,
    dir: PathBuf,
    url: String,
    port: u16,
    root: bool,
    /// The server binaries' directory.
    bin: PathBuf,
    /// Extra `-c name=value` settings, kept for restarts.
    settings: Vec<(String, String)>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn as_server_user(bin: &std::path::Path, program: &str, root: bool) -> Command {
    let path = bin.join(program).display().to_string();
    if root {
        // setpriv execs the server itself (runuser would fork and outlive a kill).
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            &path,
        ]);
        c
    } else {
        Command::new(path)
    }
}

impl Postgres {
    /// Starts a server; fails with instructions if PostgreSQL is not installed.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[], &[])
    }

    /// Starts a server with `files` written into its data directory (readable by the server
    /// only, as it wants its TLS key) and extra `settings` (`-c name=value`; relative paths
    /// in them are relative to the data directory): `ssl=on` with a test CA's certificate,
    /// for instance.
    pub fn start_with(files: &[(&str, &[u8])], settings: &[(&str, &str)]) -> Result<Self, String> {
        let bin = pg_bin()?;
        let root = is_root();
        let dir =
            std::env::temp_dir().join(format!("clustera-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!(
                    "cannot give {} to the postgres user",
                    dir.display()
                ));
            }
        }
        let data = dir.join("data");
        let out = as_server_user(&bin, "initdb", root)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for (name, bytes) in files {
            let path = data.join(name);
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut chmod = Command::new("chmod");
            chmod.arg("600").arg(&path);
            let mut commands = vec![chmod];
            if root {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(&path);
                commands.push(chown);
            }
            for mut c in commands {
                if !c.status().is_ok_and(|s| s.success()) {
                    return Err(format!("cannot prepare {}", path.display()));
                }
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut pg = Self {
            child: None,
            dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            root,
            bin,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        pg.start_again()?;
        Ok(pg)
    }

    /// Starts the stopped server again, on the same data directory and port; returns once it
    /// accepts connections.
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("postgres is already running".into());
        }
        let child = as_server_user(&self.bin, "postgres", self.root)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(&self.dir)
            // fsync off for speed, but commits stay synchronous: logical decoding only sees
            // flushed WAL, and with asynchronous commit that waits for the WAL writer's
            // 200 ms cycle, which would be the pipeline's latency floor.
            .args(["-c", "wal_level=logical", "-c", "fsync=off"])
            .args(["-c", "max_replication_slots=8", "-c", "max_wal_senders=8"])
            .args(
                self.settings
                    .iter()
                    .flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.child = Some(child);
        self.wait_ready(self.port)
    }

    /// Stops the server with `pg_ctl stop -m fast` (sessions are terminated, the shutdown is
    /// clean) and waits until it has exited.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("postgres is not running".into());
        };
        let out = as_server_user(&self.bin, "pg_ctl", self.root)
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.dir.join("data"))
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !out.status.success() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        child.wait().map_err(|e| format!("postgres: {e}"))?;
        Ok(())
    }

    /// Stops the server, keeps it down for `down`, and starts it again.
    pub fn restart(&mut self, down: Duration) -> Result<(), String> {
        self.stop()?;
        std::thread::sleep(down);
        self.start_again()
    }

    fn wait_ready(&self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("postgres did not become ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `DATABASE_URL` for the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
