//! `cargo xtask image`: a bootable VM image made of Debian packages only — Debian stable with its
//! own kernel (MPTCP and BTF on), systemd-boot on an EFI system partition, the package of
//! `cargo xtask package` — that runs `mptcp-probe check` at boot against the server its
//! configuration names (`mptcp-probe.conf` on the EFI partition) and shows the result on the
//! screen and the serial console. Written as a raw GPT disk, qcow2 (QEMU, UTM) and VMDK
//! (VirtualBox, VMware), without loop devices or mounts: the partitions are made as files
//! (mkfs.ext4 -d, mkfs.vfat + mtools) and put in place.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{
    package::{self, chroot, MIRROR, SUITE},
    run, workspace_root,
};

/// What the root is made of besides minbase.
const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "systemd-sysv",
    "dbus",
    "systemd-resolved",
    "udev",
    "kmod",
    "iproute2",
    "initramfs-tools",
    "systemd-boot-efi",
    "adduser",
    "procps",
    "ca-certificates",
    "nano",
];
/// Partition identities, fixed so that the boot entry and fstab can name them.
const ESP_UUID: &str = "6f9a6c1e-7b1a-4c8e-9d0a-3a6d2f1b7c01";
const ROOT_UUID: &str = "6f9a6c1e-7b1a-4c8e-9d0a-3a6d2f1b7c02";
const ESP_MIB: u64 = 96;
/// Kernel modules a VM does not need: graphics, sound, media, wireless, InfiniBand, staging.
const PRUNED_MODULES: &[&str] = &[
    "kernel/drivers/gpu",
    "kernel/sound",
    "kernel/drivers/media",
    "kernel/drivers/net/wireless",
    "kernel/drivers/infiniband",
    "kernel/drivers/staging",
    "kernel/drivers/bluetooth",
    "kernel/net/bluetooth",
    "kernel/drivers/isdn",
    "kernel/drivers/iio",
    "kernel/drivers/hid",
    "kernel/drivers/input/joystick",
    "kernel/drivers/input/touchscreen",
    "kernel/drivers/net/ethernet/mellanox",
    "kernel/drivers/scsi/qla2xxx",
    "kernel/drivers/scsi/lpfc",
    "kernel/fs/btrfs",
    "kernel/fs/xfs",
    "kernel/fs/ocfs2",
    "kernel/fs/gfs2",
    "kernel/fs/nfs",
    "kernel/fs/ceph",
    "kernel/fs/smb",
];

pub struct ImageOpts {
    pub test: bool,
}

/// The formats a raw disk is shipped in besides itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    /// QEMU, UTM: compressed.
    Qcow2,
    /// VirtualBox, VMware: stream-optimized (compressed, the kind OVA appliances carry).
    Vmdk,
}

impl Format {
    pub const fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
        }
    }
}

/// `raw` written as `format` to `out` (qemu-img).
pub fn convert(raw: &Path, format: Format, out: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("qemu-img");
    match format {
        Format::Raw => cmd.args(["convert", "-O", "raw"]),
        Format::Qcow2 => cmd.args(["convert", "-c", "-O", "qcow2"]),
        Format::Vmdk => cmd.args(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"]),
    };
    run(cmd.arg(raw).arg(out))
}

/// The version of the kernel the last built image boots (its `uname -r`).
pub fn kernel_version() -> anyhow::Result<String> {
    Ok(fs::read_to_string(dir().join("kernel-version")).context("build the image first")?.trim().to_string())
}

pub struct Image {
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub vmdk: PathBuf,
}

fn dir() -> PathBuf {
    workspace_root().join("target/image")
}

pub fn run_image(opts: &ImageOpts) -> anyhow::Result<()> {
    let deb = package::build_deb()?;
    let image = build(&deb)?;
    for p in [&image.raw, &image.qcow2, &image.vmdk] {
        let size = fs::metadata(p)?.len();
        eprintln!("image: {} ({:.0} MB)", p.display(), size as f64 / 1e6);
    }
    if opts.test {
        crate::image_test::run(&image)?;
    }
    Ok(())
}

/// The base root: debootstrap from Debian's archive once, kept as a tarball.
fn base_root() -> anyhow::Result<PathBuf> {
    // Named by what it is made of: another list of packages is another root.
    let id = PACKAGES
        .iter()
        .fold(0u64, |h, p| p.bytes().fold(h, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    let base = dir().join(format!("base-{SUITE}-{id:016x}.tar.gz"));
    if base.exists() {
        return Ok(base);
    }
    let tmp = dir().join("debootstrap");
    let _ = fs::remove_dir_all(&tmp);
    eprintln!("image: debootstrap {SUITE} with its kernel (once; kept as {})", base.display());
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", PACKAGES.join(",")), SUITE])
        .arg(&tmp)
        .arg(MIRROR))?;
    // Written aside and renamed: an interrupted build leaves no half tarball to be taken.
    let part = base.with_extension("part");
    run(Command::new("tar").arg("-czf").arg(&part).arg("-C").arg(&tmp).arg("."))?;
    fs::rename(&part, &base)?;
    fs::remove_dir_all(&tmp)?;
    Ok(base)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    if let Some(d) = link.parent() {
        fs::create_dir_all(d)?;
    }
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).with_context(|| format!("linking {}", link.display()))
}

/// The one file of `dir` whose name starts with `prefix` (the kernel, its initrd).
fn only(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    found.sort();
    found.pop().with_context(|| format!("no {prefix}* in {}", dir.display()))
}

/// The root made ready: the package installed, the boot check enabled, the network by DHCP
/// (or as configured), root logged in on the console, modules a VM does not need removed.
fn prepare_root(root: &Path, deb: &Path) -> anyhow::Result<String> {
    fs::copy(deb, root.join("tmp/mptcp-probe.deb"))?;
    run(&mut chroot(root, &["dpkg", "-i", "/tmp/mptcp-probe.deb"]))?;
    fs::remove_file(root.join("tmp/mptcp-probe.deb"))?;
    let deploy = workspace_root().join("deploy/image");
    fs::copy(deploy.join("mptcp-probe-vm"), root.join("usr/local/sbin/mptcp-probe-vm"))?;
    fs::set_permissions(
        root.join("usr/local/sbin/mptcp-probe-vm"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    fs::copy(deploy.join("mptcp-probe-vm.service"), root.join("etc/systemd/system/mptcp-probe-vm.service"))?;
    write(&root.join("etc/hostname"), "mptcp-probe-vm\n")?;
    write(&root.join("etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 mptcp-probe-vm\n::1 localhost\n")?;
    write(
        &root.join("etc/fstab"),
        &format!(
            "PARTUUID={ROOT_UUID} / ext4 defaults,errors=remount-ro 0 1\n\
             PARTUUID={ESP_UUID} /boot/efi vfat defaults,umask=0022,nofail 0 2\n"
        ),
    )?;
    fs::create_dir_all(root.join("boot/efi"))?;
    write(
        &root.join("etc/systemd/network/50-wired.network"),
        "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n",
    )?;
    // Root on the console without a password: a throwaway VM on the user's own laptop, with
    // no remote login.
    write(
        &root.join("etc/systemd/system/getty@tty1.service.d/autologin.conf"),
        "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear %I $TERM\n",
    )?;
    run(&mut chroot(root, &["passwd", "-d", "root"]))?;
    for unit in ["mptcp-probe-vm.service", "systemd-networkd.service", "systemd-resolved.service"] {
        run(&mut chroot(root, &["systemctl", "enable", unit]))?;
    }
    symlink("../run/systemd/resolve/stub-resolv.conf", &root.join("etc/resolv.conf"))?;
    let kernel = only(&root.join("boot"), "vmlinuz-")?;
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("the kernel's version")?
        .to_string();
    let modules = root.join("lib/modules").join(&version);
    for m in PRUNED_MODULES {
        let _ = fs::remove_dir_all(modules.join(m));
    }
    run(&mut chroot(root, &["depmod", &version]))?;
    // The initrd made again after the pruning (Debian's MODULES=most: any disk a VM may have),
    // with the virtual disks' drivers named.
    write(
        &root.join("etc/initramfs-tools/modules"),
        "virtio_pci\nvirtio_blk\nvirtio_scsi\nahci\nnvme\nsd_mod\next4\n",
    )?;
    run(&mut chroot(root, &["update-initramfs", "-u", "-k", &version]))?;
    // Nothing of the build's own left in the image.
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let p = root.join(d);
        if p.exists() {
            for e in fs::read_dir(&p)?.filter_map(Result::ok) {
                if e.path().is_file() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    let _ = fs::remove_dir_all(root.join("usr/share/doc"));
    let _ = fs::remove_dir_all(root.join("usr/share/locale"));
    fs::create_dir_all(root.join("usr/share/doc"))?;
    Ok(version)
}

fn du_bytes(p: &Path) -> anyhow::Result<u64> {
    let o = Command::new("du").args(["-sb"]).arg(p).output()?;
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).context("du")
}

/// The EFI system partition as a file: systemd-boot, the kernel and initrd, the boot entry, the
/// configuration the user edits.
fn esp(root: &Path, version: &str, out: &Path, conf: &str, cmdline_extra: &str) -> anyhow::Result<()> {
    let _ = fs::remove_file(out);
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "MPTCPPROBE", "-C"])
        .arg(out)
        .arg((ESP_MIB * 1024).to_string()))?;
    let staging = dir().join("esp");
    let _ = fs::remove_dir_all(&staging);
    write(&staging.join("loader/loader.conf"), "default mptcp-probe.conf\ntimeout 0\nconsole-mode keep\n")?;
    write(
        &staging.join("loader/entries/mptcp-probe.conf"),
        &format!(
            "title mptcp-probe (Debian {SUITE}, Linux {version})\nlinux /vmlinuz\ninitrd /initrd.img\n\
             options root=PARTUUID={ROOT_UUID} rw console=ttyS0,115200 console=tty0 quiet{cmdline_extra}\n"
        ),
    )?;
    write(&staging.join("mptcp-probe.conf"), conf)?;
    fs::create_dir_all(staging.join("EFI/BOOT"))?;
    fs::copy(
        root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        staging.join("EFI/BOOT/BOOTX64.EFI"),
    )?;
    fs::copy(root.join(format!("boot/vmlinuz-{version}")), staging.join("vmlinuz"))?;
    fs::copy(root.join(format!("boot/initrd.img-{version}")), staging.join("initrd.img"))?;
    let mut cmd = Command::new("mcopy");
    cmd.args(["-s", "-i"]).arg(out);
    for e in fs::read_dir(&staging)?.filter_map(Result::ok) {
        cmd.arg(e.path());
    }
    cmd.arg("::/");
    run(&mut cmd)?;
    fs::remove_dir_all(&staging)?;
    Ok(())
}

/// A GPT disk of the two partition files.
fn disk(esp: &Path, rootfs: &Path, out: &Path) -> anyhow::Result<()> {
    const SECTOR: u64 = 512;
    let mib = 1024 * 1024 / SECTOR;
    let esp_sectors = fs::metadata(esp)?.len() / SECTOR;
    let root_sectors = fs::metadata(rootfs)?.len() / SECTOR;
    let root_start = 2048 + esp_sectors.div_ceil(mib) * mib;
    let total = (root_start + root_sectors + 2048) * SECTOR;
    let _ = fs::remove_file(out);
    fs::File::create(out)?.set_len(total)?;
    let script = format!(
        "label: gpt\nunit: sectors\n\
         start=2048, size={esp_sectors}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid={ESP_UUID}, name=\"esp\"\n\
         start={root_start}, size={root_sectors}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid={ROOT_UUID}, name=\"root\"\n"
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running sfdisk")?;
    std::io::Write::write_all(sfdisk.stdin.as_mut().expect("piped"), script.as_bytes())?;
    drop(sfdisk.stdin.take());
    if !sfdisk.wait()?.success() {
        bail!("sfdisk could not write the partition table");
    }
    for (part, start) in [(esp, 2048), (rootfs, root_start)] {
        run(Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "oflag=seek_bytes", "status=none"])
            .arg(format!("seek={}", start * SECTOR)))?;
    }
    Ok(())
}

/// The configuration as shipped: every setting empty, documented.
pub fn shipped_conf() -> anyhow::Result<String> {
    Ok(fs::read_to_string(workspace_root().join("deploy/image/mptcp-probe.conf"))?)
}

/// Builds the image: the raw disk, and qcow2 and VMDK made from it.
pub fn build(deb: &Path) -> anyhow::Result<Image> {
    fs::create_dir_all(dir())?;
    let base = base_root()?;
    let root = dir().join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    run(Command::new("tar").arg("-xzf").arg(&base).arg("-C").arg(&root))?;
    let version = prepare_root(&root, deb)?;
    let rootfs = dir().join("root.ext4");
    let _ = fs::remove_file(&rootfs);
    // Room to spare for the journal, logs and a report or two.
    let size_mib = (du_bytes(&root)? as f64 * 1.08 / 1048576.0) as u64 + 48;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "mpp-root", "-E", "root_owner=0:0", "-d"])
        .arg(&root)
        .arg(&rootfs)
        .arg(format!("{size_mib}M")))?;
    let esp_file = dir().join("esp.vfat");
    esp(&root, &version, &esp_file, &shipped_conf()?, "")?;
    let raw = dir().join("mptcp-probe-vm.raw");
    disk(&esp_file, &rootfs, &raw)?;
    // The partition files stay for the boot test to make its own disks from.
    let qcow2 = dir().join("mptcp-probe-vm.qcow2");
    let vmdk = dir().join("mptcp-probe-vm.vmdk");
    convert(&raw, Format::Qcow2, &qcow2)?;
    convert(&raw, Format::Vmdk, &vmdk)?;
    fs::write(dir().join("kernel-version"), &version)?;
    Ok(Image { raw, qcow2, vmdk })
}

/// A disk like the image's, with `conf` as its configuration and `cmdline_extra` on the kernel
/// command line (for the boot test: what a user edits, without editing the image itself).
pub fn disk_with(conf: &str, cmdline_extra: &str, out: &Path) -> anyhow::Result<()> {
    let version = kernel_version()?;
    let esp_file = out.with_extension("esp");
    esp(&dir().join("root"), &version, &esp_file, conf, cmdline_extra)?;
    disk(&esp_file, &dir().join("root.ext4"), out)?;
    fs::remove_file(&esp_file)?;
    Ok(())
}
