//! The kernel side: the aya loader loads the kernel programs, attaches TC to interfaces and the
//! tracepoints, tries the optional fentry, and gives access to the ring buffer, the flow table and
//! the counters; the tracepoints' offsets come from tracefs, the namespace offsets from BTF.

pub mod btf;
pub mod decode;
pub mod iface;
pub mod prog_bench;
pub mod tracefs;

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        tc::{SchedClassifierLinkId, TcAttachType},
        BtfTracePoint, FEntry, SchedClassifier, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use mptcp_probe_common::{
    config::{
        level, wakeup, MappingOffsets, ReceiveResetOffsets, SendResetOffsets, SockFieldOffsets,
        SockStateOffsets,
    },
    counters,
    flow::{FlowAcc, FlowKey, FlowState},
};

use iface::Interface;
pub use mptcp_probe_model::watch::FallbackSource;

/// What the kernel programs report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventLevel {
    /// Every packet that matters, with its headers, and the socket-state events: for per-packet
    /// output, traces, and the per-connection views of `check` and `serve`.
    All,
    /// What went wrong and the end of each flow, without headers; no socket-state events (unless
    /// fentry needs them to place its fallback reasons): for flow summaries and counts.
    Flows,
}

impl EventLevel {
    fn global(self) -> u8 {
        match self {
            EventLevel::All => level::ALL,
            EventLevel::Flows => level::FLOWS,
        }
    }
}

pub struct ObserverOptions {
    pub flow_table_size: u32,
    pub level: EventLevel,
    /// Also the kernel's own view of each DSS mapping (`mptcp:get_mapping_status`,
    /// `mptcp:subflow_check_data_avail`): they fire for every mapping of every namespace on the
    /// host, so they are off unless asked for.
    pub kernel_mappings: bool,
    /// Wake the reader only when the ring fills up; it drains the ring on its own tick (about a
    /// quarter of a second later). Far cheaper per event; for readers that can wait that long.
    pub batched_wakeups: bool,
}

impl Default for ObserverOptions {
    fn default() -> Self {
        Self {
            flow_table_size: 65536,
            level: EventLevel::All,
            kernel_mappings: false,
            batched_wakeups: false,
        }
    }
}

pub struct Observer {
    ebpf: Ebpf,
    attached: HashMap<String, Attached>,
    pub fallback_source: FallbackSource,
    /// Flow-table entries removed by user space (for the eviction count).
    pub flows_removed: u64,
    pub tracepoints: Vec<String>,
    /// TC programs the verifier rejected when an interface first needed them, with why: not
    /// tried again for every interface (nor every rescan).
    rejected: HashMap<&'static str, String>,
}

struct Attached {
    ifindex: u32,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

/// Snapshot of the kernel counters summed over CPUs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub values: BTreeMap<&'static str, u64>,
}

impl Counters {
    pub fn get(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }
}

/// The TC programs of interfaces with a link layer, and of those without (a tunnel, WireGuard).
const TC_PROGRAMS_L2: [&str; 2] = ["tc_ingress", "tc_egress"];
const TC_PROGRAMS_L3: [&str; 2] = ["tc_ingress_l3", "tc_egress_l3"];

impl Observer {
    /// Loads the programs and attaches the tracepoints. Interfaces are attached separately.
    pub fn load(opts: &ObserverOptions) -> anyhow::Result<Self> {
        crate::host::preflight::raise_memlock();
        let root = tracefs::ensure_mounted()?;
        let sock = tracefs::read_format(&root, "sock", "inet_sock_set_state")?;
        let sock_offsets = SockStateOffsets::from_lookup(|n| sock.get(n), sock.record_bytes);
        let send = tracefs::read_format(&root, "tcp", "tcp_send_reset").unwrap_or_default();
        let send_offsets = SendResetOffsets::from_lookup(|n| send.get(n), send.record_bytes);
        let recv = tracefs::read_format(&root, "tcp", "tcp_receive_reset").unwrap_or_default();
        let recv_offsets = ReceiveResetOffsets::from_lookup(|n| recv.get(n), recv.record_bytes);
        // The mapping event joins two tracepoints: the mapping fields, then the status and skb.
        let map = tracefs::read_format(&root, "mptcp", "get_mapping_status").unwrap_or_default();
        let avail = tracefs::read_format(&root, "mptcp", "subflow_check_data_avail").unwrap_or_default();
        let mut mapping_offsets = MappingOffsets::from_lookup(
            |n| match n {
                "status" | "skb" => avail.get(n),
                _ => map.get(n),
            },
            map.record_bytes,
        );
        mapping_offsets.avail_record = avail.record_bytes;

        let kernel_btf = btf::kernel();
        let netns_offsets = btf::netns_offsets(kernel_btf.as_ref());
        let sock_fields = btf::sock_field_offsets(kernel_btf.as_ref());
        let wakeup = if opts.batched_wakeups { wakeup::BATCHED } else { wakeup::EACH_EVENT };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FLOWS", opts.flow_table_size)
            .override_global("SOCK_STATE_OFFSETS", &sock_offsets, true)
            .override_global("SEND_RESET_OFFSETS", &send_offsets, true)
            .override_global("RECEIVE_RESET_OFFSETS", &recv_offsets, true)
            .override_global("MAPPING_OFFSETS", &mapping_offsets, true)
            .override_global("NETNS_OFFSETS", &netns_offsets, true)
            .override_global("SOCK_FIELD_OFFSETS", &sock_fields, true)
            .override_global("EVENT_LEVEL", &opts.level.global(), true)
            .override_global("WATCH_NETNS", &iface::current_netns(), true)
            .override_global("WAKEUP", &wakeup, true)
            .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mptcp-probe")))
            .context("loading the eBPF object")?;

        // The programs of interfaces with a link layer now: every host has one (a verifier
        // that rejects them is said at once); the others when an interface needs them (each
        // program takes the verifier the best part of a second).
        for name in TC_PROGRAMS_L2 {
            load_tc(&mut ebpf, name)?;
        }

        let fallback_source = match Self::try_fentry(&mut ebpf) {
            Ok(()) => {
                tracing::info!(
                    "fallback reasons: fentry on __mptcp_try_fallback (exact reason per connection)"
                );
                FallbackSource::Fentry
            }
            Err(e) => {
                tracing::info!(
                    "fallback reasons: fentry on __mptcp_try_fallback is not available here ({e:#}); \
                     using wire evidence, mptcp tracepoints and MIB counters instead"
                );
                FallbackSource::WireAndCounters
            }
        };

        // Socket states for per-connection views (and to place fentry's reasons); the mapping
        // tracepoints only when asked: they fire for every mapping on the host.
        let sock_states = opts.level == EventLevel::All || fallback_source == FallbackSource::Fentry;
        let mut tracepoints = Vec::new();
        for (prog, category, name, wanted, required) in [
            ("inet_sock_set_state", "sock", "inet_sock_set_state", sock_states, true),
            ("tcp_send_reset", "tcp", "tcp_send_reset", true, false),
            ("tcp_receive_reset", "tcp", "tcp_receive_reset", true, false),
            ("get_mapping_status", "mptcp", "get_mapping_status", opts.kernel_mappings, false),
            ("subflow_check_data_avail", "mptcp", "subflow_check_data_avail", opts.kernel_mappings, false),
        ] {
            if !wanted {
                continue;
            }
            if prog == "inet_sock_set_state" && sock_fields != SockFieldOffsets::absent() {
                match Self::try_btf_tracepoint(&mut ebpf, "inet_sock_set_state_btf", name) {
                    Ok(()) => {
                        tracepoints.push(format!("{category}:{name}"));
                        continue;
                    }
                    Err(e) => tracing::info!(
                        "{category}:{name} as a BTF tracepoint is not available here ({e:#}); using the tracepoint"
                    ),
                }
            }
            let tp: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| anyhow!("program {prog} missing from the eBPF object"))?
                .try_into()?;
            let res = tp.load().and_then(|()| tp.attach(category, name).map(|_| ()));
            match res {
                Ok(()) => tracepoints.push(format!("{category}:{name}")),
                Err(e) if required => {
                    return Err(
                        anyhow::Error::new(e).context(format!("attaching tracepoint {category}:{name}"))
                    )
                }
                Err(e) => {
                    tracing::warn!("tracepoint {category}:{name} unavailable, carrying on without it: {e}")
                }
            }
        }

        Ok(Self {
            ebpf,
            attached: HashMap::new(),
            fallback_source,
            flows_removed: 0,
            tracepoints,
            rejected: HashMap::new(),
        })
    }

    fn try_btf_tracepoint(ebpf: &mut Ebpf, prog: &str, tracepoint: &str) -> anyhow::Result<()> {
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        let p: &mut BtfTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the eBPF object"))?
            .try_into()?;
        p.load(tracepoint, &btf).context("loading")?;
        p.attach().context("attaching")?;
        Ok(())
    }

    fn try_fentry(ebpf: &mut Ebpf) -> anyhow::Result<()> {
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        let prog: &mut FEntry = ebpf
            .program_mut("mptcp_try_fallback")
            .ok_or_else(|| anyhow!("fentry program missing"))?
            .try_into()?;
        prog.load("__mptcp_try_fallback", &btf).context("loading fentry")?;
        prog.attach().context("attaching fentry")?;
        Ok(())
    }

    /// Attaches the TC programs on ingress and egress of `iface`.
    pub fn attach(&mut self, iface: &Interface) -> anyhow::Result<()> {
        if self.attached.contains_key(&iface.name) {
            return Ok(());
        }
        let [ingress, egress] = if iface.has_l2 { TC_PROGRAMS_L2 } else { TC_PROGRAMS_L3 };
        if let Some(why) = [ingress, egress].iter().find_map(|p| self.rejected.get(p)) {
            bail!("{why}: interface {} is not observed", iface.name);
        }
        let mut links = Vec::new();
        for (prog_name, at) in [(ingress, TcAttachType::Ingress), (egress, TcAttachType::Egress)] {
            let prog = match load_tc(&mut self.ebpf, prog_name) {
                Ok(p) => p,
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::warn!("{why}: interfaces like {} are not observed", iface.name);
                    self.rejected.insert(prog_name, why.clone());
                    self.detach_links(links);
                    bail!("{why}: interface {} is not observed", iface.name);
                }
            };
            let attached = prog.attach(&iface.name, at).or_else(|e| {
                // Kernels before 6.6 have no TCX: add clsact and retry through netlink.
                let _ = aya::programs::tc::qdisc_add_clsact(&iface.name);
                prog.attach(&iface.name, at).map_err(|_| e)
            });
            match attached {
                Ok(id) => links.push((prog_name, id)),
                Err(e) => {
                    self.detach_links(links);
                    return Err(anyhow::Error::new(e)
                        .context(format!("attaching {prog_name} to interface {}", iface.name)));
                }
            }
        }
        // aya attaches through TCX from Linux 6.6, through netlink under a clsact qdisc before.
        let tcx =
            aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        tracing::info!(
            "observing {} (ifindex {}, {}, {})",
            iface.name,
            iface.index,
            if iface.has_l2 { "ethernet" } else { "no link layer" },
            if tcx { "TCX" } else { "clsact" }
        );
        self.attached.insert(iface.name.clone(), Attached { ifindex: iface.index, links });
        Ok(())
    }

    fn detach_links(&mut self, links: Vec<(&'static str, SchedClassifierLinkId)>) {
        for (prog_name, id) in links {
            if let Some(p) = self.ebpf.program_mut(prog_name) {
                let prog: Result<&mut SchedClassifier, _> = p.try_into();
                if let Ok(prog) = prog {
                    // The link may already be gone with its interface.
                    let _ = prog.detach(id);
                }
            }
        }
    }

    /// Forgets interfaces that disappeared (their links went with them).
    pub fn forget_missing(&mut self, present: &[Interface]) {
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(name, a)| !present.iter().any(|i| &i.name == *name && i.index == a.ifindex))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            if let Some(a) = self.attached.remove(&name) {
                tracing::info!("interface {name} went away");
                self.detach_links(a.links);
            }
        }
    }

    pub fn interface_names(&self) -> BTreeMap<u32, String> {
        self.attached.iter().map(|(n, a)| (a.ifindex, n.clone())).collect()
    }

    /// An attached interface's name, or its index when it is gone.
    pub fn interface_name(&self, ifindex: u32) -> String {
        self.attached
            .iter()
            .find(|(_, a)| a.ifindex == ifindex)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| ifindex.to_string())
    }

    /// Detaches every TC program; tracepoint and fentry links go with the `Ebpf` on drop.
    pub fn detach_all(&mut self) {
        let all: Vec<_> = self.attached.drain().collect();
        for (_, a) in all {
            self.detach_links(a.links);
        }
    }

    /// The loaded object, for `prog-bench` to run its programs with BPF_PROG_TEST_RUN.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<aya::maps::MapData>> {
        let map = self.ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("EVENTS map missing"))?;
        Ok(RingBuf::try_from(map)?)
    }

    fn flows(&mut self) -> anyhow::Result<BpfHashMap<&mut MapData, FlowKey, FlowState>> {
        let map = self.ebpf.map_mut("FLOWS").ok_or_else(|| anyhow!("FLOWS map missing"))?;
        Ok(BpfHashMap::try_from(map)?)
    }

    /// Every CPU's running totals (the TC programs' fast path).
    pub fn accumulators(&self) -> Vec<FlowAcc> {
        let Some(map) = self.ebpf.map("FLOW_ACC") else { return Vec::new() };
        let Ok(arr) = PerCpuArray::<_, FlowAcc>::try_from(map) else { return Vec::new() };
        arr.get(&0, 0).map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    /// Reads a flow's kernel state: its entry in the flow table with what the CPUs' running
    /// totals hold of it. The totals are read before and after the entry; a CPU that moved its
    /// totals to the table in between would count twice or not at all, so the read is tried
    /// again (a few times; then the entry as it is).
    pub fn flow_state(&mut self, key: &FlowKey) -> Option<FlowState> {
        for _ in 0..4 {
            let before = self.accumulators();
            let st = self.flows().ok()?.get(key, 0).ok()?;
            let after = self.accumulators();
            if before.len() == after.len() && before.iter().zip(&after).all(|(b, a)| b.epoch == a.epoch) {
                return Some(merged(st, key, &after));
            }
        }
        self.flows().ok()?.get(key, 0).ok()
    }

    /// When a flow was last seen: its entry's time, or that of a CPU's running totals of it in
    /// `accs` (read once for many flows). None: not in the table.
    pub fn last_seen_ns(&mut self, key: &FlowKey, accs: &[FlowAcc]) -> Option<u64> {
        let st = self.flows().ok()?.get(key, 0).ok()?;
        let acc = accs
            .iter()
            .filter(|a| a.pending > 0 && &a.key == key && a.since_ns >= st.first_ns)
            .map(|a| a.last_ns)
            .max();
        Some(st.last_ns.max(acc.unwrap_or(0)))
    }

    /// Reads and removes a flow's kernel state.
    pub fn take_flow_state(&mut self, key: &FlowKey) -> Option<FlowState> {
        let st = self.flow_state(key)?;
        if self.flows().ok()?.remove(key).is_ok() {
            self.flows_removed += 1;
        }
        Some(st)
    }

    /// Every key currently in the flow table.
    pub fn flow_keys(&mut self) -> Vec<FlowKey> {
        match self.flows() {
            Ok(f) => f.keys().filter_map(Result::ok).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn counters(&mut self) -> Counters {
        let mut out = Counters::default();
        let Some(map) = self.ebpf.map("COUNTERS") else {
            return out;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
            return out;
        };
        for (i, name) in counters::NAMES.iter().enumerate() {
            let v = arr.get(&(i as u32), 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
            out.values.insert(name, v);
        }
        out
    }

    /// Each loaded program's run time and run count as the kernel counts them (both stay 0
    /// unless `kernel.bpf_stats_enabled` is on); programs whose information cannot be read are
    /// left out.
    pub fn run_times(&self) -> Vec<(String, std::time::Duration, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| p.info().ok().map(|i| (name.to_string(), i.run_time(), i.run_count())))
            .collect()
    }

    /// LRU evictions: entries the kernel created that are neither removed by us nor present.
    pub fn evictions(&mut self) -> u64 {
        let created = self.counters().get("flows_created");
        let present = self.flow_keys().len() as u64;
        created.saturating_sub(self.flows_removed).saturating_sub(present)
    }
}

/// A TC program of the object, loaded (verified) the first time it is asked for.
pub fn load_tc<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("verifier rejected {name}"))?;
    }
    Ok(prog)
}

/// A flow's entry with the totals of every CPU that holds some of it (totals started before the
/// entry was created are of an earlier incarnation of the flow, evicted since: not this one's).
fn merged(mut st: FlowState, key: &FlowKey, accs: &[FlowAcc]) -> FlowState {
    let first_ns = st.first_ns;
    for a in accs.iter().filter(|a| a.pending > 0 && &a.key == key && a.since_ns >= first_ns) {
        st.add(a);
    }
    st
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.detach_all();
    }
}
