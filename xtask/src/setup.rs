//! `cargo xtask setup`: install what the build, `measure` and `test` need on a fresh
//! Debian 12 (bookworm) machine, run as root and non-interactively.
//!
//! Each step first checks whether its tool is already there and installs only what is
//! missing, so [`run`] is cheap enough to call at the start of other xtask commands. Every
//! command is printed before it runs (`setup: $ ...`) so that a failure on a fresh machine
//! can be reproduced by hand.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Options for [`run`].
#[derive(Debug, Clone, Default)]
pub struct SetupOpts {
    /// Also install the tools only `cargo xtask test` needs (cargo-fuzz).
    pub with_test_tools: bool,
}

/// Debian packages the project needs, with why; the reasons are printed on hosts where
/// setup cannot install packages itself.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "LLVM 22 development libraries, for bpf-linker"),
    ("libclang-22-dev", "libclang for LLVM 22"),
    ("libpolly-22-dev", "Polly for LLVM 22, which linking LLVM 22 needs"),
    ("iproute2", "ip: network namespaces, links, MPTCP endpoints"),
    ("iptables", "packet filtering in the test topologies"),
    ("nftables", "nft: packet filtering in the test topologies"),
    ("tshark", "decodes captures to cross-check the probe"),
    ("curl", "HTTP transfers over MPTCP"),
    ("mptcpize", "runs unmodified programs over MPTCP"),
    ("tcpdump", "captures traffic in the test topologies"),
    ("bpftool", "inspects the loaded eBPF programs and maps"),
    ("ethtool", "turns off segmentation offloads on test links"),
    ("prometheus", "scrapes the daemon in its tests; promtool checks its metrics and alerting rules"),
    ("postgresql", "the collector's PostgreSQL backend, tested against a throwaway cluster"),
    ("chromium", "renders the collector's pages headless in its tests (DOM and screenshots)"),
    ("lintian", "checks the Debian package `cargo xtask package` builds"),
    ("help2man", "the package's man pages, from each command's --help"),
    ("debootstrap", "a throwaway Debian root to install the package into (`cargo xtask package --test`)"),
    ("qemu-system-x86", "boots the VM image (`cargo xtask image --test`), with KVM where it works, else TCG"),
    ("ovmf", "UEFI firmware for QEMU: the VM image boots as a laptop's VirtualBox or UTM boots it"),
    ("dosfstools", "the VM image's EFI system partition (mkfs.vfat)"),
    ("mtools", "fills the EFI system partition without mounting it (mcopy)"),
    ("fdisk", "sfdisk: the VM image's partition table"),
    ("qemu-utils", "qemu-img: the VM image as qcow2 and VMDK"),
];

/// dpkg's status for a package that is fully installed.
const INSTALLED: &str = "install ok installed";

/// Answer to tshark's debconf question (may non-root users capture?), given before
/// installing so that apt never prompts.
const TSHARK_PRESEED: &str = "wireshark-common wireshark-common/install-setuid boolean false\n";

/// Where Debian's llvm-22 packages live.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Tells llvm-sys (inside bpf-linker) which LLVM 22 to build against.
const LLVM_PREFIX_VAR: &str = "LLVM_SYS_221_PREFIX";

const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo install` arguments for bpf-linker, `--locked` aside (see [`cargo_install`]).
/// The default features want LLVM 23 and fail to build against Debian's LLVM 22.
const BPF_LINKER_INSTALL: &[&str] =
    &["bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--features", "llvm-22"];

/// One idempotent setup step.
struct Step {
    name: &'static str,
    /// Only `cargo xtask test` needs it.
    test_only: bool,
    /// `Ok(true)` when there is nothing to do.
    present: fn() -> Result<bool>,
    fix: Fix,
}

/// What to do when a step's tool is missing.
enum Fix {
    Install(fn() -> Result<()>),
    /// It cannot be installed from here: fail with this explanation.
    Fail(&'static str),
}

/// The steps, in order: later steps rely on earlier ones (rust-src needs nightly, bpf-linker
/// needs the LLVM 22 packages).
const STEPS: &[Step] = &[
    Step {
        name: "debian packages",
        test_only: false,
        present: packages_present,
        fix: Fix::Install(install_packages),
    },
    Step {
        name: "rust nightly toolchain",
        test_only: false,
        present: nightly_present,
        fix: Fix::Fail(
            "the Rust nightly toolchain is not installed and this machine cannot download \
             toolchains; install it (`rustup toolchain install nightly --component rust-src`) \
             on a machine with network access to the Rust distribution servers",
        ),
    },
    Step {
        name: "rust-src (nightly)",
        test_only: false,
        present: rust_src_present,
        fix: Fix::Install(install_rust_src),
    },
    Step {
        name: "bpf-linker 0.13.0 (LLVM 22)",
        test_only: false,
        present: bpf_linker_present,
        fix: Fix::Install(install_bpf_linker),
    },
    Step {
        name: "cargo-fuzz",
        test_only: true,
        present: cargo_fuzz_present,
        fix: Fix::Install(install_cargo_fuzz),
    },
];

/// Installs whatever is missing, printing each step, then puts [`augmented_path`] into this
/// process's `PATH` so that tools started later find what was installed.
pub fn run(opts: &SetupOpts) -> Result<()> {
    if !is_debian_host() {
        print_manual_instructions(opts);
        bail!(
            "setup cannot install packages on this host: it is not Debian (/usr/bin/dpkg or \
             /etc/debian_version is missing); install the tools listed above by hand"
        );
    }
    for step in STEPS.iter().filter(|s| opts.with_test_tools || !s.test_only) {
        if (step.present)()? {
            eprintln!("setup: {}: already present", step.name);
            continue;
        }
        match step.fix {
            Fix::Fail(why) => bail!("setup: {}: missing: {why}", step.name),
            Fix::Install(install) => {
                eprintln!("setup: {}: installing ...", step.name);
                install().with_context(|| format!("setup: {}: installation failed", step.name))?;
                if !(step.present)()? {
                    bail!("setup: {}: still missing after installation", step.name);
                }
                eprintln!("setup: {}: ok", step.name);
            }
        }
    }
    std::env::set_var("PATH", augmented_path());
    Ok(())
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, by default `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    cargo_home(std::env::var_os("CARGO_HOME"), std::env::var_os("HOME")).join("bin")
}

/// `PATH` with [`cargo_bin_dir`] and the LLVM 22 tools in front, each unless already listed:
/// a fresh root shell often lacks `~/.cargo/bin`, where bpf-linker and cargo-fuzz land.
pub fn augmented_path() -> OsString {
    prepend_missing(
        &[cargo_bin_dir(), PathBuf::from(LLVM_BIN)],
        &std::env::var_os("PATH").unwrap_or_default(),
    )
}

/// `$CARGO_HOME`, else `$HOME/.cargo`, else root's (setup runs as root on fresh machines).
fn cargo_home(cargo_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    match (cargo_home, home) {
        (Some(dir), _) if !dir.is_empty() => dir.into(),
        (_, Some(home)) if !home.is_empty() => Path::new(&home).join(".cargo"),
        _ => PathBuf::from("/root/.cargo"),
    }
}

/// `path` with those of `dirs` it does not list yet put in front, in order. An empty `path`
/// contributes no entry (an empty entry would mean the current directory).
fn prepend_missing(dirs: &[PathBuf], path: &OsStr) -> OsString {
    let existing: Vec<PathBuf> =
        if path.is_empty() { Vec::new() } else { std::env::split_paths(path).collect() };
    let front = dirs.iter().filter(|dir| !existing.contains(dir));
    // Only fails when a directory contains the separator; keep PATH as it was then.
    std::env::join_paths(front.chain(&existing)).unwrap_or_else(|_| path.to_os_string())
}

/// Setup installs with apt, so it only knows how to install on Debian.
fn is_debian_host() -> bool {
    Path::new("/usr/bin/dpkg").exists() && Path::new("/etc/debian_version").exists()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// On hosts without apt, say exactly what to install instead of failing on a missing tool.
fn print_manual_instructions(opts: &SetupOpts) {
    eprintln!("setup: this host is not Debian, so setup cannot install packages here.");
    eprintln!("setup: install these (Debian 12 package names) with your package manager:");
    for (package, why) in PACKAGES {
        eprintln!("setup:   {package:<16} {why}");
    }
    eprintln!("setup: then, with the Rust nightly toolchain installed:");
    eprintln!("setup:   rustup component add rust-src --toolchain nightly");
    eprintln!(
        "setup:   {LLVM_PREFIX_VAR}=<LLVM 22 prefix> cargo install {} --locked",
        BPF_LINKER_INSTALL.join(" ")
    );
    if opts.with_test_tools {
        eprintln!("setup:   cargo install cargo-fuzz --locked");
    }
}

fn packages_present() -> Result<bool> {
    Ok(missing_packages()?.is_empty())
}

/// The packages of [`PACKAGES`] that dpkg does not report as installed, in table order.
fn missing_packages() -> Result<Vec<&'static str>> {
    let mut query = Command::new("dpkg-query");
    query.args(["-W", "-f", "${Package}\\t${Status}\\n"]).args(PACKAGES.iter().map(|(package, _)| package));
    let out = capture(&mut query)?;
    // Exit status 1 only means some packages are unknown to dpkg: they print no line.
    if !matches!(out.status.code(), Some(0 | 1)) {
        bail!("`{}` failed: {}", display_cmd(&query), out.status);
    }
    let wanted: Vec<&'static str> = PACKAGES.iter().map(|(package, _)| *package).collect();
    Ok(missing_from_status(&wanted, &String::from_utf8_lossy(&out.stdout)))
}

/// Those of `wanted` without an installed `<package>\t<status>` line in `status`.
fn missing_from_status<'a>(wanted: &[&'a str], status: &str) -> Vec<&'a str> {
    let installed =
        |package: &str| status.lines().any(|line| line.split_once('\t') == Some((package, INSTALLED)));
    wanted.iter().copied().filter(|package| !installed(package)).collect()
}

/// `apt-get` made non-interactive. On a fresh machine unattended-upgrades often holds the
/// dpkg lock for a while, so wait for it instead of failing.
fn apt_get(args: &[&str]) -> Command {
    let mut apt = Command::new("apt-get");
    apt.env("DEBIAN_FRONTEND", "noninteractive").args(["-o", "DPkg::Lock::Timeout=300"]).args(args);
    apt
}

fn apt_install(packages: &[&str]) -> Command {
    let mut apt = apt_get(&["install", "-y", "--no-install-recommends"]);
    apt.args(packages);
    apt
}

/// Installs the missing packages in one apt call, after refreshing the package lists; a
/// failed install is retried once after another refresh (mirrors change under us).
fn install_packages() -> Result<()> {
    let missing = missing_packages()?;
    let preseed = missing.contains(&"tshark");
    if !is_root() {
        eprintln!("setup: installing Debian packages needs root; as root, run:");
        if preseed {
            eprintln!("setup:   echo '{}' | debconf-set-selections", TSHARK_PRESEED.trim_end());
        }
        eprintln!("setup:   {}", display_cmd(&apt_get(&["update"])));
        eprintln!("setup:   {}", display_cmd(&apt_install(&missing)));
        bail!(
            "missing Debian packages ({}) and not root: run `cargo xtask setup` as root, or \
             the commands above",
            missing.join(" ")
        );
    }
    if preseed {
        run_cmd(&mut Command::new("debconf-set-selections"), Some(TSHARK_PRESEED))?;
    }
    run_cmd(&mut apt_get(&["update"]), None)?;
    if let Err(err) = run_cmd(&mut apt_install(&missing), None) {
        eprintln!("setup: {err:#}; refreshing the package lists and retrying once");
        run_cmd(&mut apt_get(&["update"]), None)?;
        run_cmd(&mut apt_install(&missing), None)?;
    }
    // Resolving a conflict, apt may remove an installed package of the list (a newer build of
    // it from another suite that the archive's versions of the others break): install what is
    // missing now, at the archive's version.
    let removed = missing_packages()?;
    if !removed.is_empty() {
        eprintln!(
            "setup: apt removed {} while installing the others; installing it again",
            removed.join(" ")
        );
        run_cmd(&mut apt_install(&removed), None)?;
    }
    Ok(())
}

fn nightly_present() -> Result<bool> {
    Ok(has_nightly(&capture_ok(tool("rustup").args(["toolchain", "list"]))?))
}

/// Whether `rustup toolchain list` shows the toolchain `+nightly` selects: plain `nightly`
/// or `nightly-<host>`, but not a dated `nightly-2024-05-01-<host>`.
fn has_nightly(toolchains: &str) -> bool {
    toolchains.lines().filter_map(|line| line.split_whitespace().next()).any(|name| {
        name == "nightly"
            || name
                .strip_prefix("nightly-")
                .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn rust_src_present() -> Result<bool> {
    let installed =
        capture_ok(tool("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    Ok(installed.lines().any(|line| line.split_whitespace().next() == Some("rust-src")))
}

/// The eBPF crate is built with `-Z build-std`, which needs the standard library's source.
fn install_rust_src() -> Result<()> {
    run_cmd(tool("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]), None)
}

fn bpf_linker_present() -> Result<bool> {
    let Some(exe) = find_program("bpf-linker") else {
        return Ok(false);
    };
    let out = capture(Command::new(exe).arg("--version"))?;
    Ok(out.status.success()
        && bpf_linker_version(&String::from_utf8_lossy(&out.stdout)) == Some(BPF_LINKER_VERSION))
}

/// The version in `bpf-linker --version` output (`bpf-linker 0.13.0`).
fn bpf_linker_version(output: &str) -> Option<&str> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("bpf-linker")).then(|| words.next()).flatten()
    })
}

/// Builds bpf-linker against Debian's LLVM 22: llvm-sys finds it through
/// `LLVM_SYS_221_PREFIX`, and the LLVM 22 tools are on `PATH`.
fn install_bpf_linker() -> Result<()> {
    cargo_install(BPF_LINKER_INSTALL, &[("PATH", augmented_path()), (LLVM_PREFIX_VAR, LLVM_PREFIX.into())])
}

fn cargo_fuzz_present() -> Result<bool> {
    Ok(capture(tool("cargo").args(["fuzz", "--version"]))?.status.success())
}

/// cargo-deb, which `cargo xtask package` builds the Debian package with.
pub fn ensure_cargo_deb() -> Result<()> {
    if capture(tool("cargo").args(["deb", "--version"]))?.status.success() {
        eprintln!("setup: cargo-deb: already present");
        return Ok(());
    }
    cargo_install(&["cargo-deb"], &[])
}

fn install_cargo_fuzz() -> Result<()> {
    cargo_install(&["cargo-fuzz"], &[])
}

/// `cargo install <args> --locked`, retried once without `--locked`: a published crate's
/// lock file can fail to resolve here, while a fresh resolution usually works.
fn cargo_install(args: &[&str], env: &[(&str, OsString)]) -> Result<()> {
    let install = |locked: bool| {
        let mut cargo = tool("cargo");
        cargo.arg("install").args(args).envs(env.iter().cloned());
        if locked {
            cargo.arg("--locked");
        }
        cargo
    };
    if let Err(err) = run_cmd(&mut install(true), None) {
        eprintln!("setup: {err:#}; retrying without --locked");
        run_cmd(&mut install(false), None)?;
    }
    Ok(())
}

/// A command for `name` as found on [`augmented_path`], so rustup, cargo and what cargo
/// installed are found even when this process's `PATH` lacks `~/.cargo/bin`.
fn tool(name: &str) -> Command {
    Command::new(find_program(name).unwrap_or_else(|| name.into()))
}

/// The first executable file called `name` in a directory of [`augmented_path`].
fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&augmented_path()).map(|dir| dir.join(name)).find(|path| {
        path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Prints `cmd`, then runs it with this process's stdout and stderr (so apt's and cargo's
/// progress shows) and, so that nothing can prompt, with `input` or nothing on stdin.
/// Fails with the command and its exit status.
fn run_cmd(cmd: &mut Command, input: Option<&str>) -> Result<()> {
    let shown = match input {
        Some(input) => format!("{} <<< {}", display_cmd(cmd), shell_quote(input.trim_end())),
        None => display_cmd(cmd),
    };
    eprintln!("setup: $ {shown}");
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("could not start `{shown}`"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Dropping `stdin` afterwards closes it, so the command sees the end of its input.
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("could not write the input of `{shown}`"))?;
    }
    let status = child.wait().with_context(|| format!("could not wait for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Prints `cmd`, then runs it to completion capturing its output; the caller judges the
/// exit status.
fn capture(cmd: &mut Command) -> Result<Output> {
    let shown = display_cmd(cmd);
    eprintln!("setup: $ {shown}");
    cmd.stdin(Stdio::null()).output().with_context(|| format!("could not run `{shown}`"))
}

/// Like [`capture`], but fails unless `cmd` succeeds; returns its stdout.
fn capture_ok(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}: {}",
            display_cmd(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd` as a shell command line, environment assignments first, to paste into a shell.
fn display_cmd(cmd: &Command) -> String {
    let env = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.to_string_lossy(), shell_quote(&value.to_string_lossy())))
    });
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| shell_quote(&word.to_string_lossy()));
    env.chain(words).collect::<Vec<_>>().join(" ")
}

/// `word` quoted for a POSIX shell when it needs to be.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-+=.,/:@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lines_decide_what_is_missing() {
        let status = "curl\tinstall ok installed\n\
                      tshark\tdeinstall ok config-files\n\
                      tcpdump\tunknown ok not-installed\n\
                      libclang-22-dev\tinstall ok installed\n\
                      libclang-22-dev\tinstall ok installed\n";
        let wanted = ["curl", "tshark", "tcpdump", "libclang-22-dev", "bpftool"];
        assert_eq!(missing_from_status(&wanted, status), ["tshark", "tcpdump", "bpftool"]);
    }

    #[test]
    fn nothing_missing_when_all_installed() {
        let status: String =
            PACKAGES.iter().map(|(package, _)| format!("{package}\t{INSTALLED}\n")).collect();
        let wanted: Vec<&str> = PACKAGES.iter().map(|(package, _)| *package).collect();
        assert!(missing_from_status(&wanted, &status).is_empty());
        assert_eq!(missing_from_status(&wanted, ""), wanted);
    }

    #[test]
    fn package_names_are_not_prefix_matched() {
        let status = "llvm-22-dev-extra\tinstall ok installed\n";
        assert_eq!(missing_from_status(&["llvm-22-dev"], status), ["llvm-22-dev"]);
    }

    #[test]
    fn bpf_linker_version_is_parsed() {
        assert_eq!(bpf_linker_version("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(bpf_linker_version("bpf-linker 0.12.2"), Some("0.12.2"));
        assert_eq!(bpf_linker_version("warning: x\nbpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(bpf_linker_version("bpf-linker\n"), None);
        assert_eq!(bpf_linker_version("rustc 0.13.0"), None);
    }

    #[test]
    fn nightly_is_found_in_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(has_nightly("nightly\n"));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        assert!(!has_nightly("nightly-2024-05-01-x86_64-unknown-linux-gnu\n"));
        assert!(!has_nightly(""));
    }

    #[test]
    fn path_gets_missing_dirs_in_front_without_duplicates() {
        let dirs = [PathBuf::from("/root/.cargo/bin"), PathBuf::from(LLVM_BIN)];
        assert_eq!(
            prepend_missing(&dirs, OsStr::new("/usr/bin:/bin")),
            OsStr::new("/root/.cargo/bin:/usr/lib/llvm-22/bin:/usr/bin:/bin")
        );
        assert_eq!(
            prepend_missing(&dirs, OsStr::new("/usr/bin:/root/.cargo/bin/")),
            OsStr::new("/usr/lib/llvm-22/bin:/usr/bin:/root/.cargo/bin/")
        );
        let full = OsStr::new("/usr/lib/llvm-22/bin:/root/.cargo/bin:/usr/bin");
        assert_eq!(prepend_missing(&dirs, full), full);
        assert_eq!(prepend_missing(&dirs, &prepend_missing(&dirs, full)), full);
        assert_eq!(
            prepend_missing(&dirs, OsStr::new("")),
            OsStr::new("/root/.cargo/bin:/usr/lib/llvm-22/bin")
        );
    }

    #[test]
    fn cargo_home_prefers_cargo_home_then_home() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(cargo_home(some("/opt/cargo"), some("/home/u")), Path::new("/opt/cargo"));
        assert_eq!(cargo_home(some(""), some("/home/u")), Path::new("/home/u/.cargo"));
        assert_eq!(cargo_home(None, None), Path::new("/root/.cargo"));
    }

    #[test]
    fn commands_are_shown_as_shell_lines() {
        let mut apt = apt_install(&["tshark", "curl"]);
        apt.env("X", "a b");
        assert_eq!(
            display_cmd(&apt),
            "DEBIAN_FRONTEND=noninteractive X='a b' apt-get -o DPkg::Lock::Timeout=300 \
             install -y --no-install-recommends tshark curl"
        );
        assert_eq!(shell_quote("${Status}"), "'${Status}'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
