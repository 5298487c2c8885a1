//! `cargo xtask measure`: builds everything, creates a namespace lab, and shows what the observer
//! sees on real MPTCP traffic under a few path conditions, ending with a table of flow summaries.

use std::time::Instant;

use anyhow::bail;
use mptcp_probe_tests::{
    lab::{addr, ifname, middlebox, Lab},
    peer,
    probe::Watcher,
};
use serde_json::Value;

struct Scenario {
    name: &'static str,
    /// iptables rule in the router's mangle/FORWARD chain, if any.
    middlebox: Option<middlebox::Rule>,
    server: String,
    tcp: bool,
    /// What the client-side summary must say.
    expect: &'static str,
}

fn scenarios() -> Vec<Scenario> {
    let v4 = format!("{}:8080", addr::SERVER);
    let v6 = format!("[{}]:8080", addr::SERVER_V6);
    vec![
        Scenario {
            name: "clean path, IPv4",
            middlebox: None,
            server: v4.clone(),
            tcp: false,
            expect: "established",
        },
        Scenario { name: "clean path, IPv6", middlebox: None, server: v6, tcp: false, expect: "established" },
        Scenario {
            name: "MP_CAPABLE stripped from SYN",
            middlebox: Some(middlebox::STRIP_MPTCP_FROM_SYN),
            server: v4.clone(),
            tcp: false,
            expect: "fallback",
        },
        Scenario {
            name: "MP_CAPABLE stripped from SYN/ACK",
            middlebox: Some(middlebox::STRIP_MPTCP_FROM_SYNACK),
            server: v4.clone(),
            tcp: false,
            expect: "fallback",
        },
        Scenario {
            name: "plain TCP (A/B)",
            middlebox: None,
            server: v4,
            tcp: true,
            expect: "not_negotiated",
        },
    ]
}

fn hs(flow: &Value, which: &str) -> String {
    let h = &flow["handshake"][which];
    if h.is_null() {
        return "-".into();
    }
    match (h["mptcp"].as_str(), h["mptcp_len"].as_u64()) {
        (Some(m), Some(l)) => format!("{}/{l}", m.to_uppercase()),
        _ => "no MPTCP".into(),
    }
}

pub fn run() -> anyhow::Result<()> {
    crate::setup::run(&crate::setup::SetupOpts { with_test_tools: false })?;
    crate::build_release()?;
    if !mptcp_probe_tests::is_root() {
        bail!("cargo xtask measure needs root (it creates network namespaces and loads eBPF programs)");
    }
    // Read by the lab helpers; set before any thread starts.
    std::env::set_var("MPTCP_PROBE_BIN", crate::release_bin("mptcp-probe"));
    std::env::set_var("MPTCP_PEER_BIN", crate::release_bin("mptcp-peer"));
    println!(
        "Building a namespace lab: client 192.0.2.1 -- router 192.0.2.2|203.0.113.1 -- server 203.0.113.2"
    );
    let lab = Lab::up();
    let list = scenarios();
    let mut rows = Vec::new();
    let mut failures = 0;
    for (i, sc) in list.iter().enumerate() {
        let started = Instant::now();
        println!("\n[{}/{}] {}", i + 1, list.len(), sc.name);
        if let Some(rule) = sc.middlebox {
            middlebox::apply(&lab.m, rule);
            println!("      router: {}", middlebox::describe(rule));
        }
        let _srv = peer::server(&lab.s, &sc.server, 1, sc.tcp);
        let watch = Watcher::start(&lab.c, &["--iface", ifname::C1]);
        let port = 41000 + i as u16;
        let res = peer::client(&lab.c, &sc.server, 200_000, port, sc.tcp);
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let out = watch.stop();
        middlebox::clear(&lab.m);
        for p in out.packets().filter(|p| p["local_port"] == port) {
            let opts: Vec<String> = p["mptcp_options"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| format!("{}/{}", o["subtype"].as_str().unwrap_or("?"), o["len"]))
                        .collect()
                })
                .unwrap_or_default();
            let why: Vec<&str> =
                p["why"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            println!(
                "      {:<2} {:<3} len={:<6} {:<28} ({})",
                p["direction"].as_str().unwrap_or(""),
                p["tcp_flags"].as_str().unwrap_or(""),
                p["payload_len"].as_u64().unwrap_or(0),
                if opts.is_empty() { "no MPTCP option".to_string() } else { opts.join(" ") },
                why.join(",")
            );
        }
        let flow = out.flows().find(|f| f["local_port"] == port).cloned().unwrap_or(Value::Null);
        let state = flow["mptcp"].as_str().unwrap_or("no summary").to_string();
        let ok = state == sc.expect && res["intact"] == true;
        if !ok {
            failures += 1;
        }
        let evidence: Vec<&str> = flow["fallback_evidence"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        rows.push(vec![
            sc.name.to_string(),
            state,
            hs(&flow, "syn"),
            hs(&flow, "syn_ack"),
            hs(&flow, "third_ack"),
            format!("{}", flow["options"]["tx"]["dss"].as_u64().unwrap_or(0)),
            if evidence.is_empty() { "-".into() } else { evidence.join("; ") },
            format!("{:.1}s", started.elapsed().as_secs_f64()),
            if ok { "✓".into() } else { format!("✗ (expected {})", sc.expect) },
        ]);
    }
    drop(lab);
    let header = ["scenario", "mptcp", "SYN", "SYN/ACK", "third ACK", "DSS tx", "evidence", "time", "ok"];
    print_table(&header, &rows);
    if failures > 0 {
        bail!("{failures} scenario(s) did not show what they should");
    }
    Ok(())
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let width =
        |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ")
    };
    println!();
    println!("{}", line(header.to_vec()));
    println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for r in rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
