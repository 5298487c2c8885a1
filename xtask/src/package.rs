//! `cargo xtask package`: the Debian package (cargo-deb, configured in mptcp-probe/Cargo.toml),
//! checked with lintian; with `--test`, installed into a throwaway Debian root (debootstrap from
//! Debian's archive), its units verified, and purged again, leaving nothing behind.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{cargo, run, setup, workspace_root};

/// The units the package ships, as `deploy/` holds them for an install by hand.
const UNITS: [&str; 3] = ["mptcp-probe.service", "mptcp-probe-serve.service", "mptcp-probe-collect.service"];
/// The commands that get a man page of their own besides `mptcp-probe(1)`.
const SUBCOMMANDS: [&str; 5] = ["watch", "check", "serve", "daemon", "collect"];
/// Debian's stable release the throwaway root is made of (this machine's userland).
pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

pub struct PackageOpts {
    pub test: bool,
}

fn stage() -> PathBuf {
    workspace_root().join("target/deb/stage")
}

/// Builds the package (set-up, release build, staged units and man pages, cargo-deb): its path.
pub fn build_deb() -> anyhow::Result<PathBuf> {
    setup::run(&setup::SetupOpts { with_test_tools: false })?;
    setup::ensure_cargo_deb()?;
    run(cargo().args(["build", "--release", "-p", "mptcp-probe"]))?;
    write_stage()?;
    let out = workspace_root().join("target/deb");
    run(cargo().args(["deb", "-p", "mptcp-probe", "--no-build", "--output"]).arg(&out))?;
    newest_deb(&out)
}

pub fn run_package(opts: &PackageOpts) -> anyhow::Result<()> {
    let deb = build_deb()?;
    lintian(&deb)?;
    eprintln!("package: {}", deb.display());
    if opts.test {
        install_test(&deb)?;
    }
    Ok(())
}

/// The units with the binary under /usr/bin, and man pages made from `--help` by help2man.
fn write_stage() -> anyhow::Result<()> {
    let dir = stage();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("man"))?;
    for unit in UNITS {
        let text = fs::read_to_string(workspace_root().join("deploy").join(unit))?;
        fs::write(dir.join(unit), text.replace("/usr/local/bin/", "/usr/bin/"))?;
    }
    let bin = workspace_root().join("target/release/mptcp-probe");
    let version = env!("CARGO_PKG_VERSION");
    let man = |page: &str, program: &Path, name: &str| -> anyhow::Result<()> {
        let out = Command::new("help2man")
            .args(["--no-info", "--section", "1", "--name", name])
            .arg(format!("--version-string=mptcp-probe {version}"))
            .arg(program)
            .output()
            .context("running help2man")?;
        if !out.status.success() {
            bail!("help2man {}: {}", program.display(), String::from_utf8_lossy(&out.stderr));
        }
        let path = dir.join("man").join(format!("{page}.1.gz"));
        let mut gz = Command::new("gzip")
            .args(["-9n"])
            .stdin(std::process::Stdio::piped())
            .stdout(fs::File::create(&path)?)
            .spawn()?;
        std::io::Write::write_all(gz.stdin.as_mut().expect("piped"), &out.stdout)?;
        drop(gz.stdin.take());
        if !gz.wait()?.success() {
            bail!("gzip of {page}.1 failed");
        }
        Ok(())
    };
    man("mptcp-probe", &bin, "Multipath TCP middlebox observer and measurement tool")?;
    for sub in SUBCOMMANDS {
        // help2man runs a program: a two-line script that is `mptcp-probe SUB`.
        let wrapper = dir.join(format!("mptcp-probe-{sub}"));
        fs::write(&wrapper, format!("#!/bin/sh\nexec {} {sub} \"$@\"\n", bin.display()))?;
        fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        man(&format!("mptcp-probe-{sub}"), &wrapper, &format!("mptcp-probe {sub}"))?;
        fs::remove_file(&wrapper)?;
    }
    Ok(())
}

fn newest_deb(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut debs: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    debs.pop().map(|(_, p)| p).context("cargo deb wrote no .deb")
}

/// Tags lintian may give this package, each with why it stays.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[
    (
        "copyright-without-copyright-notice",
        "cargo-deb's copyright file names the authors and the licence (MIT OR Apache-2.0), no years",
    ),
    (
        "initial-upload-closes-no-bugs",
        "the package is built to be installed, not uploaded to Debian: no ITP bug",
    ),
];

/// Runs lintian; errors and warnings fail unless listed (with why) in [`LINTIAN_ACCEPTED`].
fn lintian(deb: &Path) -> anyhow::Result<()> {
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--display-info"])
        .arg(deb)
        .output()
        .context("running lintian")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut refused = Vec::new();
    for line in text.lines() {
        eprintln!("lintian: {line}");
        // "E: mptcp-probe: tag-name [details]"
        let mut parts = line.splitn(3, ": ");
        let (Some(level), Some(_), Some(rest)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let tag = rest.split_whitespace().next().unwrap_or_default();
        if matches!(level, "E" | "W") && !LINTIAN_ACCEPTED.iter().any(|(t, _)| *t == tag) {
            refused.push(line.to_string());
        }
    }
    if !refused.is_empty() {
        bail!("lintian: {} error(s)/warning(s) not accepted:\n{}", refused.len(), refused.join("\n"));
    }
    Ok(())
}

/// Every path under `root`, but the ones a package manager run changes by itself: dpkg's own
/// records, caches, logs, /run (adduser's lock), and the backups adduser and deluser keep of
/// the account files (`/etc/shadow-` and the like).
fn tree(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new("find")
        .arg(root)
        .args([
            "-xdev",
            "-not",
            "-path",
            "*/var/cache/*",
            "-not",
            "-path",
            "*/var/log/*",
            "-not",
            "-path",
            "*/var/lib/dpkg/*",
            "-not",
            "-path",
            "*/proc/*",
            "-not",
            "-path",
            "*/dev/*",
            "-not",
            "-path",
            "*/tmp/*",
            "-not",
            "-path",
            "*/run/*",
            "-not",
            "-path",
            "*/run",
        ])
        .output()?;
    let backup = |p: &str| {
        ["passwd-", "group-", "shadow-", "gshadow-"].iter().any(|b| p.ends_with(&format!("/etc/{b}")))
    };
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|p| !backup(p)).map(str::to_string).collect())
}

pub fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Installs the package into a throwaway Debian root, checks what it put there, purges it.
fn install_test(deb: &Path) -> anyhow::Result<()> {
    let base = workspace_root().join("target/deb/root.tar.gz");
    let root = workspace_root().join("target/deb/root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    if !base.exists() {
        // Once per machine: a minimal root from Debian's archive, kept as a tarball.
        let tmp = workspace_root().join("target/deb/debootstrap");
        let _ = fs::remove_dir_all(&tmp);
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "--include=adduser", SUITE])
            .arg(&tmp)
            .arg(MIRROR))?;
        run(Command::new("tar").arg("-czf").arg(&base).arg("-C").arg(&tmp).arg("."))?;
        fs::remove_dir_all(&tmp)?;
    }
    run(Command::new("tar").arg("-xzf").arg(&base).arg("-C").arg(&root))?;
    let before = tree(&root)?;
    fs::copy(deb, root.join("tmp/mptcp-probe.deb"))?;
    run(&mut chroot(&root, &["dpkg", "-i", "/tmp/mptcp-probe.deb"]))?;
    // The binary runs there, the user exists, the units and the config are in place.
    run(&mut chroot(&root, &["mptcp-probe", "--version"]))?;
    run(&mut chroot(&root, &["getent", "passwd", "mptcp-probe"]))?;
    run(&mut chroot(
        &root,
        &["mptcp-probe", "daemon", "--config", "/etc/mptcp-probe/mptcp-probe.toml", "--check-config"],
    ))?;
    for page in ["mptcp-probe", "mptcp-probe-check"] {
        let p = root.join(format!("usr/share/man/man1/{page}.1.gz"));
        if !p.exists() {
            bail!("the package installed no man page {page}(1)");
        }
    }
    // The installed units verify, with the binary where the root has it (systemd-analyze runs
    // on this host: the minimal root has no systemd); their man pages are checked above.
    for u in UNITS {
        mptcp_probe_tests::daemon::verify_unit(
            &root.join("usr/lib/systemd/system").join(u),
            "/usr/bin/mptcp-probe",
            &root.join("usr/bin/mptcp-probe"),
            &workspace_root().join("target/deb"),
        )?;
    }
    // Nothing was enabled.
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    for u in UNITS {
        if wants.join(u).exists() {
            bail!("installing the package enabled {u}: it must be left to the administrator");
        }
    }
    fs::remove_file(root.join("tmp/mptcp-probe.deb"))?;
    run(&mut chroot(&root, &["dpkg", "--purge", "mptcp-probe"]))?;
    let after = tree(&root)?;
    let left: Vec<&String> = after.difference(&before).collect();
    let gone: Vec<&String> = before.difference(&after).collect();
    if !left.is_empty() || !gone.is_empty() {
        bail!("purging the package left {left:?} behind and took {gone:?} away");
    }
    let passwd = fs::read_to_string(root.join("etc/passwd"))?;
    if passwd.lines().any(|l| l.starts_with("mptcp-probe:")) {
        bail!("purging the package left its user behind");
    }
    fs::remove_dir_all(&root)?;
    eprintln!("package: installed in a {SUITE} root, verified, purged: nothing left behind");
    Ok(())
}
