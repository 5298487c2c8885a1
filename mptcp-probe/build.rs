//! Builds the kernel programs (`mptcp-probe-ebpf`) with `aya_build`.
//!
//! `aya_build` relays everything the child cargo prints (its progress lines as well as compiler
//! messages) as `cargo:warning=` lines, so every build would show twenty "warnings" that are
//! none. Its output is therefore held in a file while it runs: on success only the directives and
//! the real compiler diagnostics are passed on to cargo; on failure everything is, so the
//! compiler's error text is in front of whoever runs the build.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
};

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let log_path = out_dir.join("ebpf-build.log");
    let log = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let held = StdoutHeld::redirect_to(&log)?;
    let built = std::panic::catch_unwind(build_ebpf);
    let log_text = held.restore_and_read(log)?;
    let ok = matches!(built, Ok(Ok(())));
    let mut out = std::io::stdout().lock();
    for line in log_text.lines().filter(|l| !ok || keep_on_success(l)) {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    drop(out);
    match built {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn build_ebpf() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "mptcp-probe-ebpf")
        .ok_or_else(|| anyhow!("mptcp-probe-ebpf package not found"))?;
    let cargo_metadata::Package { name, manifest_path, .. } = ebpf_package;
    let root_dir = manifest_path.parent().ok_or_else(|| anyhow!("no parent for {manifest_path}"))?.as_str();
    aya_build::build_ebpf(
        [aya_build::Package { name: name.as_str(), root_dir, ..Default::default() }],
        Toolchain::default(),
    )
}

/// Cargo's status lines, as the child cargo prints them on stderr (right-aligned verb, a space,
/// the subject).
const PROGRESS_VERBS: &[&str] = &[
    "Adding",
    "Blocking",
    "Building",
    "Checking",
    "Compiling",
    "Dirty",
    "Downloaded",
    "Downloading",
    "Finished",
    "Fresh",
    "Locking",
    "Running",
    "Updating",
];

/// Whether a line `aya_build` printed goes on to cargo after a successful eBPF build: every
/// directive except the relayed progress lines (and the blank lines between messages).
fn keep_on_success(line: &str) -> bool {
    let Some(text) = line.strip_prefix("cargo:warning=").or_else(|| line.strip_prefix("cargo::warning="))
    else {
        return true;
    };
    let text = text.trim();
    let verb = text.split_whitespace().next().unwrap_or_default();
    !(text.is_empty() || PROGRESS_VERBS.contains(&verb))
}

/// The build script's stdout, pointed at a file until [`StdoutHeld::restore_and_read`].
struct StdoutHeld {
    saved: std::os::fd::OwnedFd,
}

impl StdoutHeld {
    fn redirect_to(file: &File) -> anyhow::Result<Self> {
        std::io::stdout().flush()?;
        let saved = std::io::stdout().as_fd().try_clone_to_owned().context("dup(stdout)")?;
        // SAFETY: both descriptors are open; dup2 atomically makes fd 1 refer to the file.
        if unsafe { libc::dup2(file.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2(log file, stdout)");
        }
        Ok(Self { saved })
    }

    /// Points stdout back at cargo and returns what was written meanwhile.
    fn restore_and_read(self, mut file: File) -> anyhow::Result<String> {
        std::io::stdout().flush()?;
        // SAFETY: `saved` is an open descriptor we own; dup2 makes fd 1 refer to it again.
        if unsafe { libc::dup2(self.saved.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2(saved stdout, stdout)");
        }
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_string(&mut text).context("reading the eBPF build's output")?;
        Ok(text)
    }
}
