//! Runs `mptcp-probe collect` on loopback and talks to it with curl, as any client would.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    lab::{in_netns, sh, Child, Netns},
    probe::TempDir,
};

/// A running collector, its database in a temporary directory; killed on drop.
pub struct Collector {
    child: Option<Child>,
    pub url: String,
    /// The database, as `--db` names it.
    pub db: String,
    pub log: PathBuf,
    args: Vec<String>,
    /// The namespace it runs in (by name: a [`Netns`] deletes its namespace on drop); None: here.
    ns: Option<String>,
    dir: TempDir,
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error answer.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }
}

impl Collector {
    /// Starts a collector on 127.0.0.1:`port` with these extra arguments, its reports in
    /// `db` (None: SQLite in a temporary directory).
    pub fn start(port: u16, db: Option<&str>, extra: &[&str]) -> Self {
        Self::start_in(None, &format!("127.0.0.1:{port}"), db, extra)
    }

    /// Starts a collector listening on `listen` in `ns` (None: here).
    pub fn start_in(ns: Option<&Netns>, listen: &str, db: Option<&str>, extra: &[&str]) -> Self {
        let dir = TempDir::new("collect");
        let db = db.map_or_else(|| format!("sqlite://{}", dir.0.join("reports.db").display()), String::from);
        let mut c = Self {
            child: None,
            url: format!("http://{listen}"),
            db,
            log: dir.0.join("collect.log"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            ns: ns.map(|n| n.name.clone()),
            dir,
        };
        c.restart();
        c
    }

    /// Starts it (again, on the same database).
    pub fn restart(&mut self) {
        self.stop();
        let listen = self.url.trim_start_matches("http://").to_string();
        let mut cmd = self.command(crate::probe_bin());
        cmd.args(["collect", "--listen", &listen, "--db", &self.db]).args(&self.args);
        if !self.args.iter().any(|a| a == "--secret-file") {
            cmd.arg("--secret-file").arg(self.dir.0.join("secret"));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(fs::File::create(&self.log).expect("log file"));
        let mut child = Child::spawn(&mut cmd);
        if let Err(e) = child.wait_ready(&self.log, "collect: listening", Duration::from_secs(30), "collect")
        {
            panic!("{e:#}");
        }
        self.child = Some(child);
    }

    /// Stops it with SIGTERM: its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        child.signal(libc::SIGTERM);
        child.wait_exit(Duration::from_secs(30))
    }

    /// Sends it a signal without waiting for it.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            c.signal(sig);
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A command run where the collector runs.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.ns {
            Some(ns) => in_netns(ns, program),
            None => Command::new(program),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// A file of its own for one request (requests may run from several threads at once).
    fn request_file(&self, what: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.0.join(format!("{what}-{n}"))
    }

    /// POSTs `body` to `path` with these extra headers.
    pub fn post(&self, path: &str, body: &[u8], headers: &[&str]) -> Answer {
        self.send("POST", path, body, "application/json", headers)
    }

    /// PUTs `body` to `path` with these extra headers.
    pub fn put(&self, path: &str, body: &[u8], headers: &[&str]) -> Answer {
        self.send("PUT", path, body, "application/octet-stream", headers)
    }

    fn send(&self, method: &str, path: &str, body: &[u8], content_type: &str, headers: &[&str]) -> Answer {
        let file = self.request_file("body");
        fs::write(&file, body).expect("write the body");
        let mut args =
            vec!["-X".to_string(), method.into(), "-H".into(), format!("Content-Type: {content_type}")];
        for h in headers {
            args.extend(["-H".into(), h.to_string()]);
        }
        args.extend(["--data-binary".into(), format!("@{}", file.display())]);
        let answer = self.request(path, &args);
        let _ = fs::remove_file(&file);
        answer
    }

    /// A request with curl's own arguments (e.g. `--limit-rate`).
    pub fn curl(&self, path: &str, args: &[&str]) -> Answer {
        self.request(path, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    pub fn get(&self, path: &str, headers: &[&str]) -> Answer {
        let args: Vec<String> = headers.iter().flat_map(|h| ["-H".to_string(), h.to_string()]).collect();
        self.request(path, &args)
    }

    fn request(&self, path: &str, args: &[String]) -> Answer {
        let out_file = self.request_file("answer");
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.url) };
        let o = sh(self
            .command("curl")
            .args(["-sS", "--max-time", "20", "-o"])
            .arg(&out_file)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(&url));
        let status = String::from_utf8_lossy(&o.stdout).trim().parse().expect("an HTTP status");
        let body = fs::read(&out_file).unwrap_or_default();
        let _ = fs::remove_file(&out_file);
        Answer { status, body }
    }

    /// Reports stored, as the collector counts them.
    pub fn count(&self) -> u64 {
        self.get("/api/v1/summary", &[]).json()["reports"].as_u64().expect("a count")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A report as `check --json` prints one, with one test, under this id.
pub fn report(id: &str) -> serde_json::Value {
    serde_json::json!({
        "schema": "mptcp-probe/report/v1",
        "id": id,
        "started_at": "2026-12-01T10:00:00Z",
        "duration_ms": 1200,
        "client": {"kernel": "6.18.44", "mptcp_sysctls": {"enabled": 1}, "observer": "tc+tracepoints"},
        "server": {"address": "203.0.113.2", "version": "0.1.0"},
        "tests": [{
            "name": "http", "transport": "mptcp", "port": 80, "outcome": "ok", "mptcp": "established",
            "subflows": 1, "fallback_reason": null, "verdicts": ["mptcp_ok"],
            "evidence": {"client": {}, "server": null, "mib_delta": {}}, "duration_ms": 100
        }],
        "summary": {"verdicts": ["mptcp_ok"], "mptcp_usable": true}
    })
}

/// A report from a path that strips MP_CAPABLE from SYNs, from this kind of network.
pub fn stripped_report(id: &str, network_kind: &str) -> serde_json::Value {
    let mut r = report(id);
    r["client"]["network_kind"] = network_kind.into();
    r["tests"][0]["mptcp"] = "not_negotiated".into();
    r["tests"][0]["verdicts"] = serde_json::json!(["syn_option_stripped"]);
    r["tests"][0]["evidence"]["findings"] = serde_json::json!([{
        "verdict": "syn_option_stripped", "packet": "SYN", "end": "server",
        "expected": "MP_CAPABLE in the SYN", "seen": "the SYN arrived without MP_CAPABLE"
    }]);
    r["summary"] = serde_json::json!({"verdicts": ["syn_option_stripped"], "path_conditions": [], "mptcp_usable": false});
    r
}

/// A throwaway PostgreSQL: a cluster made with initdb in a temporary directory, listening on a
/// Unix socket there only, run as the `postgres` user (PostgreSQL refuses to run as root), shut
/// down on drop.
pub struct Postgres {
    child: Child,
    /// What `--db` takes.
    pub url: String,
    _dir: TempDir,
}

/// The newest installed PostgreSQL's programs.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            anyhow::anyhow!(
                "PostgreSQL is not installed (/usr/lib/postgresql: {e}); cargo xtask setup installs it"
            )
        })?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop().ok_or_else(|| anyhow::anyhow!("no initdb under /usr/lib/postgresql"))
}

impl Postgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = TempDir::new("postgres");
        let (data, sock) = (dir.0.join("data"), dir.0.join("sock"));
        for d in [&data, &sock] {
            fs::create_dir_all(d)?;
        }
        sh(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir.0));
        sh(Command::new("chmod").arg("0755").arg(&dir.0));
        let as_postgres = |program: &Path| {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(program);
            c
        };
        sh(as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "mpp", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null()));
        let log = dir.0.join("postgres.log");
        let mut cmd = as_postgres(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sock)
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        let child = Child::spawn(&mut cmd);
        let start = Instant::now();
        while !sock.join(".s.PGSQL.5432").exists() {
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("PostgreSQL did not start:\n{}", fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!("postgres:///postgres?host={}&user=mpp", sock.display());
        Ok(Self { child, url, _dir: dir })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown: clients cut, the cluster closed cleanly.
        self.child.signal(libc::SIGINT);
        let _ = self.child.wait_exit(Duration::from_secs(20));
    }
}
