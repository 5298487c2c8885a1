//! A classifier that does nothing, attached next to the observer's on both hooks of an interface
//! (TCX, after them): what the kernel's run-time counters say of a program run on real traffic
//! when the program does no work — their own clock reads and the call. The observer's programs
//! are measured against it as the test runs measure them against `tc_empty`.
//!
//! Loaded with the bpf syscall directly (two instructions: `r0 = TCX_NEXT; exit`), so that the
//! bench needs no second eBPF object; attached from a thread that enters the interface's network
//! namespace, since an ifindex means something only there.

use std::{
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{anyhow, bail, Context as _};

use super::host;

/// The bpf commands, program type and attach types used (include/uapi/linux/bpf.h).
mod uapi {
    pub const BPF_PROG_LOAD: libc::c_int = 5;
    pub const BPF_LINK_CREATE: libc::c_int = 28;
    pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    pub const BPF_TCX_INGRESS: u32 = 46;
    pub const BPF_TCX_EGRESS: u32 = 47;
    /// `r0 = -1` (TCX_NEXT: on to the next program) and `exit`, as `struct bpf_insn`s.
    pub const PROGRAM: [[u8; 8]; 2] = [[0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], [0x95, 0, 0, 0, 0, 0, 0, 0]];
}

/// The prefix of `union bpf_attr` that BPF_PROG_LOAD reads; the kernel takes the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The prefix of `union bpf_attr` that BPF_LINK_CREATE reads for a TCX link.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// The hooks of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    fn attach_type(self) -> u32 {
        match self {
            Hook::Ingress => uapi::BPF_TCX_INGRESS,
            Hook::Egress => uapi::BPF_TCX_EGRESS,
        }
    }

    fn prog_name(self) -> &'static [u8] {
        match self {
            Hook::Ingress => b"bench_empty_in",
            Hook::Egress => b"bench_empty_out",
        }
    }
}

/// One empty program per hook, attached while this lives.
pub struct EmptyClassifier {
    /// (hook, program, link); the links detach when closed.
    attached: Vec<(Hook, OwnedFd, OwnedFd)>,
}

/// `bpf(cmd, attr)`: the new descriptor.
fn bpf<T>(cmd: libc::c_int, attr: &T, what: &str) -> anyhow::Result<OwnedFd> {
    // SAFETY: attr is a live, initialised repr(C) prefix of union bpf_attr of the size passed;
    // the kernel reads at most that many bytes of it.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>() as libc::c_uint) };
    if fd < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to us and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load(hook: Hook) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..hook.prog_name().len()].copy_from_slice(hook.prog_name());
    let attr = ProgLoadAttr {
        prog_type: uapi::BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: uapi::PROGRAM.len() as u32,
        insns: uapi::PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    bpf(uapi::BPF_PROG_LOAD, &attr, "loading an empty classifier")
}

fn attach(prog: &OwnedFd, ifindex: u32, hook: Hook) -> anyhow::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: hook.attach_type(),
        ..Default::default()
    };
    bpf(uapi::BPF_LINK_CREATE, &attr, "attaching an empty classifier (TCX, Linux 6.6 and later)")
}

/// Enters the network namespace `netns` (this thread only).
fn enter(netns: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(netns);
    let ns = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a namespace descriptor we hold open; it changes this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("entering network namespace {netns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => bail!("no interface {iface}: {}", std::io::Error::last_os_error()),
        i => Ok(i),
    }
}

impl EmptyClassifier {
    /// Attaches an empty program on ingress and on egress of `iface` in `netns`.
    pub fn attach(netns: &str, iface: &str) -> anyhow::Result<Self> {
        let (netns, iface) = (netns.to_string(), iface.to_string());
        std::thread::spawn(move || -> anyhow::Result<Self> {
            enter(&netns)?;
            let index = ifindex(&iface)?;
            let mut attached = Vec::new();
            for hook in Hook::ALL {
                let prog = load(hook)?;
                let link = attach(&prog, index, hook)?;
                attached.push((hook, prog, link));
            }
            Ok(Self { attached })
        })
        .join()
        .map_err(|_| anyhow!("the thread attaching the empty classifier panicked"))?
    }

    /// `(run_time_ns, run_cnt)` of the program on `hook`, from its fdinfo.
    pub fn run_counters(&self, hook: Hook) -> Option<(u64, u64)> {
        let (_, prog, _) = self.attached.iter().find(|(h, _, _)| *h == hook)?;
        let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", prog.as_raw_fd())).ok()?;
        Some((host::fdinfo_field(&text, "run_time_ns")?, host::fdinfo_field(&text, "run_cnt")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attributes_have_the_kernels_layout() {
        // Offsets of union bpf_attr's fields for these commands.
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<LinkCreateAttr>(), 32);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, relative_fd), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, expected_revision), 24);
        for hook in Hook::ALL {
            assert!(hook.prog_name().len() < 16, "a program name has at most 15 characters");
        }
    }
}
