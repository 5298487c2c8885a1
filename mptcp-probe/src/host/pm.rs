//! The in-kernel path manager: its endpoints (what a server announces), and temporary changes for
//! the join and add_addr tests (a subflow endpoint for a second address, higher limits), undone
//! when the guard is dropped: `check` never leaves the host's MPTCP configuration changed.

use std::{net::IpAddr, process::Command};

use anyhow::{bail, Context as _};
use serde_json::Value;

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out =
        Command::new("ip").args(args).output().with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `ip mptcp limits show` prints `add_addr_accepted N subflows M` (no JSON form).
pub fn parse_limits(text: &str) -> Option<(u32, u32)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let get = |k: &str| {
        words.iter().position(|w| *w == k).and_then(|i| words.get(i + 1)).and_then(|v| v.parse().ok())
    };
    Some((get("add_addr_accepted")?, get("subflows")?))
}

pub fn limits() -> anyhow::Result<(u32, u32)> {
    let text = ip(&["mptcp", "limits", "show"])?;
    parse_limits(&text).with_context(|| format!("unreadable path-manager limits {text:?}"))
}

/// Endpoints of the in-kernel path manager: (id, address, flags).
pub fn endpoints() -> anyhow::Result<Vec<(u32, IpAddr, Vec<String>)>> {
    Ok(parse_endpoints(&ip(&["-j", "mptcp", "endpoint", "show"])?))
}

/// Parses `ip -j mptcp endpoint show`.
pub fn parse_endpoints(json: &str) -> Vec<(u32, IpAddr, Vec<String>)> {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for e in v.as_array().cloned().unwrap_or_default() {
        let (Some(id), Some(addr)) = (e["id"].as_u64(), e["address"].as_str().and_then(|a| a.parse().ok()))
        else {
            continue;
        };
        let mut flags: Vec<String> = ["subflow", "signal", "backup", "fullmesh", "implicit"]
            .iter()
            .filter(|f| e[**f] == true)
            .map(|f| f.to_string())
            .collect();
        // Endpoints the kernel creates itself (for subflows to announced addresses) show only as
        // raw flags in hex (MPTCP_PM_ADDR_FLAG_IMPLICIT = 0x10).
        let raw = e["rawflags"]
            .as_u64()
            .or_else(|| {
                e["rawflags"].as_str().and_then(|r| u64::from_str_radix(r.trim_start_matches("0x"), 16).ok())
            })
            .unwrap_or(0);
        if raw & 0x10 != 0 && !flags.iter().any(|f| f == "implicit") {
            flags.push("implicit".into());
        }
        out.push((id as u32, addr, flags));
    }
    out
}

/// A global address of this host, other than `except`, from which `server` is routed.
pub fn second_address(server: IpAddr, except: IpAddr) -> Option<(IpAddr, String)> {
    let v: Value = serde_json::from_str(&ip(&["-j", "addr", "show", "up"]).ok()?).ok()?;
    for link in v.as_array()? {
        let dev = link["ifname"].as_str().unwrap_or_default();
        for a in link["addr_info"].as_array().cloned().unwrap_or_default() {
            let Some(addr) = a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else { continue };
            if a["scope"] != "global" || addr == except || addr.is_ipv4() != server.is_ipv4() {
                continue;
            }
            if ip(&["route", "get", &server.to_string(), "from", &addr.to_string()]).is_ok() {
                return Some((addr, dev.to_string()));
            }
        }
    }
    None
}

/// What the run changed, to be undone.
pub struct PmGuard {
    added: Vec<u32>,
    limits_before: Option<(u32, u32)>,
    /// Endpoints before the test: implicit ones the kernel adds during it are removed after.
    before: Vec<u32>,
    pub notes: Vec<String>,
}

impl PmGuard {
    /// The path manager's endpoints as they are now: what is changed after is undone by
    /// [`PmGuard::restore`].
    pub fn snapshot() -> Self {
        let before = endpoints().map(|e| e.into_iter().map(|(id, _, _)| id).collect()).unwrap_or_default();
        Self { added: Vec::new(), limits_before: None, before, notes: Vec::new() }
    }

    /// Raises the limits to at least these values.
    pub fn ensure_limits(&mut self, add_addr_accepted: u32, subflows: u32) -> anyhow::Result<()> {
        let (a, s) = limits()?;
        if a >= add_addr_accepted && s >= subflows {
            return Ok(());
        }
        if self.limits_before.is_none() {
            self.limits_before = Some((a, s));
        }
        let (na, ns) = (a.max(add_addr_accepted), s.max(subflows));
        ip(&["mptcp", "limits", "set", "add_addr_accepted", &na.to_string(), "subflows", &ns.to_string()])?;
        self.notes.push(format!("path-manager limits raised to add_addr_accepted {na} subflows {ns} for the test, then restored to {a}/{s}"));
        Ok(())
    }

    /// Adds a `subflow` endpoint for `addr` unless one exists.
    pub fn ensure_subflow_endpoint(&mut self, addr: IpAddr, dev: &str) -> anyhow::Result<()> {
        if endpoints()?.iter().any(|(_, a, f)| *a == addr && f.iter().any(|x| x == "subflow")) {
            return Ok(());
        }
        ip(&["mptcp", "endpoint", "add", &addr.to_string(), "dev", dev, "subflow"])?;
        if let Some((id, _, _)) = endpoints()?.into_iter().find(|(_, a, _)| *a == addr) {
            self.added.push(id);
            self.notes
                .push(format!("subflow endpoint {addr} (dev {dev}) added for the join test, then removed"));
        }
        Ok(())
    }

    pub fn restore(&mut self) {
        if let Ok(now) = endpoints() {
            for (id, addr, flags) in now {
                if flags.iter().any(|f| f == "implicit")
                    && !self.before.contains(&id)
                    && !self.added.contains(&id)
                {
                    self.added.push(id);
                    self.notes
                        .push(format!("implicit endpoint {addr} the kernel added during the test removed"));
                }
            }
        }
        for id in self.added.drain(..) {
            if let Err(e) = ip(&["mptcp", "endpoint", "delete", "id", &id.to_string()]) {
                self.notes.push(format!("could not remove the endpoint id {id} added for the test: {e:#}"));
            }
        }
        if let Some((a, s)) = self.limits_before.take() {
            if let Err(e) = ip(&[
                "mptcp",
                "limits",
                "set",
                "add_addr_accepted",
                &a.to_string(),
                "subflows",
                &s.to_string(),
            ]) {
                self.notes.push(format!("could not restore the path-manager limits {a}/{s}: {e:#}"));
            }
        }
    }
}

impl Drop for PmGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_their_flags() {
        let e = parse_endpoints(
            r#"[{"address":"198.51.100.1","id":2,"subflow":true,"dev":"c-m2"},{"address":"192.0.2.1","id":1,"rawflags":"10"}]"#,
        );
        assert_eq!(e[0], (2, "198.51.100.1".parse().unwrap(), vec!["subflow".to_string()]));
        assert_eq!(e[1], (1, "192.0.2.1".parse().unwrap(), vec!["implicit".to_string()]));
        assert!(parse_endpoints("[]").is_empty());
    }

    #[test]
    fn limits_text_parses() {
        assert_eq!(parse_limits("add_addr_accepted 0 subflows 2 \n"), Some((0, 2)));
        assert_eq!(parse_limits("subflows 8 add_addr_accepted 4"), Some((4, 8)));
        assert_eq!(parse_limits("nothing"), None);
    }
}
