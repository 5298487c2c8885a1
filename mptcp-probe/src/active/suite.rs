//! The client side of each test, by name: which server port it uses, what it runs there, and
//! for `join` and `add_addr` the path-manager set-up it needs and undoes.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use mptcp_probe_model::{ConnectionKind, ConnectionView, Outcome, TestName, Transport};

use super::{client, ftp, tls};
use crate::{
    host::pm,
    protocol::{self, BulkMode, ServerInfo},
    verdict::{AddAddrEvidence, JoinEvidence},
};

/// What a test needs to know of the run.
pub struct Target<'a> {
    pub ip: IpAddr,
    pub info: &'a ServerInfo,
    /// How long a connection may take to come up.
    pub timeout: Duration,
    pub bulk_bytes: u64,
}

/// What a test's client run gave, beyond the connections themselves.
#[derive(Default)]
pub struct Extra {
    pub join: Option<JoinEvidence>,
    pub add_addr: Option<AddAddrEvidence>,
    /// Temporary host changes made and undone.
    pub notes: Vec<String>,
}

/// How long `join` and `add_addr` keep their connection busy for the path manager to act.
const MULTIPATH_WAIT: Duration = Duration::from_secs(3);
/// Bytes of the http POST body, and of the ftp and tls transfers.
const HTTP_BODY_BYTES: usize = 64 * 1024;
const FTP_BYTES: u64 = 256 * 1024;
const TLS_BYTES: u64 = 256 * 1024;

impl Target<'_> {
    fn port(&self, service: &str, default: u16) -> u16 {
        self.info.ports.get(service).copied().unwrap_or(default)
    }

    fn addr(&self, service: &str, default: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port(service, default))
    }

    /// Runs one test's client over `transport`; returns the server port it used and the run.
    pub async fn run(
        &self,
        test: TestName,
        transport: Transport,
        test_id: &str,
        extra: &mut Extra,
    ) -> (u16, client::Run) {
        use protocol::port;
        let t = self.timeout;
        let bulk = self.addr("bulk", port::BULK);
        let echo = self.addr("echo", port::ECHO);
        match test {
            TestName::Handshake => (bulk.port(), client::handshake(bulk, transport, test_id, t).await),
            TestName::Http => {
                let a = self.addr("http", port::HTTP);
                (a.port(), client::http(a, transport, test_id, HTTP_BODY_BYTES, t).await)
            }
            TestName::Ftp => {
                let a = self.addr("ftp", port::FTP);
                (a.port(), ftp::ftp(a, transport, test_id, FTP_BYTES, t).await)
            }
            TestName::Tls => {
                let a = self.addr("tls", port::TLS);
                (a.port(), tls::tls(a, transport, test_id, TLS_BYTES, t).await)
            }
            TestName::Bulk => (bulk.port(), self.bulk(bulk, transport, test_id).await),
            TestName::Echo => {
                let run =
                    client::bulk(echo, transport, test_id, BulkMode::Echo, 0, t, ConnectionKind::Echo).await;
                (echo.port(), run)
            }
            TestName::Join => (echo.port(), self.join(echo, transport, test_id, extra).await),
            TestName::AddAddr => (echo.port(), self.add_addr(echo, transport, test_id, extra).await),
        }
    }

    /// `bulk`: the bytes up, then (if that worked) down, each on its own connection.
    async fn bulk(&self, addr: SocketAddr, transport: Transport, test_id: &str) -> client::Run {
        let (t, n) = (self.timeout, self.bulk_bytes);
        let mut run = client::bulk(addr, transport, test_id, BulkMode::Up, n, t, ConnectionKind::Bulk).await;
        if run.outcome == Some(Outcome::Ok) {
            let down =
                client::bulk(addr, transport, test_id, BulkMode::Down, n, t, ConnectionKind::Bulk).await;
            run.outcome = down.outcome;
            run.error = down.error;
            run.connections.extend(down.connections);
            run.received.extend(down.received);
        }
        run
    }

    /// `join`: over MPTCP, a `subflow` endpoint for a second local address (with the limits it
    /// needs) until the second subflow is up; over TCP the same connection without it.
    async fn join(
        &self,
        addr: SocketAddr,
        transport: Transport,
        test_id: &str,
        extra: &mut Extra,
    ) -> client::Run {
        let local = local_ip_towards(addr);
        let Some((from, dev)) = local.and_then(|l| pm::second_address(self.ip, l)) else {
            return skipped("no second local address with a route to the server to join from");
        };
        if transport == Transport::Tcp {
            return self.plain(addr, test_id, ConnectionKind::Join).await;
        }
        let configure = |pm: &mut pm::PmGuard| {
            pm.ensure_limits(0, 2).and_then(|()| pm.ensure_subflow_endpoint(from, &dev))
        };
        let done = |v: &ConnectionView| v.subflows.unwrap_or(0) >= 2;
        let run = self.with_path_manager(addr, test_id, ConnectionKind::Join, configure, done, extra).await;
        let subflows = run.connections.first().and_then(|c| c.subflows).unwrap_or(0);
        extra.join = Some(JoinEvidence { from: from.to_string(), subflows });
        run
    }

    /// `add_addr`: over MPTCP, limits that accept the server's announcement, until the subflow
    /// to the announced address is up (the kernel adds an implicit endpoint for it, which the
    /// end of the run removes again).
    async fn add_addr(
        &self,
        addr: SocketAddr,
        transport: Transport,
        test_id: &str,
        extra: &mut Extra,
    ) -> client::Run {
        if self.info.announced.is_empty() {
            return skipped("the server announces no extra address (no signal endpoint on the server)");
        }
        if transport == Transport::Tcp {
            return self.plain(addr, test_id, ConnectionKind::AddAddr).await;
        }
        let configure = |pm: &mut pm::PmGuard| pm.ensure_limits(1, 2);
        let done = |v: &ConnectionView| v.add_addr_accepted.unwrap_or(0) >= 1 && v.subflows.unwrap_or(0) >= 2;
        let run =
            self.with_path_manager(addr, test_id, ConnectionKind::AddAddr, configure, done, extra).await;
        let accepted = run.connections.first().and_then(|c| c.add_addr_accepted).unwrap_or(0);
        extra.add_addr = Some(AddAddrEvidence {
            announced: self.info.announced.clone(),
            server_signalled: None,
            accepted,
        });
        run
    }

    /// The plain-TCP baseline of a multipath test: the same echo connection, nothing to wait for.
    async fn plain(&self, addr: SocketAddr, test_id: &str, kind: ConnectionKind) -> client::Run {
        client::multipath(addr, Transport::Tcp, test_id, self.timeout, Duration::ZERO, kind, |_| true).await
    }

    /// An MPTCP echo connection kept busy until `done`, with the path manager set up by
    /// `configure` for it and restored after (what was changed goes to the report).
    async fn with_path_manager(
        &self,
        addr: SocketAddr,
        test_id: &str,
        kind: ConnectionKind,
        configure: impl FnOnce(&mut pm::PmGuard) -> anyhow::Result<()>,
        done: impl Fn(&ConnectionView) -> bool,
        extra: &mut Extra,
    ) -> client::Run {
        let mut pm = pm::PmGuard::snapshot();
        if let Err(e) = configure(&mut pm) {
            pm.restore();
            extra.notes.append(&mut pm.notes);
            return skipped(&format!("cannot configure the path manager for the {kind} test: {e:#}"));
        }
        let run =
            client::multipath(addr, Transport::Mptcp, test_id, self.timeout, MULTIPATH_WAIT, kind, done)
                .await;
        pm.restore();
        extra.notes.append(&mut pm.notes);
        run
    }
}

/// A test that could not run here: an error outcome with the reason, no verdict.
fn skipped(why: &str) -> client::Run {
    client::Run {
        skipped: true,
        outcome: Some(Outcome::NotRun),
        error: Some(format!("not run: {why}")),
        ..Default::default()
    }
}

/// The local address the kernel would use towards `addr`.
pub fn local_ip_towards(addr: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    s.connect(addr).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}
