//! Where the workspace's builds are: the target directory Cargo builds into, and the binaries the
//! lab runs. `cargo xtask` builds with Cargo and then runs what it built, the end-to-end tests run
//! what `cargo xtask` (or a developer) built: both find it here, so they cannot disagree.

use std::{
    ffi::OsStr,
    fmt,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The workspace root (the tests crate lives in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate lives in the workspace").into()
}

/// The directory Cargo builds the workspace into, as `cargo build` run from the workspace root
/// sees it: `CARGO_TARGET_DIR`, `build.target-dir` of a Cargo config, or `target/`. Cargo itself
/// is asked (`cargo metadata`); when it cannot be run, `CARGO_TARGET_DIR` or `target/` is assumed.
pub fn target_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        cargo_target_dir(metadata_command(&root))
            .unwrap_or_else(|| fallback_target_dir(std::env::var_os("CARGO_TARGET_DIR").as_deref(), &root))
    })
    .clone()
}

/// `cargo metadata` for the workspace, without resolving dependencies.
fn metadata_command(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["metadata", "--format-version", "1", "--no-deps", "--offline"]).current_dir(root);
    cmd
}

/// The `target_directory` Cargo reports (None: Cargo could not be run or said nothing useful).
fn cargo_target_dir(mut metadata: Command) -> Option<PathBuf> {
    let out = metadata.stderr(std::process::Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_target_directory(&out.stdout)
}

fn parse_target_directory(metadata: &[u8]) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_slice(metadata).ok()?;
    v.get("target_directory")?.as_str().map(PathBuf::from)
}

/// Cargo's rule for `CARGO_TARGET_DIR` (relative to where Cargo runs: the root, for xtask's
/// builds), else the workspace's `target/`.
fn fallback_target_dir(env: Option<&OsStr>, root: &Path) -> PathBuf {
    match env {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A binary of the workspace the lab runs, with the variable that overrides where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bin {
    pub name: &'static str,
    /// Names its path, overriding the build directories (`cargo xtask test` sets it).
    pub env: &'static str,
    /// How to build it.
    pub build: &'static str,
}

pub const PROBE: Bin =
    Bin { name: "mptcp-probe", env: "MPTCP_PROBE_BIN", build: "cargo build --release -p mptcp-probe" };
pub const PEER: Bin = Bin {
    name: "mptcp-peer",
    env: "MPTCP_PEER_BIN",
    build: "cargo build --release -p mptcp-probe-tests --bins",
};
pub const MIDDLEBOX: Bin = Bin {
    name: "mptcp-middlebox",
    env: "MPTCP_MIDDLEBOX_BIN",
    build: "cargo build --release -p mptcp-probe-tests --bins",
};

/// Every binary the lab and the end-to-end tests run.
pub const LAB_BINS: [Bin; 3] = [PROBE, PEER, MIDDLEBOX];

/// A binary that is not where it was looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotBuilt {
    pub bin: Bin,
    pub looked_at: Vec<PathBuf>,
}

impl fmt::Display for NotBuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let looked: Vec<String> = self.looked_at.iter().map(|p| p.display().to_string()).collect();
        write!(
            f,
            "{} is not built (looked at {}): run `{}` or point {} at it",
            self.bin.name,
            looked.join(", "),
            self.bin.build,
            self.bin.env
        )
    }
}

impl std::error::Error for NotBuilt {}

impl Bin {
    /// The release build's path in the target directory.
    pub fn release(self) -> PathBuf {
        target_dir().join("release").join(self.name)
    }

    /// Where the binary is: `$env` if set, else the release build, else the debug build.
    pub fn locate(self) -> Result<PathBuf, NotBuilt> {
        let candidates = match std::env::var_os(self.env) {
            Some(p) => vec![PathBuf::from(p)],
            None => ["release", "debug"].iter().map(|p| target_dir().join(p).join(self.name)).collect(),
        };
        candidates.iter().find(|p| p.is_file()).cloned().ok_or(NotBuilt { bin: self, looked_at: candidates })
    }

    /// As [`Bin::locate`], or where it would be if it were built (running it then names the path).
    pub fn path(self) -> PathBuf {
        self.locate().unwrap_or_else(|e| e.looked_at.into_iter().next().unwrap_or_else(|| self.release()))
    }
}

/// The `mptcp-probe` binary under test (panics when it is not built).
pub fn probe_bin() -> PathBuf {
    PROBE.locate().unwrap_or_else(|e| panic!("{e}"))
}

/// The `mptcp-peer` test peer (panics when it is not built).
pub fn peer_bin() -> PathBuf {
    PEER.locate().unwrap_or_else(|e| panic!("{e}"))
}

/// The lab's `mptcp-middlebox` (panics when it is not built).
pub fn middlebox_bin() -> PathBuf {
    MIDDLEBOX.locate().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_is_asked_and_honours_cargo_target_dir() {
        let root = workspace_root();
        let mut cmd = metadata_command(&root);
        cmd.env("CARGO_TARGET_DIR", "/elsewhere");
        assert_eq!(cargo_target_dir(cmd), Some(PathBuf::from("/elsewhere")));
        // Without it, Cargo's answer is the process's own: the one every caller gets.
        let mut cmd = metadata_command(&root);
        cmd.env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR");
        let plain = cargo_target_dir(cmd).expect("cargo metadata runs in the workspace");
        if std::env::var_os("CARGO_TARGET_DIR").is_none()
            && std::env::var_os("CARGO_BUILD_TARGET_DIR").is_none()
        {
            assert_eq!(plain, target_dir());
        }
    }

    #[test]
    fn without_cargo_the_variable_or_target_is_assumed() {
        let root = Path::new("/ws");
        assert_eq!(fallback_target_dir(Some(OsStr::new("/elsewhere")), root), PathBuf::from("/elsewhere"));
        assert_eq!(fallback_target_dir(Some(OsStr::new("out")), root), PathBuf::from("/ws/out"));
        assert_eq!(fallback_target_dir(Some(OsStr::new("")), root), PathBuf::from("/ws/target"));
        assert_eq!(fallback_target_dir(None, root), PathBuf::from("/ws/target"));
        assert_eq!(cargo_target_dir(Command::new("/nonexistent/cargo")), None);
        assert_eq!(parse_target_directory(br#"{"target_directory":"/t","packages":[]}"#), Some("/t".into()));
        assert_eq!(parse_target_directory(b"error"), None);
    }

    #[test]
    fn every_binary_is_looked_for_in_the_one_target_directory() {
        for b in LAB_BINS {
            assert_eq!(b.release(), target_dir().join("release").join(b.name));
            if std::env::var_os(b.env).is_none() {
                match b.locate() {
                    Ok(p) => assert!(p.starts_with(target_dir()), "{}", p.display()),
                    Err(e) => {
                        assert!(e.looked_at.iter().all(|p| p.starts_with(target_dir())), "{e}");
                        assert!(e.to_string().contains(b.env), "{e}");
                    }
                }
            }
        }
    }
}
