//! Runs `mptcp-probe watch --json` inside a namespace and collects what it printed.

use std::{
    fs,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use mptcp_probe_model::{watch::PacketRecord, Counters, Event, FlowSummary, WatchLine};

use crate::lab::{Child, Netns};

/// A running `watch`, stopped with SIGINT by [`Watcher::stop`] (killed on drop otherwise).
pub struct Watcher {
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::process::id();
        let t = Instant::now().elapsed().as_nanos();
        let p = std::env::temp_dir().join(format!("mpp-{tag}-{n}-{t}-{}", rand_suffix()));
        fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a stopped watcher printed, read through the data model.
pub struct WatchOutput {
    pub lines: Vec<WatchLine>,
    /// The same lines as printed.
    pub text: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
}

impl WatchOutput {
    /// The lines as printed (to check the JSON itself, not what the model reads of it).
    pub fn raw_lines(&self) -> Vec<&str> {
        self.text.lines().collect()
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.lines.iter().filter_map(|l| match l {
            WatchLine::Event(e) => Some(e),
            _ => None,
        })
    }

    pub fn packets(&self) -> impl Iterator<Item = &PacketRecord> {
        self.events().filter_map(|e| match e {
            Event::Packet(p) => Some(&**p),
            _ => None,
        })
    }

    /// The packet events of a flow (by either port), in order.
    pub fn packets_with_port(&self, port: u16) -> Vec<&PacketRecord> {
        self.packets().filter(|p| p.local_port == port || p.remote_port == port).collect()
    }

    pub fn flows(&self) -> impl Iterator<Item = &FlowSummary> {
        self.lines.iter().filter_map(|l| match l {
            WatchLine::Flow(f) => Some(&**f),
            _ => None,
        })
    }

    /// The flow summary whose local or remote port is `port`.
    pub fn flow_with_port(&self, port: u16) -> &FlowSummary {
        self.flows()
            .find(|f| f.local_port == port || f.remote_port == port)
            .unwrap_or_else(|| panic!("no flow summary with port {port}; output:\n{}", self.dump()))
    }

    pub fn counters(&self) -> &Counters {
        self.lines
            .iter()
            .find_map(|l| match l {
                WatchLine::Counters(c) => Some(c),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no counters line; output:\n{}", self.dump()))
    }

    pub fn dump(&self) -> String {
        let mut s: Vec<String> = self
            .lines
            .iter()
            .map(|v| serde_json::to_string(v).unwrap_or_else(|e| format!("<{e}>")))
            .collect();
        s.push(format!("--- stderr ---\n{}", self.stderr));
        s.join("\n")
    }
}

impl Watcher {
    /// Starts `mptcp-probe watch --json` with `args` in `ns` and waits until it is attached.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let dir = TempDir::new("watch");
        let stdout = dir.0.join("watch.jsonl");
        let stderr = dir.0.join("watch.err");
        let mut cmd = ns.cmd(crate::probe_bin());
        cmd.arg("watch")
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"));
        let child = Child::spawn(&mut cmd);
        let mut w = Self { child: Some(child), stdout, stderr, _dir: dir };
        w.wait_for_log("watching", Duration::from_secs(60));
        w
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log otherwise.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let child = self.child.as_mut().expect("running");
        if let Err(e) = child.wait_ready(&self.stderr, needle, timeout, "watch") {
            panic!("{e:#}");
        }
    }

    /// Stops with `signal` (SIGINT or SIGTERM) and parses the JSON lines.
    pub fn stop_with(mut self, signal: i32) -> WatchOutput {
        let mut child = self.child.take().expect("running");
        child.signal(signal);
        let exit_code = child.wait_exit(Duration::from_secs(30));
        drop(child);
        let text = fs::read_to_string(&self.stdout).unwrap_or_default();
        let lines = text
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("watch printed a line the data model does not read ({e}): {l}")
                })
            })
            .collect();
        WatchOutput { lines, text, stderr: self.log(), exit_code }
    }

    pub fn stop(self) -> WatchOutput {
        self.stop_with(libc::SIGINT)
    }
}
