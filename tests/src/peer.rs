//! Drives the `mptcp-peer` test binary inside namespaces.

use std::{process::Stdio, time::Duration};

use serde_json::Value;

use crate::lab::{sh, Child, Netns};

/// Starts a server serving `count` connections on `listen` ("ADDR:PORT", IPv6 in brackets).
pub fn server(ns: &Netns, listen: &str, count: u32, tcp: bool) -> Child {
    let mut cmd = ns.cmd(crate::peer_bin());
    cmd.args(["server", "--listen", listen, "--count", &count.to_string()]).stdin(Stdio::null());
    if tcp {
        cmd.arg("--tcp");
    }
    let child = Child::spawn(&mut cmd);
    wait_listening(ns, listen);
    child
}

/// Waits until `listen`'s port shows in the namespace's table of listening sockets.
pub fn wait_listening(ns: &Netns, listen: &str) {
    let port = listen.rsplit(':').next().unwrap_or_default().to_string();
    for _ in 0..200 {
        let out = ns.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]).output();
        if out.map(|o| !o.stdout.is_empty()).unwrap_or(false) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server on {listen} did not come up");
}

/// An unmodified HTTP server (Python's) made MPTCP by `mptcpize`, on port 80 of `addr`.
pub fn mptcpize_http_server(ns: &Netns, addr: &str) -> Child {
    let child = Child::spawn(
        ns.cmd("mptcpize")
            .args(["run", "python3", "-m", "http.server", "80", "--bind", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(ns, &format!("{addr}:80"));
    child
}

/// An unmodified `curl` made MPTCP by `mptcpize`, from `local_port`: the HTTP status it got.
pub fn mptcpize_curl(ns: &Netns, url: &str, local_port: u16) -> String {
    let out = crate::lab::sh(ns.cmd("mptcpize").args([
        "run",
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--local-port",
        &local_port.to_string(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a client transfer of `bytes` from `bind_port` (0: any) and returns its JSON report
/// (`is_mptcp`, `intact`, `local_port`).
pub fn client(ns: &Netns, connect: &str, bytes: usize, bind_port: u16, tcp: bool) -> Value {
    client_holding(ns, connect, bytes, bind_port, tcp, 0)
}

/// As [`client`], staying quiet for `hold` seconds after sending, before closing.
pub fn client_holding(
    ns: &Netns,
    connect: &str,
    bytes: usize,
    bind_port: u16,
    tcp: bool,
    hold: u64,
) -> Value {
    let mut cmd = ns.cmd(crate::peer_bin());
    cmd.args([
        "client",
        "--hold",
        &hold.to_string(),
        "--connect",
        connect,
        "--bytes",
        &bytes.to_string(),
        "--bind-port",
        &bind_port.to_string(),
    ]);
    if tcp {
        cmd.arg("--tcp");
    }
    let out = sh(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("peer client printed {text:?}: {e}"))
}
