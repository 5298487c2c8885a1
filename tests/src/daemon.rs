//! Runs `mptcp-probe daemon` inside a namespace and scrapes what it serves; a real Prometheus
//! beside it where a test wants one.

use std::{
    fs,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{
    lab::{in_netns, sh, Child, Netns},
    probe::TempDir,
};

/// A running daemon, stopped with SIGTERM by [`Daemon::stop`] (killed on drop otherwise).
pub struct Daemon {
    child: Option<Child>,
    pub listen: String,
    pub config: PathBuf,
    pub log: PathBuf,
    ns_name: String,
    _dir: TempDir,
}

/// How a stopped daemon ended.
pub struct Stopped {
    pub exit_code: Option<i32>,
    pub log: String,
}

impl Daemon {
    /// Starts the daemon in `ns` with this configuration (TOML; `metrics.listen` must be
    /// `listen`) and waits until it serves.
    pub fn start(ns: &Netns, listen: &str, config: &str) -> Self {
        Self::start_as(ns, listen, config, &[])
    }

    /// The same, the daemon started through `wrapper` (e.g. `setpriv` with its options), from
    /// a copy of the binary that any user may run.
    pub fn start_as(ns: &Netns, listen: &str, config: &str, wrapper: &[&str]) -> Self {
        let dir = TempDir::new("daemon");
        let path = dir.0.join("mptcp-probe.toml");
        fs::write(&path, config).expect("write the configuration");
        let log = dir.0.join("daemon.log");
        let bin = dir.0.join("mptcp-probe");
        fs::copy(crate::probe_bin(), &bin).expect("copy the probe");
        for p in [&dir.0, &bin] {
            fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        }
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = ns.cmd(program);
                c.args(args).arg(&bin);
                c
            }
            None => ns.cmd(&bin),
        };
        cmd.arg("daemon")
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"));
        let mut child = Child::spawn(&mut cmd);
        if let Err(e) = child.wait_ready(&log, "metrics on", Duration::from_secs(60), "daemon") {
            panic!("{e:#}");
        }
        Self {
            child: Some(child),
            listen: listen.into(),
            config: path,
            log,
            ns_name: ns.name.clone(),
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id (`ip netns exec` runs it in its own process).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").0.id()
    }

    pub fn signal(&self, sig: i32) {
        self.child.as_ref().expect("running").signal(sig);
    }

    /// `/metrics` in the Prometheus text format (what curl gets without asking for more).
    pub fn scrape(&self) -> String {
        self.get("/metrics", &[])
    }

    /// A GET from inside the namespace, with these extra curl arguments.
    pub fn get(&self, path: &str, curl_args: &[&str]) -> String {
        let url = format!("http://{}{path}", self.listen);
        let out = sh(curl_in(&self.ns_name).args(curl_args).arg(&url));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Scrapes until `ready` holds of the exposition (summaries come a moment after a flow's
    /// end); the last exposition either way.
    pub fn scrape_until(&self, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.scrape();
            if ready(&text) || start.elapsed() > timeout {
                return text;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().expect("running");
        child.signal(libc::SIGTERM);
        let exit_code = child.wait_exit(Duration::from_secs(30));
        drop(child);
        Stopped { exit_code, log: self.log() }
    }
}

/// curl in the namespace named `ns`, failing fast.
fn curl_in(ns: &str) -> std::process::Command {
    let mut c = in_netns(ns, "curl");
    c.args(["-sS", "--max-time", "10"]);
    c
}

/// The value of one sample of a text exposition, by its name and labels as printed
/// (`name{a="b"}`), or None when the exposition has no such sample.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// A Prometheus server in a namespace, scraping `targets` every second, its data in a
/// temporary directory.
pub struct Prometheus {
    _child: Child,
    ns_name: String,
    pub listen: String,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(ns: &Netns, listen: &str, targets: &[&str]) -> Self {
        Self::start_with_rules(ns, listen, targets, None)
    }

    /// The same, evaluating these alerting rules (the text of a rules file) every second.
    pub fn start_with_rules(ns: &Netns, listen: &str, targets: &[&str], rules: Option<&str>) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let mut yml = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: \
             mptcp-probe\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        if let Some(rules) = rules {
            let path = dir.0.join("rules.yml");
            fs::write(&path, rules).expect("write the rules");
            yml.push_str(&format!("rule_files:\n  - '{}'\n", path.display()));
        }
        fs::write(&config, yml).expect("write prometheus.yml");
        let log = dir.0.join("prometheus.log");
        let mut cmd = ns.cmd("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"));
        let mut child = Child::spawn(&mut cmd);
        if let Err(e) = child.wait_ready(
            &log,
            "Server is ready to receive web requests",
            Duration::from_secs(60),
            "prometheus",
        ) {
            panic!("{e:#}");
        }
        Self { _child: child, ns_name: ns.name.clone(), listen: listen.into(), log, _dir: dir }
    }

    /// An instant query through the HTTP API: the JSON answer.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let url = format!("http://{}/api/v1/query", self.listen);
        let out = sh(curl_in(&self.ns_name)
            .args(["-sS", "--max-time", "10", "-G", &url, "--data-urlencode"])
            .arg(format!("query={promql}")));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("prometheus answered no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Queries until the first series' value satisfies `ready`; that value, or None on timeout.
    pub fn value_until(&self, promql: &str, timeout: Duration, ready: impl Fn(f64) -> bool) -> Option<f64> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let answer = self.query(promql);
            let value = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
            if let Some(v) = value.filter(|v| ready(*v)) {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

/// Verifies a systemd unit with `systemd-analyze verify` as installed with its binary at
/// `binary` (written to `dir` with `installed_at`, the path the unit names, replaced): it must
/// pass without a word. Man pages are not looked for: they come with the package.
pub fn verify_unit(
    unit: &std::path::Path,
    installed_at: &str,
    binary: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let name = unit.file_name().ok_or_else(|| anyhow::anyhow!("{} names no unit", unit.display()))?;
    let text = std::fs::read_to_string(unit)
        .map_err(|e| anyhow::anyhow!("cannot read the unit {}: {e}", unit.display()))?;
    let copy = dir.join(name);
    std::fs::write(&copy, text.replace(installed_at, &binary.to_string_lossy()))?;
    let o = std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_file(&copy);
    if !o.status.success() || !said.trim().is_empty() {
        anyhow::bail!("systemd-analyze verify {}: {said}", name.to_string_lossy());
    }
    Ok(())
}
