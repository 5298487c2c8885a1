//! `cargo xtask image --test`: the image booted with QEMU (UEFI, OVMF) against the lab, as a
//! laptop would boot it: a tap link into the lab's client namespace (the client routes it on,
//! masqueraded) with `mptcp-probe serve` behind the router: on a clean path the console shows
//! `mptcp_ok` (and the report at the lab's collector, with the network kind the configuration
//! chose), through a router that strips MP_CAPABLE from SYNs `syn_option_stripped`, and
//! through QEMU's user-mode network (which terminates TCP in the host) `proxied`; each of the
//! three shipped formats (VMDK, qcow2, raw) is booted once. On the kernel of the image (6.1) the
//! observer attaches under clsact, and says so. KVM when it
//! works, else TCG (here a KVM guest stalls at boot: detected, said, and TCG used).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mptcp_probe_tests::{
    collect::Collector,
    lab::{addr, sh, Lab, Netns},
    matrix, scenario,
    workspace::MIDDLEBOX,
};

use crate::image::{self, Format, Image};

const TAP: &str = "mpptap0";
const TAP_HOST: &str = "192.0.2.193/30";
const VM_ADDRESS: &str = "192.0.2.194/30";
const VM_GATEWAY: &str = "192.0.2.193";
/// A boot to the verdict at most this long (TCG: about a minute here).
const BOOT_DEADLINE: Duration = Duration::from_secs(420);
/// KVM is taken as stalled when the kernel has said nothing on the console by then.
const KVM_PROBE: Duration = Duration::from_secs(45);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

enum Net {
    /// A tap in the lab's client namespace; the VM has a static address behind it.
    Tap,
    /// QEMU's user-mode network (slirp): the VM's TCP connections end in QEMU.
    User,
}

fn ovmf_vars(dir: &Path) -> anyhow::Result<PathBuf> {
    let vars = dir.join("OVMF_VARS.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).context("OVMF (Debian's ovmf package)")?;
    Ok(vars)
}

/// Boots `disk` in `ns`; the serial console's text once the boot check is done (the VM powers
/// off), or an error with what the console showed.
fn boot(
    ns: &Netns,
    (disk, format): (&Path, Format),
    net: &Net,
    accel: Accel,
    deadline: Duration,
    dir: &Path,
) -> anyhow::Result<String> {
    let console = dir.join(format!("console-{}.log", std::process::id()));
    let _ = fs::remove_file(&console);
    let vars = ovmf_vars(dir)?;
    let mut cmd = ns.cmd("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-m", "1024", "-smp", "2", "-nographic", "-monitor", "none", "-no-reboot"])
        .args(["-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }])
        .args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("file={},format={},if=virtio", disk.display(), format.qemu_name()))
        // Nothing the VM writes reaches the disk file.
        .arg("-snapshot")
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    match net {
        Net::Tap => cmd.args(["-netdev", &format!("tap,id=n0,ifname={TAP},script=no,downscript=no")]),
        Net::User => cmd.args(["-netdev", "user,id=n0"]),
    };
    cmd.args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Killed and reaped however this ends (an error, a panic).
    struct Qemu(std::process::Child);
    impl Drop for Qemu {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut qemu = Qemu(cmd.spawn().context("starting qemu-system-x86_64 (Debian's qemu-system-x86)")?);
    let child = &mut qemu.0;
    let start = Instant::now();
    let read = || fs::read(&console).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let result = loop {
        let exited = match child.try_wait() {
            Ok(e) => e,
            Err(e) => break Err(anyhow::anyhow!("waiting for QEMU: {e}")),
        };
        if let Some(status) = exited {
            let text = read();
            if text.contains("mptcp-probe-vm: done") {
                break Ok(text);
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            break Err(anyhow::anyhow!("the VM stopped ({status}) before its check was done: {err}\n{text}"));
        }
        let text = read();
        if accel == Accel::Kvm
            && start.elapsed() > KVM_PROBE
            && !text.contains("Linux version")
            && !text.contains("mptcp-probe-vm")
        {
            break Err(anyhow::anyhow!("KVM: no kernel output in {KVM_PROBE:?}"));
        }
        if start.elapsed() > deadline {
            break Err(anyhow::anyhow!("the VM did not finish its check in {deadline:?}:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(qemu);
    let _ = fs::remove_file(&vars);
    result
}

/// KVM if /dev/kvm is there and a guest boots with it, else TCG.
fn pick_accel(ns: &Netns, disk: (&Path, Format), dir: &Path) -> anyhow::Result<(Accel, Option<String>)> {
    if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        eprintln!("image test: no usable /dev/kvm: TCG");
        return Ok((Accel::Tcg, None));
    }
    match boot(ns, disk, &Net::Tap, Accel::Kvm, BOOT_DEADLINE, dir) {
        Ok(text) => Ok((Accel::Kvm, Some(text))),
        Err(e) if e.to_string().starts_with("KVM:") => {
            eprintln!("image test: a KVM guest stalls at boot on this host ({e}): TCG");
            Ok((Accel::Tcg, None))
        }
        Err(e) => Err(e),
    }
}

/// The tap in the client namespace, routed on and masqueraded (the lab's router knows only the
/// client's own addresses).
fn tap(lab: &Lab) {
    let c = &lab.c;
    sh(c.cmd("ip").args(["tuntap", "add", "dev", TAP, "mode", "tap"]));
    sh(c.cmd("ip").args(["addr", "add", TAP_HOST, "dev", TAP]));
    sh(c.cmd("ip").args(["link", "set", TAP, "up"]));
    c.sysctl("net.ipv4.ip_forward=1");
    sh(c.cmd("iptables").args([
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "192.0.2.192/30",
        "-j",
        "MASQUERADE",
    ]));
}

/// Where the lab's collector listens, in the server's namespace.
const COLLECTOR_PORT: u16 = 8088;

fn conf(net: &Net, upload: Option<&str>) -> String {
    let mut c = format!("server={}\nnetwork_kind=other\nnote=lab boot test\n", addr::SERVER);
    if matches!(net, Net::Tap) {
        c.push_str(&format!("address={VM_ADDRESS}\ngateway={VM_GATEWAY}\n"));
    }
    if let Some(u) = upload {
        c.push_str(&format!("upload={u}\n"));
    }
    c
}

/// The report the VM uploaded, fetched back from the collector with the page URL the console
/// showed: it must be there, with the network kind the configuration chose.
fn uploaded(console: &str, collector: &Collector) -> anyhow::Result<()> {
    let url = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("uploaded: "))
        .with_context(|| format!("the console shows no upload:\n{console}"))?;
    let path = url.trim().strip_prefix(&collector.url).context("the page URL is the lab collector's")?;
    let json_path = path.replacen("/reports/", "/api/v1/reports/", 1);
    let answer = collector.get(&json_path, &[]);
    if answer.status != 200 {
        bail!("the collector answers {} for the uploaded report {json_path}", answer.status);
    }
    let report = answer.json();
    if report["client"]["network_kind"] != "other" || report["summary"]["mptcp_usable"] != true {
        bail!("the uploaded report is not the clean path's from an `other` network: {report}");
    }
    eprintln!("image test: the report is at the collector: {url}");
    Ok(())
}

/// The verdict line of a console: what `check` said of the path.
fn answer(console: &str) -> String {
    console
        .lines()
        .filter(|l| l.contains("on this path to") || l.contains("mptcp-probe-vm:"))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// On a kernel before 6.6 (Debian 12's 6.1) the observer attached under clsact (no TCX), and
/// the start-up said where fallback reasons come from.
fn older_kernel_path(console: &str, kernel: &str) -> anyhow::Result<()> {
    let mut v = kernel.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    let attached = console.lines().filter(|l| l.contains("observing ") && l.contains("(ifindex"));
    let want = if (major, minor) < (6, 6) { "clsact" } else { "TCX" };
    if !attached.clone().any(|l| l.contains(want)) {
        bail!("kernel {kernel}: the observer did not say it attached through {want}:\n{console}");
    }
    if !console.contains("fallback reasons:") {
        bail!("kernel {kernel}: the start-up did not say where fallback reasons come from:\n{console}");
    }
    eprintln!("image test: kernel {kernel}: the observer attached through {want}");
    Ok(())
}

pub fn run(image: &Image) -> anyhow::Result<()> {
    let dir = image.raw.parent().context("the image's directory")?.join("test");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let lab = Lab::up();
    let (_serve, _serve_dir) = matrix::serve(&lab.s, &mptcp_probe_tests::probe_bin())?;
    tap(&lab);
    // Each shipped format is booted once: VMDK (VirtualBox) on the clean path, qcow2 (QEMU,
    // UTM) through the stripping router, raw through the user-mode network.
    let collector =
        Collector::start_in(Some(&lab.s), &format!("{}:{COLLECTOR_PORT}", addr::SERVER), None, &[]);
    let disk =
        |net: &Net, name: &str, format: Format, upload: Option<&str>| -> anyhow::Result<(PathBuf, Format)> {
            let raw = dir.join(format!("{name}.raw"));
            // The kernel's messages on the console too: the KVM probe looks for them.
            image::disk_with(&conf(net, upload), " loglevel=6 mptcp_probe.poweroff=1", &raw)?;
            if format == Format::Raw {
                return Ok((raw, format));
            }
            let out = dir.join(format!("{name}.{}", format.qemu_name()));
            image::convert(&raw, format, &out)?;
            fs::remove_file(&raw)?;
            Ok((out, format))
        };
    let vmdk = disk(&Net::Tap, "tap", Format::Vmdk, Some(&collector.url))?;
    let clean = (vmdk.0.as_path(), vmdk.1);
    let started = Instant::now();
    let (accel, first) = pick_accel(&lab.c, clean, &dir)?;
    let mut results = Vec::new();
    let expect = |what: &str, console: &str, verdict: &str| -> anyhow::Result<()> {
        let said = answer(console);
        eprintln!("image test, {what}:\n{said}");
        if !said.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|w| w == verdict) {
            bail!("{what}: the console does not show {verdict}:\n{console}");
        }
        Ok(())
    };
    let console = match first {
        Some(c) => c,
        None => boot(&lab.c, clean, &Net::Tap, accel, BOOT_DEADLINE, &dir)?,
    };
    expect("clean path", &console, "mptcp_ok")?;
    // A single-homed VM has no second address to join from: that test is not run, and the
    // answer is still given.
    if !console.contains("MPTCP works on this path to") {
        bail!("clean path: the answer is not that MPTCP works:\n{console}");
    }
    older_kernel_path(&console, &image::kernel_version()?)?;
    uploaded(&console, &collector)?;
    results.push(("clean path, VMDK", started.elapsed()));
    let qcow2 = disk(&Net::Tap, "tap", Format::Qcow2, None)?;
    {
        let _strip = scenario::apply(&lab, scenario::named("syn-strip"), &MIDDLEBOX.path())?;
        let t = Instant::now();
        let console = boot(&lab.c, (&qcow2.0, qcow2.1), &Net::Tap, accel, BOOT_DEADLINE, &dir)?;
        expect("a router stripping MP_CAPABLE from SYNs", &console, "syn_option_stripped")?;
        results.push(("syn-strip, qcow2", t.elapsed()));
    }
    let user = disk(&Net::User, "user", Format::Raw, None)?;
    let t = Instant::now();
    let console = boot(&lab.c, (&user.0, user.1), &Net::User, accel, BOOT_DEADLINE, &dir)?;
    expect("QEMU's user-mode network", &console, "proxied")?;
    results.push(("user-mode network, raw", t.elapsed()));
    for (what, took) in results {
        eprintln!("image test: {what}: verdict on the console after {:.0} s ({accel:?})", took.as_secs_f64());
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
