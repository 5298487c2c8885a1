//! End-to-end tests of `mptcp-probe daemon` in network namespaces (root needed): connections of
//! unmodified programs and of the test peers, clean and through a router that strips
//! MP_CAPABLE, counted on `/metrics`, scraped by a real Prometheus and checked by `promtool`.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use mptcp_probe_tests::{
    collect::Collector,
    daemon::{sample, Daemon, Prometheus},
    foreign::{drop_kernel_rsts, foreign_client, resolve_the_server, Family},
    lab::{addr, as_nobody_with, attached_programs, ifname, sh, Lab, Netns},
    matrix, peer, probe_bin, scenario, skip_unless_e2e,
    workspace::MIDDLEBOX,
};

const LISTEN: &str = "127.0.0.1:9725";

fn config(extra: &str) -> String {
    format!("interfaces = [\"{}\"]\n{extra}\n[metrics]\nlisten = \"{LISTEN}\"\n", ifname::C1)
}

fn connections(text: &str, outcome: &str) -> Option<f64> {
    sample(text, &format!("mptcp_probe_connections_total{{outcome=\"{outcome}\",namespace=\"host\"}}"))
}

fn promtool(args: &[&str]) -> Command {
    let mut c = Command::new("promtool");
    c.args(args).current_dir(mptcp_probe_tests::workspace::workspace_root().join("deploy"));
    c
}

/// `promtool check metrics` on an exposition: its complaints, empty when there are none.
fn promtool_check(text: &str) -> String {
    let mut child = promtool(&["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; cargo xtask setup installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        said
    } else {
        format!("{} {said}", out.status)
    }
}

#[test]
fn connections_are_counted_by_outcome_and_reason_and_prometheus_scrapes_them() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let daemon = Daemon::start(&lab.c, LISTEN, &config(""));
    let prometheus = Prometheus::start(&lab.c, "127.0.0.1:9090", &[LISTEN]);

    // An unmodified curl and HTTP server under mptcpize, the test peers over MPTCP and over
    // TCP, then MPTCP through a router that strips MP_CAPABLE from the SYN.
    let _http = peer::mptcpize_http_server(&lab.s, addr::SERVER);
    assert_eq!(peer::mptcpize_curl(&lab.c, &format!("http://{}:80/", addr::SERVER), 40201), "200");
    let mptcp_server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &mptcp_server, 2, false);
    let res = peer::client(&lab.c, &mptcp_server, 20_000, 40202, false);
    assert_eq!(res["is_mptcp"], 1, "{res}");
    let tcp_server = format!("{}:8081", addr::SERVER);
    let _tcp = peer::server(&lab.s, &tcp_server, 1, true);
    let res = peer::client(&lab.c, &tcp_server, 20_000, 40203, true);
    assert_eq!(res["intact"], true, "{res}");
    {
        let _strip = scenario::apply(&lab, scenario::named("syn-strip"), &MIDDLEBOX.path()).unwrap();
        let res = peer::client(&lab.c, &mptcp_server, 20_000, 40204, false);
        assert_eq!(res["is_mptcp"], 0, "the router did not strip MP_CAPABLE: {res}");
    }

    let text = daemon.scrape_until(Duration::from_secs(15), |t| {
        connections(t, "mptcp") == Some(2.0) && connections(t, "fallback") == Some(1.0)
    });
    let log = daemon.log();
    assert_eq!(connections(&text, "mptcp"), Some(2.0), "{text}\n{log}");
    assert_eq!(connections(&text, "fallback"), Some(1.0), "{text}\n{log}");
    assert_eq!(connections(&text, "plain"), Some(1.0), "{text}\n{log}");
    // The client saw its SYN/ACK come back without MP_CAPABLE; the kernel counted the same.
    assert_eq!(
        sample(&text, "mptcp_probe_fallbacks_total{reason=\"synack_without_mptcp\",namespace=\"host\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "mptcp_probe_kernel_mib_total{counter=\"MPCapableFallbackSYNACK\",namespace=\"host\"}")
            >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "mptcp_probe_kernel_mib_total{counter=\"MPCapableSYNTX\",namespace=\"host\"}")
            >= Some(3.0),
        "{text}"
    );
    // Three SYNs and three third ACKs sent with MP_CAPABLE; DSS both ways.
    let options = |subtype: &str, dir: &str| {
        sample(
            &text,
            &format!(
                "mptcp_probe_options_total{{subtype=\"{subtype}\",direction=\"{dir}\",namespace=\"host\"}}"
            ),
        )
    };
    assert!(options("mp_capable", "tx") >= Some(5.0), "{text}");
    assert!(options("dss", "tx") >= Some(2.0) && options("dss", "rx") >= Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "mptcp_probe_ringbuf_dropped_events_total{namespace=\"host\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(sample(&text, "mptcp_probe_packets_inspected_total{namespace=\"host\"}") > Some(20.0), "{text}");
    assert_eq!(
        sample(&text, "mptcp_probe_connection_duration_seconds_count{outcome=\"mptcp\",namespace=\"host\"}"),
        Some(2.0)
    );
    // No address or port in any label.
    for leaked in [addr::SERVER, addr::CLIENT1, "40201", "8080"] {
        assert!(!text.contains(leaked), "{leaked} in the exposition:\n{text}");
    }
    assert_eq!(promtool_check(&text), "", "promtool check metrics on:\n{text}");

    // OpenMetrics when asked for it, as Prometheus does.
    let om = daemon.get("/metrics", &["-H", "Accept: application/openmetrics-text;version=1.0.0"]);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE mptcp_probe_connections counter"), "{om}");
    assert!(daemon.get("/", &[]).contains("/metrics"));

    // Prometheus scraped them: its query API returns the series.
    let v = prometheus.value_until(
        "sum(mptcp_probe_connections_total{outcome=\"fallback\"})",
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    assert_eq!(v, Some(1.0), "{}", prometheus.query("mptcp_probe_connections_total"));
    let up = prometheus.value_until("up{job=\"mptcp-probe\"}", Duration::from_secs(5), |v| v == 1.0);
    assert_eq!(up, Some(1.0), "{}", prometheus.query("up"));

    // SIGTERM detaches everything.
    assert!(attached_programs(&lab.c, ifname::C1).contains("tc_ingress"));
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
    assert_eq!(attached_programs(&lab.c, ifname::C1), "", "left attached:\n{}", stopped.log);
}

#[test]
fn data_sent_again_at_the_mptcp_level_is_counted_and_the_flow_named() {
    skip_unless_e2e!();
    const PORT: u16 = 40211;
    let family = Family::V4;
    let lab = Lab::up();
    let daemon = Daemon::start(&lab.c, LISTEN, &config(""));
    let _listener = peer::server(&lab.s, &family.server(), 1, false);
    drop_kernel_rsts(&lab.c, family, PORT);
    resolve_the_server(&lab, family);
    // The foreign client (not Linux's MPTCP) sends the data of three segments again at the data
    // level, on new subflow sequence numbers, as Linux does when its MPTCP retransmission timer
    // fires; the listener drops them as duplicate data.
    let report = foreign_client(
        &lab.c,
        family,
        PORT,
        &["--timestamps", "--bytes", "100000", "--late-after", "50", "--late", "resend:3"],
    );
    assert_eq!(report["late_sent"], serde_json::json!(["resend:3"]), "{report}");
    assert_eq!(report["intact"], true, "{report}");
    let again = |t: &str, dir: &str| {
        sample(
            t,
            &format!(
                "mptcp_probe_flows_mptcp_retransmitting_total{{direction=\"{dir}\",namespace=\"host\"}}"
            ),
        )
    };
    let text = daemon.scrape_until(Duration::from_secs(15), |t| again(t, "tx").is_some());
    let log = daemon.log();
    assert_eq!((again(&text, "tx"), again(&text, "rx")), (Some(1.0), None), "{text}\n{log}");
    assert_eq!(connections(&text, "mptcp"), Some(1.0), "{text}\n{log}");
    let named = format!(
        "{}:{PORT} -> {}: this host sent data again at the MPTCP level, 1 time(s) on this subflow",
        addr::CLIENT1,
        family.server()
    );
    assert!(log.contains(&named), "the log does not say {named:?}:\n{log}");
    assert_eq!(promtool_check(&text), "", "promtool check metrics on:\n{text}");
}

#[test]
fn sighup_applies_a_good_configuration_and_keeps_the_running_one_for_a_bad() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let json_log = "log = { format = \"json\" }";
    let daemon = Daemon::start(&lab.c, LISTEN, &config(json_log));
    let wait_log = |needle: &str| {
        for _ in 0..100 {
            if daemon.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not log {needle:?}:\n{}", daemon.log());
    };

    std::fs::write(&daemon.config, config(&format!("{json_log}\nflow_table_sizes = 1"))).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_log("unknown field `flow_table_sizes`");
    assert!(daemon.log().contains("the running configuration stays"), "{}", daemon.log());

    std::fs::write(&daemon.config, config(&format!("{json_log}\nflow_table_size = 4096"))).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_log("flow_table_size take effect at the next start");

    // Still serving, still observing.
    assert!(daemon.scrape().contains("mptcp_probe_connections_total"));
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
    // Every line of the log is a JSON object with its level and message.
    for line in stopped.log.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", stopped.log));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
    assert!(stopped.log.contains("the running configuration stays"), "{}", stopped.log);
}

#[test]
fn a_bad_configuration_is_named_and_exits_2() {
    skip_unless_e2e!(binaries);
    let dir = mptcp_probe_tests::probe::TempDir::new("daemon-config");
    let good = dir.0.join("good.toml");
    std::fs::write(&good, "[metrics]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let o = sh(Command::new(mptcp_probe_tests::probe_bin())
        .args(["daemon", "--check-config", "--config"])
        .arg(&good));
    assert!(String::from_utf8_lossy(&o.stdout).contains("valid"));

    let bad = dir.0.join("bad.toml");
    for (text, says) in [
        ("[metrics]\nlisten = \"nowhere\"\n", "invalid socket address"),
        ("flow_table_size = 1\n", "flow_table_size = 1 is outside"),
        ("[nonsense]\n", "unknown field `nonsense`"),
    ] {
        std::fs::write(&bad, text).unwrap();
        for extra in [&["--check-config"][..], &[][..]] {
            let o = Command::new(mptcp_probe_tests::probe_bin())
                .args(["daemon", "--config"])
                .arg(&bad)
                .args(extra)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{text}: {err}");
            assert!(err.contains("bad.toml") && err.contains(says), "{text}: {err}");
        }
    }
    let o = Command::new(mptcp_probe_tests::probe_bin())
        .args(["daemon", "--config", "/nonexistent/mptcp-probe.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/mptcp-probe.toml"));
}

#[test]
fn the_shipped_alerting_rules_are_valid_and_pass_their_unit_tests() {
    skip_unless_e2e!();
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let o = promtool(&args).output().expect("promtool runs (cargo xtask setup installs prometheus)");
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "promtool {}: {said}", args.join(" "));
        assert!(said.contains("SUCCESS"), "promtool {}: {said}", args.join(" "));
    }
}

#[test]
fn an_unprivileged_user_with_the_documented_capabilities_observes_and_without_them_is_told() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let caps = "+bpf,+perfmon,+net_admin,+dac_read_search";
    let wrapper = as_nobody_with(caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let daemon = Daemon::start_as(&lab.c, LISTEN, &config(""), &wrapper);
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let res = peer::client(&lab.c, &server, 20_000, 40211, false);
    assert_eq!(res["is_mptcp"], 1, "{res}");
    let text = daemon.scrape_until(Duration::from_secs(15), |t| connections(t, "mptcp") == Some(1.0));
    assert_eq!(connections(&text, "mptcp"), Some(1.0), "{text}\n{}", daemon.log());
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
    assert_eq!(attached_programs(&lab.c, ifname::C1), "", "left attached:\n{}", stopped.log);

    // Each capability missing is named, and nothing is left attached.
    for (caps, says) in [
        ("+bpf,+perfmon,+net_admin", "CAP_DAC_READ_SEARCH"),
        ("+perfmon,+net_admin,+dac_read_search", "missing: CAP_BPF"),
        ("+bpf,+perfmon,+dac_read_search", "missing: CAP_NET_ADMIN"),
    ] {
        let dir = mptcp_probe_tests::probe::TempDir::new("daemon-caps");
        let conf = dir.0.join("c.toml");
        std::fs::write(&conf, config("")).unwrap();
        let bin = dir.0.join("mptcp-probe");
        std::fs::copy(mptcp_probe_tests::probe_bin(), &bin).unwrap();
        for p in [&dir.0, &conf, &bin] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let wrapper = as_nobody_with(caps);
        let o = lab
            .c
            .cmd(&wrapper[0])
            .args(&wrapper[1..])
            .arg(&bin)
            .arg("daemon")
            .arg("--config")
            .arg(&conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{caps}: {err}");
        assert!(err.contains(says), "{caps}: {err}");
        assert_eq!(attached_programs(&lab.c, ifname::C1), "", "{caps}: left attached");
    }
}

#[test]
fn the_shipped_systemd_units_verify() {
    skip_unless_e2e!(binaries);
    let root = mptcp_probe_tests::workspace::workspace_root();
    let dir = mptcp_probe_tests::probe::TempDir::new("unit");
    for name in ["mptcp-probe.service", "mptcp-probe-serve.service", "mptcp-probe-collect.service"] {
        // The unit as installed, with the binary where this build has it.
        mptcp_probe_tests::daemon::verify_unit(
            &root.join("deploy").join(name),
            "/usr/local/bin/mptcp-probe",
            &mptcp_probe_tests::probe_bin(),
            &dir.0,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

#[test]
fn a_killed_daemon_leaves_nothing_attached() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let daemon = Daemon::start(&lab.c, LISTEN, &config(""));
    assert!(attached_programs(&lab.c, ifname::C1).contains("tc_ingress"));
    daemon.signal(libc::SIGKILL);
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, None, "killed, not exited: {}", stopped.log);
    assert_eq!(attached_programs(&lab.c, ifname::C1), "", "left attached after SIGKILL");
}

#[test]
fn periodic_checks_become_metrics_and_a_target_that_cannot_be_measured_is_counted_failed() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let (_serve, _dir) = matrix::serve(&lab.s, &probe_bin()).unwrap_or_else(|e| panic!("{e:#}"));
    let checks = format!(
        "[[checks]]\nname = \"lab\"\nserver = \"{}\"\ntests = [\"handshake\"]\ninterval_seconds = 600\n\
         jitter_seconds = 0\n[[checks]]\nname = \"nowhere\"\nserver = \"127.0.0.1\"\ncontrol_port = 9\n\
         tests = [\"handshake\"]\ninterval_seconds = 600\njitter_seconds = 0\ntimeout_seconds = 2\n",
        addr::SERVER
    );
    let daemon = Daemon::start(&lab.c, LISTEN, &format!("{}{checks}", config("")));
    let runs = |t: &str, target: &str, result: &str| {
        sample(t, &format!("mptcp_probe_check_runs_total{{target=\"{target}\",result=\"{result}\"}}"))
    };
    let text = daemon.scrape_until(Duration::from_secs(60), |t| {
        runs(t, "lab", "done") == Some(1.0) && runs(t, "nowhere", "failed") == Some(1.0)
    });
    let log = daemon.log();
    assert_eq!(runs(&text, "lab", "done"), Some(1.0), "{text}\n{log}");
    assert_eq!(runs(&text, "nowhere", "failed"), Some(1.0), "{text}\n{log}");
    assert_eq!(runs(&text, "lab", "failed"), None, "{text}");
    assert_eq!(
        sample(&text, "mptcp_probe_check_verdicts_total{target=\"lab\",verdict=\"mptcp_ok\"}"),
        Some(1.0),
        "{text}\n{log}"
    );
    assert_eq!(sample(&text, "mptcp_probe_check_mptcp_usable{target=\"lab\"}"), Some(1.0), "{text}");
    assert!(sample(&text, "mptcp_probe_check_last_run_timestamp_seconds{target=\"lab\"}") > Some(1.7e9));
    assert_eq!(sample(&text, "mptcp_probe_check_last_run_timestamp_seconds{target=\"nowhere\"}"), None);
    assert!(log.contains("check nowhere: could not measure (1 in a row)"), "{log}");
    // The daemon's own observer counted the check's MPTCP connections among the host's.
    let counted = daemon.scrape_until(Duration::from_secs(10), |t| connections(t, "mptcp") >= Some(1.0));
    assert!(connections(&counted, "mptcp") >= Some(1.0), "{counted}");
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
}

#[test]
fn the_shipped_alert_fires_when_a_router_starts_stripping_mp_capable() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let daemon = Daemon::start(&lab.c, LISTEN, &config(""));
    // The shipped rules as they are, but firing at once rather than after 5 minutes.
    let rules =
        std::fs::read_to_string(mptcp_probe_tests::workspace::workspace_root().join("deploy/alerts.yml"))
            .unwrap();
    assert!(rules.contains("for: 5m"), "{rules}");
    let rules = rules.replace("for: 5m", "for: 0s");
    let prometheus = Prometheus::start_with_rules(&lab.c, "127.0.0.1:9090", &[LISTEN], Some(&rules));
    let firing = "ALERTS{alertname=\"MptcpFallbackShareHigh\",alertstate=\"firing\"}";
    const EACH: u16 = 12;
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 2 * u32::from(EACH), false);
    for i in 0..EACH {
        let res = peer::client(&lab.c, &server, 1000, 40300 + i, false);
        assert_eq!(res["is_mptcp"], 1, "{res}");
    }
    // A clean path: counted, and no alert over several evaluations.
    let clean = prometheus.value_until(
        "sum(mptcp_probe_connections_total{outcome=\"mptcp\"})",
        Duration::from_secs(20),
        |v| v == f64::from(EACH),
    );
    assert_eq!(
        clean,
        Some(f64::from(EACH)),
        "{}\n{}",
        prometheus.query("mptcp_probe_connections_total"),
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prometheus.query(firing)["data"]["result"], serde_json::json!([]), "fired on a clean path");

    // The router starts stripping MP_CAPABLE from SYNs: half the connections now fall back.
    let _strip = scenario::apply(&lab, scenario::named("syn-strip"), &MIDDLEBOX.path()).unwrap();
    for i in 0..EACH {
        let res = peer::client(&lab.c, &server, 1000, 40400 + i, false);
        assert_eq!(res["is_mptcp"], 0, "{res}");
    }
    let alert = prometheus.value_until(firing, Duration::from_secs(30), |v| v == 1.0);
    assert_eq!(
        alert,
        Some(1.0),
        "no alert: {}\n{}",
        prometheus.query("ALERTS"),
        prometheus.query("mptcp_probe_connections_total")
    );
}

/// An MPTCP server that accepts and holds every connection; and a client that connects, says
/// "up", and holds its connection until killed (a Python MPTCP socket, any program's).
const HOLD: &str = r#"
import socket, sys, threading, time
role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
def hold(c):
    # Open until the client closes, then closed: the connection ends on the wire.
    while c.recv(4096):
        pass
    c.close()
if role == "server":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    while True:
        threading.Thread(target=hold, args=(s.accept()[0],), daemon=True).start()
else:
    s.connect((host, port))
    s.sendall(b"x")
    print("up", flush=True)
    time.sleep(120)
"#;

#[test]
fn open_connections_are_read_from_sock_diag_at_scrape_with_their_fallback_and_subflows() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let dir = mptcp_probe_tests::probe::TempDir::new("hold");
    let script = dir.0.join("hold.py");
    std::fs::write(&script, HOLD).unwrap();
    let hold = |ns: &Netns, role: &str| {
        let mut cmd = ns.cmd("python3");
        cmd.arg(&script).args([role, addr::SERVER, "8090"]).stdout(Stdio::piped()).stderr(Stdio::null());
        mptcp_probe_tests::lab::Child::spawn(&mut cmd)
    };
    let _server = hold(&lab.s, "server");
    peer::wait_listening(&lab.s, &format!("{}:8090", addr::SERVER));
    let daemon = Daemon::start(&lab.c, LISTEN, &config(""));
    let sockets = |t: &str, outcome: &str| {
        sample(t, &format!("mptcp_probe_sockets{{outcome=\"{outcome}\",namespace=\"host\"}}"))
    };

    // Nothing open: both counts are there, at zero.
    let text = daemon.scrape_until(Duration::from_secs(10), |t| sockets(t, "mptcp").is_some());
    assert_eq!((sockets(&text, "mptcp"), sockets(&text, "fallback")), (Some(0.0), Some(0.0)), "{text}");
    // One connection open over a clean path, then one through a router that strips MP_CAPABLE:
    // the kernel's own view of each, while they are open.
    let _clean = hold(&lab.c, "client");
    let text = daemon.scrape_until(Duration::from_secs(15), |t| sockets(t, "mptcp") == Some(1.0));
    assert_eq!(sockets(&text, "mptcp"), Some(1.0), "{text}\n{}", daemon.log());
    assert_eq!(sample(&text, "mptcp_probe_socket_subflows{namespace=\"host\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "mptcp_probe_sockets_retransmitting{namespace=\"host\"}"), Some(0.0), "{text}");
    {
        let _strip = scenario::apply(&lab, scenario::named("syn-strip"), &MIDDLEBOX.path()).unwrap();
        let _stripped = hold(&lab.c, "client");
        let text = daemon.scrape_until(Duration::from_secs(15), |t| sockets(t, "fallback") == Some(1.0));
        assert_eq!(sockets(&text, "fallback"), Some(1.0), "{text}\n{}", daemon.log());
        assert_eq!(sockets(&text, "mptcp"), Some(1.0), "{text}");
    }
    // Closed: no longer counted.
    drop(_clean);
    let text = daemon.scrape_until(Duration::from_secs(15), |t| sockets(t, "mptcp") == Some(0.0));
    assert_eq!(sockets(&text, "mptcp"), Some(0.0), "{text}");
    // Each closed connection's summary was joined with what the scrapes' dumps said of its
    // socket: the clean one MPTCP with one subflow, the stripped one fallen back.
    let joined = |t: &str, outcome: &str| {
        sample(
            t,
            &format!(
                "mptcp_probe_connections_socket_joined_total{{outcome=\"{outcome}\",namespace=\"host\"}}"
            ),
        )
    };
    let text = daemon.scrape_until(Duration::from_secs(15), |t| {
        joined(t, "mptcp") == Some(1.0) && joined(t, "fallback") == Some(1.0)
    });
    assert_eq!(
        (joined(&text, "mptcp"), joined(&text, "fallback")),
        (Some(1.0), Some(1.0)),
        "{text}\n{}",
        daemon.log()
    );
    assert_eq!(
        (connections(&text, "mptcp"), connections(&text, "fallback")),
        (Some(1.0), Some(1.0)),
        "{text}"
    );
    let subflows = |le: &str| {
        sample(&text, &format!("mptcp_probe_connection_subflows_bucket{{le=\"{le}\",namespace=\"host\"}}"))
    };
    assert_eq!((subflows("1.0"), subflows("+Inf")), (Some(1.0), Some(1.0)), "{text}");
    assert_eq!(promtool_check(&text), "", "promtool check metrics on:\n{text}");
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
}

#[test]
fn reports_spool_while_the_collector_is_down_and_arrive_once_each_after_restarts() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let (_serve, _dir) = matrix::serve(&lab.s, &probe_bin()).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = mptcp_probe_tests::probe::TempDir::new("upload");
    let spool = dir.0.join("spool");
    // Tables after the [metrics] table of the base configuration.
    let conf = format!(
        "{}[upload]\nurl = \"http://127.0.0.1:9800/api/v1/reports\"\nkey = \"k1\"\nspool_dir = \"{}\"\n\
         [[checks]]\nname = \"lab\"\nserver = \"{}\"\ntests = [\"handshake\"]\ninterval_seconds = 600\n\
         jitter_seconds = 0\n",
        config(""),
        spool.display(),
        addr::SERVER
    );
    let m = |t: &str, series: &str| sample(t, &format!("mptcp_probe_{series}"));

    // The collector is down: the check's report waits in the spool.
    let daemon = Daemon::start(&lab.c, LISTEN, &conf);
    let text = daemon.scrape_until(Duration::from_secs(60), |t| {
        m(t, "uploads_total{result=\"failed\"}") >= Some(1.0) && m(t, "upload_spool_reports") == Some(1.0)
    });
    assert_eq!(
        m(&text, "check_runs_total{target=\"lab\",result=\"done\"}"),
        Some(1.0),
        "{text}\n{}",
        daemon.log()
    );
    assert!(m(&text, "uploads_total{result=\"failed\"}") >= Some(1.0), "{text}\n{}", daemon.log());
    assert_eq!(m(&text, "uploads_total{result=\"ok\"}"), Some(0.0), "{text}");
    assert_eq!(m(&text, "upload_spool_reports"), Some(1.0), "{text}");
    assert!(m(&text, "upload_spool_bytes") > Some(500.0), "{text}");
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
    let spooled: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    let first: serde_json::Value = serde_json::from_slice(&std::fs::read(&spooled[0]).unwrap()).unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();

    // The collector is back (one that takes uploads with the daemon's key only), and so is the
    // daemon: the spooled report goes, then the new one.
    let collector = Collector::start_in(Some(&lab.c), "127.0.0.1:9800", None, &["--upload-key", "k1"]);
    let daemon = Daemon::start(&lab.c, LISTEN, &conf);
    let text = daemon.scrape_until(Duration::from_secs(60), |t| {
        m(t, "uploads_total{result=\"ok\"}") == Some(2.0) && m(t, "upload_spool_reports") == Some(0.0)
    });
    assert_eq!(m(&text, "uploads_total{result=\"ok\"}"), Some(2.0), "{text}\n{}", daemon.log());
    assert_eq!(m(&text, "upload_spool_reports"), Some(0.0), "{text}");
    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);

    // Every report exactly once, the spooled one among them (a stored report without its token
    // is 401, an unknown one 404).
    assert_eq!(collector.count(), 2, "{}", collector.log());
    let c = String::from_utf8(collector.get("/metrics", &[]).body).unwrap();
    assert_eq!(sample(&c, "mptcp_probe_collector_uploads_total{result=\"stored\"}"), Some(2.0), "{c}");
    assert_eq!(sample(&c, "mptcp_probe_collector_uploads_total{result=\"refused\"}"), Some(0.0), "{c}");
    assert_eq!(collector.get(&format!("/api/v1/reports/{first_id}"), &[]).status, 401, "the spooled report");
    assert!(std::fs::read_dir(&spool).unwrap().flatten().all(|e| e.path().is_dir()), "spool not empty");
}

#[test]
fn a_watched_namespace_is_observed_and_again_after_it_goes_away_and_comes_back() {
    skip_unless_e2e!();
    let pid = std::process::id();
    // The daemon in a namespace of its own; the watched one has only its loopback.
    let home = Netns::new(&format!("mpp-dh-{pid}"));
    let name = format!("mpp-dw-{pid}");
    let watched = Netns::new(&name);
    let conf =
        format!("interfaces = [\"lo\"]\nnamespaces = [\"{name}\"]\n[metrics]\nlisten = \"{LISTEN}\"\n");
    let daemon = Daemon::start(&home, LISTEN, &conf);
    let conn = |t: &str, ns: &str| {
        sample(t, &format!("mptcp_probe_connections_total{{outcome=\"mptcp\",namespace=\"{ns}\"}}"))
    };
    let up = |t: &str| sample(t, &format!("mptcp_probe_namespace_up{{namespace=\"{name}\"}}"));
    let connect = |ns: &Netns, port: u16| {
        let _srv = peer::server(ns, "127.0.0.1:8080", 1, false);
        let res = peer::client(ns, "127.0.0.1:8080", 10_000, port, false);
        assert_eq!(res["is_mptcp"], 1, "{res}");
    };

    // Over loopback both ends of a connection are in the namespace: it counts at each.
    connect(&watched, 40501);
    let text = daemon.scrape_until(Duration::from_secs(15), |t| conn(t, &name) == Some(2.0));
    assert_eq!(conn(&text, &name), Some(2.0), "{text}\n{}", daemon.log());
    assert_eq!(up(&text), Some(1.0), "{text}");
    assert_eq!(conn(&text, "host"), Some(0.0), "the daemon's own namespace saw none: {text}");
    let mib = format!("mptcp_probe_kernel_mib_total{{counter=\"MPCapableSYNRX\",namespace=\"{name}\"}}");
    assert!(sample(&text, &mib) >= Some(1.0), "the watched namespace's own counters: {text}");

    // It goes away: no longer observed, what was counted stays.
    drop(watched);
    let text = daemon.scrape_until(Duration::from_secs(15), |t| up(t) == Some(0.0));
    assert_eq!(up(&text), Some(0.0), "{text}\n{}", daemon.log());
    assert_eq!(conn(&text, &name), Some(2.0), "{text}");
    assert!(!text.contains(&mib), "counters of a namespace that is gone: {text}");

    // Another namespace under the same name: observed anew.
    let watched = Netns::new(&name);
    let text = daemon.scrape_until(Duration::from_secs(15), |t| up(t) == Some(1.0));
    assert_eq!(up(&text), Some(1.0), "{text}\n{}", daemon.log());
    connect(&watched, 40502);
    let text = daemon.scrape_until(Duration::from_secs(15), |t| conn(t, &name) == Some(4.0));
    assert_eq!(conn(&text, &name), Some(4.0), "{text}\n{}", daemon.log());

    let stopped = daemon.stop();
    assert_eq!(stopped.exit_code, Some(0), "{}", stopped.log);
    assert!(stopped.log.contains("went away"), "{}", stopped.log);
    assert_eq!(attached_programs(&watched, "lo"), "", "left attached in the watched namespace");
    assert_eq!(attached_programs(&home, "lo"), "", "left attached in the daemon's namespace");
}
