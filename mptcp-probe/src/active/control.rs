//! `check`'s side of the server's control port: who the server is, what it saw of a test, its
//! MPTCP counters.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use anyhow::{bail, Context as _};

use crate::protocol::{self, ServerInfo, ServerReport};

pub struct Control {
    http: reqwest::Client,
    ip: IpAddr,
    port: u16,
}

impl Control {
    pub fn new(http: reqwest::Client, ip: IpAddr, port: u16) -> Self {
        Self { http, ip, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", std::net::SocketAddr::new(self.ip, self.port))
    }

    /// The server's `/v1/info`, refused unless it speaks this client's protocol.
    pub async fn info(&self) -> anyhow::Result<ServerInfo> {
        let url = self.url("/v1/info");
        let resp = self.http.get(&url).send().await.with_context(|| {
            format!("cannot reach the mptcp-probe server's control port at {url} (is `mptcp-probe serve` running there?)")
        })?;
        if !resp.status().is_success() {
            bail!("{url} answered {}: not an mptcp-probe server, or the wrong port", resp.status());
        }
        let info: ServerInfo = resp.json().await.with_context(|| {
            format!("{url} did not answer like an mptcp-probe server (wrong port or another service)")
        })?;
        if info.protocol != protocol::PROTOCOL_VERSION {
            bail!(
                "the server speaks test protocol {} (mptcp-probe {}), this client speaks {}: use matching versions",
                info.protocol,
                info.server_version,
                protocol::PROTOCOL_VERSION
            );
        }
        Ok(info)
    }

    /// What the server saw of a test's connections. The server records a connection when it
    /// ends, so this asks a few times.
    pub async fn report(&self, test_id: &str) -> Option<ServerReport> {
        let url = self.url(&format!("/v1/tests/{test_id}"));
        for _ in 0..10 {
            if let Ok(resp) = self.http.get(&url).send().await {
                if resp.status().is_success() {
                    if let Ok(r) = resp.json::<ServerReport>().await {
                        if !r.connections.is_empty() {
                            return Some(r);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The server's MPTcpExt counters now (None: an older server without `/v1/mib`, or
    /// unreachable).
    pub async fn mib(&self) -> Option<BTreeMap<String, u64>> {
        let resp = self.http.get(self.url("/v1/mib")).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }
}
