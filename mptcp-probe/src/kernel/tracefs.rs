//! tracefs: mounting it where it is missing, and reading field offsets from tracepoint format
//! files so that the kernel programs never depend on hard-coded layouts.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing ({0}); mount it \
         with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    Mount(std::io::Error),
    #[error(
        "tracefs at {0} cannot be read by this user (it is root's, mode 0700): run as root, or \
         grant CAP_DAC_READ_SEARCH besides CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
    )]
    Unreadable(String),
    #[error("tracepoint {0} not found in tracefs ({1})")]
    Missing(String, std::io::Error),
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting it at /sys/kernel/tracing when no copy is mounted.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for c in CANDIDATES {
        if PathBuf::from(c).join("events").is_dir() {
            return Ok(PathBuf::from(c));
        }
        // Mounted, but this user may not look inside.
        if fs::read_dir(c).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) {
            return Err(TracefsError::Unreadable(c.to_string()));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; a plain tracefs mount with no data.
    let ret =
        unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if ret != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(PathBuf::from(CANDIDATES[0]))
}

/// A tracepoint's record as its format file describes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Format {
    /// Field name → byte offset.
    pub offsets: HashMap<String, u16>,
    /// Where the record's last field ends: the bytes a program may read of it.
    pub record_bytes: u16,
}

impl Format {
    pub fn get(&self, name: &str) -> Option<u16> {
        self.offsets.get(name).copied()
    }
}

/// A tracepoint's format file, read.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text =
        fs::read_to_string(&path).map_err(|e| TracefsError::Missing(format!("{category}:{name}"), e))?;
    Ok(parse_format(&text))
}

/// Parses lines like `field:__u16 sport; offset:24; size:2; signed:0;` (tab-separated).
pub fn parse_format(text: &str) -> Format {
    let mut out = Format::default();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let decl = rest.split(';').next().unwrap_or("").trim();
        let value = |key: &str| {
            rest.split(';')
                .find_map(|p| p.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse::<u16>().ok())
        };
        let Some(offset) = value("offset:") else { continue };
        if let Some(end) = value("size:").and_then(|size| offset.checked_add(size)) {
            out.record_bytes = out.record_bytes.max(end);
        }
        // The name is the last word of the declaration, without any array suffix.
        let name = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next().unwrap_or("");
        let name = name.split('[').next().unwrap_or("");
        if !name.is_empty() {
            out.offsets.insert(name.to_string(), offset);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCK: &str = "name: inet_sock_set_state
ID: 1390
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:const void * skaddr;	offset:8;	size:8;	signed:0;
	field:int oldstate;	offset:16;	size:4;	signed:1;
	field:__u16 sport;	offset:24;	size:2;	signed:0;
	field:__u8 saddr_v6[16];	offset:40;	size:16;	signed:0;
	field:enum sk_rst_reason reason;	offset:28;	size:4;	signed:0;

print fmt: \"family=%s\"";

    #[test]
    fn format_file_fields_and_offsets() {
        let f = parse_format(SOCK);
        assert_eq!(f.get("skaddr"), Some(8));
        assert_eq!(f.get("oldstate"), Some(16));
        assert_eq!(f.get("sport"), Some(24));
        assert_eq!(f.get("saddr_v6"), Some(40));
        assert_eq!(f.get("reason"), Some(28));
        assert_eq!(f.get("common_type"), Some(0));
        assert_eq!(f.get("family"), None);
        // saddr_v6 ends the record: 40 + 16.
        assert_eq!(f.record_bytes, 56);
    }
}
