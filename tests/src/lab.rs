//! Network namespaces for tests and measurements, always removed on drop.
//!
//! Topology (the design's lab): client `c` has two paths to the router/middlebox `m`
//! (192.0.2.1/26 ↔ 192.0.2.2/26, 198.51.100.1/26 ↔ 198.51.100.2/26; 2001:db8:1::/64, 2001:db8:2::/64),
//! `m` reaches the server `s` over 203.0.113.1/26 ↔ 203.0.113.2/26 (2001:db8:3::/64). The ranges are
//! documentation prefixes that exist only inside the namespaces; nothing has a route off the machine.

use std::{
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    sh(Command::new("ip").args(args));
}

/// A command to run inside the namespace named `name`. For those that outlive no [`Netns`] of
/// theirs (a [`Netns`] deletes its namespace on drop), so keep the name only.
pub fn in_netns(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", name]).arg(program);
    c
}

/// One network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        // A stale namespace of the same name (an earlier run killed hard) is replaced.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Self { name: name.to_string() }
    }

    /// A command to run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.name, program)
    }

    /// Runs a command inside the namespace, panicking on failure.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        sh(self.cmd(program).args(args))
    }

    /// The namespace's inode number, as the kernel names it in events.
    pub fn inode(&self) -> u64 {
        let out = self.run("stat", &["-L", "-c", "%i", "/proc/self/ns/net"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("inode")
    }

    pub fn sysctl(&self, kv: &str) {
        self.run("sysctl", &["-qw", kv]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// Kills every process left in a namespace (servers, middleboxes of a kept lab), then deletes it.
pub fn remove_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: signalling a process by pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// The labs present on this host (their run names), kept ones and leftovers of killed runs.
pub fn runs() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    let mut runs: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.strip_prefix("mpp-")?.strip_suffix("-c").map(str::to_string))
        .collect();
    runs.sort();
    runs.dedup();
    runs
}

/// Removes a lab by its run name (processes in it included).
pub fn remove(run: &str) {
    for role in ["c", "m", "s"] {
        remove_netns(&format!("mpp-{run}-{role}"));
    }
    for k in 1..=MAX_CHAIN {
        remove_netns(&format!("mpp-{run}-r{k}"));
    }
}

/// Addresses of the lab (see the module docs).
pub mod addr {
    pub const CLIENT1: &str = "192.0.2.1";
    pub const ROUTER1: &str = "192.0.2.2";
    pub const CLIENT2: &str = "198.51.100.1";
    pub const ROUTER2: &str = "198.51.100.2";
    pub const ROUTER_S: &str = "203.0.113.1";
    pub const SERVER: &str = "203.0.113.2";
    pub const CLIENT1_V6: &str = "2001:db8:1::1";
    pub const ROUTER1_V6: &str = "2001:db8:1::2";
    pub const CLIENT2_V6: &str = "2001:db8:2::1";
    pub const ROUTER2_V6: &str = "2001:db8:2::2";
    pub const ROUTER_S_V6: &str = "2001:db8:3::1";
    pub const SERVER_V6: &str = "2001:db8:3::2";
    /// A second server address, announced with ADD_ADDR where a test asks for it.
    pub const SERVER_EXTRA: &str = "203.0.113.3";
    pub const SERVER_EXTRA_V6: &str = "2001:db8:3::3";
}

/// Interface names inside the namespaces.
pub mod ifname {
    pub const C1: &str = "c-m1";
    pub const C2: &str = "c-m2";
    pub const M1: &str = "m-c1";
    pub const M2: &str = "m-c2";
    pub const MS: &str = "m-s";
    pub const S: &str = "s-m";
}

/// A lab's run name, unique on the host: this process's id and a counter, skipping any name a
/// lab that is still up holds (a kept lab of an earlier process with the same id).
fn new_run() -> String {
    loop {
        let run = format!("{}-{}", std::process::id(), NEXT_RUN.fetch_add(1, Ordering::Relaxed));
        if !std::path::Path::new(&format!("/run/netns/mpp-{run}-c")).exists() {
            return run;
        }
    }
}

/// Client, router/middlebox and server namespaces, wired as in the design.
pub struct Lab {
    pub run: String,
    pub c: Netns,
    pub m: Netns,
    pub s: Netns,
}

impl Lab {
    /// Builds the topology with namespaces named `mpp-<run>-c|m|s`, unique per process and lab.
    pub fn up() -> Self {
        let run = new_run();
        let c = Netns::new(&format!("mpp-{run}-c"));
        let m = Netns::new(&format!("mpp-{run}-m"));
        let s = Netns::new(&format!("mpp-{run}-s"));
        let lab = Self { run, c, m, s };
        lab.wire();
        lab
    }

    /// Leaves the namespaces (and whatever runs in them) in place; returns the run name, for
    /// `cargo xtask lab exec|down`.
    pub fn keep(self) -> String {
        let run = self.run.clone();
        std::mem::forget(self);
        run
    }

    fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        ip(&["link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name]);
        ip(&["-n", &a.name, "link", "set", a_if, "up"]);
        ip(&["-n", &b.name, "link", "set", b_if, "up"]);
    }

    fn addr(ns: &Netns, dev: &str, a: &str) {
        if a.contains(':') {
            ip(&["-n", &ns.name, "addr", "add", a, "dev", dev, "nodad"]);
        } else {
            ip(&["-n", &ns.name, "addr", "add", a, "dev", dev]);
        }
    }

    fn wire(&self) {
        use addr::*;
        use ifname::*;
        Self::veth(&self.c, C1, &self.m, M1);
        Self::veth(&self.c, C2, &self.m, M2);
        Self::veth(&self.s, S, &self.m, MS);
        for (ns, dev, a) in [
            (&self.c, C1, format!("{CLIENT1}/26")),
            (&self.m, M1, format!("{ROUTER1}/26")),
            (&self.c, C2, format!("{CLIENT2}/26")),
            (&self.m, M2, format!("{ROUTER2}/26")),
            (&self.m, MS, format!("{ROUTER_S}/26")),
            (&self.s, S, format!("{SERVER}/26")),
            (&self.c, C1, format!("{CLIENT1_V6}/64")),
            (&self.m, M1, format!("{ROUTER1_V6}/64")),
            (&self.c, C2, format!("{CLIENT2_V6}/64")),
            (&self.m, M2, format!("{ROUTER2_V6}/64")),
            (&self.m, MS, format!("{ROUTER_S_V6}/64")),
            (&self.s, S, format!("{SERVER_V6}/64")),
        ] {
            Self::addr(ns, dev, &a);
        }
        // The first path is the default; the second is used by source address (for joins).
        ip(&["-n", &self.c.name, "route", "add", "default", "via", ROUTER1, "dev", C1]);
        ip(&["-n", &self.c.name, "-6", "route", "add", "default", "via", ROUTER1_V6, "dev", C1]);
        ip(&["-n", &self.c.name, "rule", "add", "from", CLIENT2, "table", "102"]);
        ip(&["-n", &self.c.name, "route", "add", "default", "via", ROUTER2, "dev", C2, "table", "102"]);
        ip(&["-n", &self.c.name, "-6", "rule", "add", "from", CLIENT2_V6, "table", "102"]);
        ip(&[
            "-n",
            &self.c.name,
            "-6",
            "route",
            "add",
            "default",
            "via",
            ROUTER2_V6,
            "dev",
            C2,
            "table",
            "102",
        ]);
        ip(&["-n", &self.s.name, "route", "add", "default", "via", ROUTER_S, "dev", S]);
        ip(&["-n", &self.s.name, "-6", "route", "add", "default", "via", ROUTER_S_V6, "dev", S]);
        self.m.sysctl("net.ipv4.ip_forward=1");
        self.m.sysctl("net.ipv6.conf.all.forwarding=1");
        for ns in [&self.c, &self.s] {
            ns.sysctl("net.mptcp.enabled=1");
        }
    }
}

impl Lab {
    /// Gives the server a second address on its link and has its path manager announce it
    /// (ADD_ADDR) on every MPTCP connection.
    pub fn server_announces(&self, v4: &str, v6: &str) {
        Self::addr(&self.s, ifname::S, &format!("{v4}/26"));
        Self::addr(&self.s, ifname::S, &format!("{v6}/64"));
        for a in [v4, v6] {
            ip(&["-n", &self.s.name, "mptcp", "endpoint", "add", a, "dev", ifname::S, "signal"]);
        }
    }
}

/// A chain of routers between one client and one server, to locate a box on the path:
/// `c — r1 — r2 — … — rN — s`. The client has 192.0.2.1/26 and 2001:db8:1::1/64 towards r1
/// (.2 / ::2), the routers link to each other over 198.51.100.4i/30 and 2001:db8:10:i::/64, rN
/// reaches the server over 203.0.113.1/26 ↔ 203.0.113.2/26 (2001:db8:3::1 ↔ ::2): the
/// server's address is the three-namespace lab's. Namespaces `mpp-<run>-c|r1..rN|s`.
pub struct Chain {
    pub run: String,
    pub c: Netns,
    pub routers: Vec<Netns>,
    pub s: Netns,
}

/// The most routers a chain has.
pub const MAX_CHAIN: usize = 8;

impl Chain {
    pub fn up(n: usize) -> Self {
        assert!((1..=MAX_CHAIN).contains(&n), "a chain has 1 to {MAX_CHAIN} routers");
        let run = new_run();
        let c = Netns::new(&format!("mpp-{run}-c"));
        let routers: Vec<Netns> = (1..=n).map(|i| Netns::new(&format!("mpp-{run}-r{i}"))).collect();
        let s = Netns::new(&format!("mpp-{run}-s"));
        let chain = Self { run, c, routers, s };
        chain.wire();
        chain
    }

    /// Router `k` (1-based: the k-th hop from the client).
    pub fn router(&self, k: usize) -> &Netns {
        &self.routers[k - 1]
    }

    /// The address hop `k` answers from (its interface towards the client), IPv4 or IPv6.
    pub fn hop_address(&self, k: usize, v6: bool) -> String {
        match (k, v6) {
            (1, false) => addr::ROUTER1.into(),
            (1, true) => addr::ROUTER1_V6.into(),
            (k, false) => format!("198.51.100.{}", 4 * (k - 1) - 2),
            (k, true) => format!("2001:db8:10:{}::2", k - 1),
        }
    }

    fn wire(&self) {
        use addr::*;
        let n = self.routers.len();
        // Link i joins node i and node i + 1 (node 0 is the client, node n + 1 the server).
        let node = |i: usize| -> (&Netns, String) {
            match i {
                0 => (&self.c, "c".into()),
                i if i == n + 1 => (&self.s, "s".into()),
                i => (&self.routers[i - 1], format!("r{i}")),
            }
        };
        for i in 0..=n {
            let ((a, an), (b, bn)) = (node(i), node(i + 1));
            let (a_if, b_if) = (format!("{an}-{bn}"), format!("{bn}-{an}"));
            Lab::veth(a, &a_if, b, &b_if);
            let (a4, b4, a6, b6) = match i {
                0 => (
                    CLIENT1.to_string() + "/26",
                    ROUTER1.to_string() + "/26",
                    CLIENT1_V6.to_string() + "/64",
                    ROUTER1_V6.to_string() + "/64",
                ),
                i if i == n => (
                    ROUTER_S.to_string() + "/26",
                    SERVER.to_string() + "/26",
                    ROUTER_S_V6.to_string() + "/64",
                    SERVER_V6.to_string() + "/64",
                ),
                i => (
                    format!("198.51.100.{}/30", 4 * i - 3),
                    format!("198.51.100.{}/30", 4 * i - 2),
                    format!("2001:db8:10:{i}::1/64"),
                    format!("2001:db8:10:{i}::2/64"),
                ),
            };
            for (ns, dev, a) in [(a, &a_if, a4), (b, &b_if, b4), (a, &a_if, a6), (b, &b_if, b6)] {
                Lab::addr(ns, dev, &a);
            }
        }
        // Towards the server by default (router k + 1's address towards the client); back to the
        // client's link by a route of its own.
        let prev_hop = |i: usize, v6: bool| -> String {
            // The address of node i - 1 on link i - 1.
            match (i, v6) {
                (1, false) => CLIENT1.into(),
                (1, true) => CLIENT1_V6.into(),
                (i, false) => format!("198.51.100.{}", 4 * (i - 1) - 3),
                (i, true) => format!("2001:db8:10:{}::1", i - 1),
            }
        };
        ip(&["-n", &self.c.name, "route", "add", "default", "via", ROUTER1]);
        ip(&["-n", &self.c.name, "-6", "route", "add", "default", "via", ROUTER1_V6]);
        ip(&["-n", &self.s.name, "route", "add", "default", "via", ROUTER_S]);
        ip(&["-n", &self.s.name, "-6", "route", "add", "default", "via", ROUTER_S_V6]);
        for (k, r) in self.routers.iter().enumerate().map(|(i, r)| (i + 1, r)) {
            if k < n {
                ip(&["-n", &r.name, "route", "add", "default", "via", &self.hop_address(k + 1, false)]);
                ip(&["-n", &r.name, "-6", "route", "add", "default", "via", &self.hop_address(k + 1, true)]);
            }
            if k > 1 {
                ip(&["-n", &r.name, "route", "add", "192.0.2.0/26", "via", &prev_hop(k, false)]);
                ip(&["-n", &r.name, "-6", "route", "add", "2001:db8:1::/64", "via", &prev_hop(k, true)]);
            }
            r.sysctl("net.ipv4.ip_forward=1");
            r.sysctl("net.ipv6.conf.all.forwarding=1");
            // Every time exceeded answered: the probes of one trace come faster than Linux's
            // default of one per second per destination after a burst.
            r.sysctl("net.ipv4.icmp_ratelimit=0");
            r.sysctl("net.ipv6.icmp.ratelimit=0");
        }
        for ns in [&self.c, &self.s] {
            ns.sysctl("net.mptcp.enabled=1");
        }
    }
}

/// setpriv as an unprivileged user (nobody) keeping only these capabilities. `ip netns exec`
/// gives its command a /sys of its own, where tracefs is not mounted (on a host it is); root
/// mounts it first, as a host's boot does.
pub fn as_nobody_with(caps: &str) -> Vec<String> {
    let mut w: Vec<String> = ["sh", "-c", "mount -t tracefs nodev /sys/kernel/tracing && exec \"$0\" \"$@\""]
        .map(String::from)
        .to_vec();
    w.extend(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from));
    if !caps.is_empty() {
        w.push(format!("--inh-caps={caps}"));
        w.push(format!("--ambient-caps={caps}"));
    }
    w
}

/// A child process killed (and reaped) on drop.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    /// Waits up to `timeout` for the child to exit: its exit code (None: killed by a signal, or
    /// still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until the child's log file shows `needle`. Fails with the log when the child exits
    /// first, when the log shows `error:` (the child's own account of why it will not get
    /// ready), or after `timeout`.
    pub fn wait_ready(
        &mut self,
        log: &Path,
        needle: &str,
        timeout: Duration,
        what: &str,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let read = || std::fs::read_to_string(log).unwrap_or_default();
        while start.elapsed() < timeout {
            let text = read();
            if text.contains(needle) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.0.try_wait() {
                anyhow::bail!("{what} exited ({status}) before it was ready:\n{}", read());
            }
            if text.contains("error:") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("{what} did not log {needle:?} within {timeout:?}:\n{}", read())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Programs attached to `dev`, by TCX (as the kernel lists them) and by tc (clsact filters);
/// empty when none.
pub fn attached_programs(ns: &Netns, dev: &str) -> String {
    let o = sh(ns.cmd(crate::peer_bin()).args(["tcx", "--iface", dev]));
    let tcx: serde_json::Value = serde_json::from_slice(&o.stdout).expect("tcx lists JSON");
    let mut s = String::new();
    for dir in ["ingress", "egress"] {
        if tcx[dir].as_array().is_some_and(|a| !a.is_empty()) {
            s.push_str(&format!("tcx {dir}: {} ", tcx[dir]));
        }
        let o = ns.cmd("tc").args(["filter", "show", "dev", dev, dir]).output().expect("tc runs");
        s.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    s
}
