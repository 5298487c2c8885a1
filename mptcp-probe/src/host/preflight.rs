//! Checks that the host can run the observer, each failure named with what to do about it.

use std::{fs, path::Path};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "missing privileges: the observer needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or \
         CAP_SYS_ADMIN); missing: {0}. Run as root, or grant them with \
         `setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_admin+ep mptcp-probe`"
    )]
    Privileges(String),
    #[error(
        "kernel BTF is missing (/sys/kernel/btf/vmlinux not found): the observer needs a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error(
        "MPTCP is not available in this kernel (/proc/sys/net/mptcp/enabled not found): a kernel \
         built with CONFIG_MPTCP=y (Linux 5.6 or later) is needed"
    )]
    NoMptcp,
    #[error(
        "MPTCP is disabled in this network namespace (net.mptcp.enabled=0): enable it with \
         `sysctl -w net.mptcp.enabled=1`"
    )]
    MptcpDisabled,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set of this process.
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Names the capabilities missing from `caps` for loading and attaching the observer.
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

pub fn check_privileges() -> Result<(), PreflightError> {
    let missing = missing_caps(effective_caps());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Privileges(missing.join(", ")))
    }
}

pub fn check_btf() -> Result<(), PreflightError> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf)
    }
}

/// Reads `net.mptcp.enabled` of the current network namespace.
pub fn check_mptcp() -> Result<(), PreflightError> {
    mptcp_enabled_from(fs::read_to_string("/proc/sys/net/mptcp/enabled").ok().as_deref())
}

pub fn mptcp_enabled_from(value: Option<&str>) -> Result<(), PreflightError> {
    match value.map(str::trim) {
        None => Err(PreflightError::NoMptcp),
        Some("0") => Err(PreflightError::MptcpDisabled),
        Some(_) => Ok(()),
    }
}

/// Everything `watch` needs, in the order a user would fix them.
pub fn check_all() -> Result<(), PreflightError> {
    check_privileges()?;
    check_btf()?;
    check_mptcp()
}

/// Older kernels charge BPF memory to RLIMIT_MEMLOCK; lift it where that is allowed.
pub fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("could not lift RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_capabilities_names_all_three() {
        assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_but_not_net_admin() {
        assert_eq!(missing_caps(1 << CAP_SYS_ADMIN), vec!["CAP_NET_ADMIN"]);
        assert!(missing_caps((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_empty());
    }

    #[test]
    fn bpf_perfmon_net_admin_suffice() {
        assert!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN)).is_empty());
    }

    #[test]
    fn mptcp_sysctl_states_are_named() {
        assert!(matches!(mptcp_enabled_from(None), Err(PreflightError::NoMptcp)));
        assert!(matches!(mptcp_enabled_from(Some("0\n")), Err(PreflightError::MptcpDisabled)));
        assert!(mptcp_enabled_from(Some("1\n")).is_ok());
        let msg = PreflightError::MptcpDisabled.to_string();
        assert!(msg.contains("net.mptcp.enabled=0"), "{msg}");
    }
}
