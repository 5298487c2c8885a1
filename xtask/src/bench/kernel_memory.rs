//! Kernel memory of a running `watch`: every map it holds, with the kernel's own account of it
//! (`memlock` in `/proc/PID/fdinfo` of the map's descriptor), names from bpftool; and what one
//! more tracked flow costs: the flow table's `memlock` at the default size and at a smaller one,
//! their difference over the difference of their `max_entries` (the table's fixed part, the same
//! at both sizes, drops out), next to the plain `memlock` / `max_entries`.

use std::{collections::BTreeMap, process::Command, time::Duration};

use mptcp_probe_tests::lab::Lab;
use serde::{Deserialize, Serialize};

use super::{
    host::{self, WorkDir},
    observer::{self, WatchMode},
    stats::ratio,
    Bins,
};

/// The observer's flow table (mptcp-probe-ebpf/src/main.rs).
pub const FLOW_TABLE_MAP: &str = "FLOWS";
/// The smaller flow table watch runs with for the second reading (a power of two, like the
/// default: the hash has a power of two of buckets).
const SMALL_TABLE: u32 = 4096;
/// How the figure is taken, as the report says it.
const SOURCE: &str = "memlock of the FLOWS map's descriptor in /proc/PID/fdinfo (the kernel's \
                      map_mem_usage: elements, buckets, locks) at 65536 and at 4096 entries: the \
                      difference over the difference of entries";
/// Time for watch to have loaded everything before its maps are read.
const SETTLE: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KernelMemory {
    pub source: &'static str,
    /// What one more entry of the flow table costs: the figure judged.
    pub marginal_bytes_per_flow: f64,
    /// The flow table's `memlock` / `max_entries` at the default size (its fixed part included).
    pub bytes_per_flow: f64,
    /// The flow table's part that does not grow with its entries.
    pub flow_table_fixed_bytes: f64,
    pub flow_table: Option<MapMemory>,
    /// The same table with [`SMALL_TABLE`] entries.
    pub smaller_flow_table: Option<MapMemory>,
    /// By map name (`id N` when bpftool does not name it).
    pub maps: BTreeMap<String, MapMemory>,
    pub maps_memlock_bytes: u64,
    pub programs_memlock_bytes: u64,
}

/// One map as its fdinfo describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MapMemory {
    pub id: u32,
    pub map_type: u64,
    pub key_size: u64,
    pub value_size: u64,
    pub max_entries: u64,
    pub memlock_bytes: u64,
}

impl MapMemory {
    /// None for descriptors that are not maps.
    fn of_fdinfo(text: &str) -> Option<Self> {
        let f = |k| host::fdinfo_field(text, k);
        Some(Self {
            id: f("map_id")? as u32,
            map_type: f("map_type")?,
            key_size: f("key_size")?,
            value_size: f("value_size")?,
            max_entries: f("max_entries")?,
            memlock_bytes: f("memlock")?,
        })
    }
}

/// The maps among a process's descriptors, by name (`id N` when bpftool does not name it).
fn maps_of(fdinfos: &[String], names: &BTreeMap<u32, String>) -> BTreeMap<String, MapMemory> {
    fdinfos
        .iter()
        .filter_map(|t| MapMemory::of_fdinfo(t))
        .map(|m| (names.get(&m.id).cloned().unwrap_or_else(|| format!("id {}", m.id)), m))
        .collect()
}

impl KernelMemory {
    /// From the fdinfo texts of a process's descriptors and map names by id, and the flow table
    /// of a second watch with a smaller one.
    pub fn of(fdinfos: &[String], names: &BTreeMap<u32, String>, smaller: Option<MapMemory>) -> Self {
        let maps = maps_of(fdinfos, names);
        // Program descriptors have a prog_type (links name a prog_id too); one program may be
        // held by more than one descriptor.
        let programs: BTreeMap<u64, u64> = fdinfos
            .iter()
            .filter(|t| host::fdinfo_field(t, "prog_type").is_some())
            .filter_map(|t| Some((host::fdinfo_field(t, "prog_id")?, host::fdinfo_field(t, "memlock")?)))
            .collect();
        let programs_memlock_bytes = programs.values().sum();
        let flow_table = maps.get(FLOW_TABLE_MAP).cloned();
        let marginal = match (&flow_table, &smaller) {
            (Some(big), Some(small)) => ratio(
                big.memlock_bytes as f64 - small.memlock_bytes as f64,
                big.max_entries as f64 - small.max_entries as f64,
            ),
            _ => f64::NAN,
        };
        Self {
            source: SOURCE,
            marginal_bytes_per_flow: marginal,
            bytes_per_flow: flow_table
                .as_ref()
                .map_or(f64::NAN, |m| ratio(m.memlock_bytes as f64, m.max_entries as f64)),
            flow_table_fixed_bytes: flow_table
                .as_ref()
                .map_or(f64::NAN, |m| m.memlock_bytes as f64 - marginal * m.max_entries as f64),
            flow_table,
            smaller_flow_table: smaller,
            maps_memlock_bytes: maps.values().map(|m| m.memlock_bytes).sum(),
            maps,
            programs_memlock_bytes,
        }
    }
}

/// One entry of `bpftool map show --json`, the fields read of it.
#[derive(Deserialize)]
struct BpftoolMap {
    id: u32,
    name: Option<String>,
}

/// Map names by id, from bpftool (empty when it cannot be run).
fn map_names() -> BTreeMap<u32, String> {
    let out = Command::new("bpftool").args(["map", "show", "--json"]).output();
    let maps: Vec<BpftoolMap> =
        out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
    maps.into_iter().filter_map(|m| Some((m.id, m.name?))).collect()
}

/// Starts `watch` as a user runs it (default flow-table size), reads its maps, stops it; then
/// once more with the smaller table, for its flow table alone.
pub fn run(lab: &Lab, dir: &WorkDir, bins: &Bins) -> anyhow::Result<KernelMemory> {
    let read = |extra: &[&str]| -> anyhow::Result<(Vec<String>, BTreeMap<u32, String>)> {
        let r = observer::start_watch(WatchMode::Default, &lab.c, &dir.path, bins, extra)?;
        std::thread::sleep(SETTLE);
        let read = (host::fdinfos(r.pid), map_names());
        observer::stop(r);
        Ok(read)
    };
    let (fdinfos, names) = read(&[])?;
    let small = SMALL_TABLE.to_string();
    let (small_fdinfos, small_names) = read(&["--flow-table-size", &small])?;
    let smaller = maps_of(&small_fdinfos, &small_names).remove(FLOW_TABLE_MAP);
    Ok(KernelMemory::of(&fdinfos, &names, smaller))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_fdinfo(id: u32, map_type: u32, key: u32, value: u32, entries: u32, memlock: u64) -> String {
        format!(
            "pos:\t0\nflags:\t02000002\nmap_type:\t{map_type}\nkey_size:\t{key}\nvalue_size:\t{value}\n\
             max_entries:\t{entries}\nmap_flags:\t0x0\nmemlock:\t{memlock}\nmap_id:\t{id}\nfrozen:\t0\n"
        )
    }

    #[test]
    fn the_flow_table_costs_its_memlock_over_its_entries_and_other_descriptors_are_not_maps() {
        let fdinfos = vec![
            "pos:\t0\nflags:\t02\n".to_string(),
            map_fdinfo(8192, 9, 44, 160, 65536, 17_826_752),
            map_fdinfo(8188, 27, 0, 0, 4_194_304, 4_223_304),
            map_fdinfo(8190, 6, 4, 8, 16, 696),
            "prog_type:\t3\nprog_jited:\t1\nmemlock:\t8192\nprog_id:\t77\nrun_time_ns:\t0\n".to_string(),
            "prog_type:\t3\nprog_jited:\t1\nmemlock:\t8192\nprog_id:\t77\nrun_time_ns:\t0\n".to_string(),
            "link_type:\ttcx\nlink_id:\t5\nprog_tag:\tab\nprog_id:\t77\n".to_string(),
        ];
        let names = [(8192, "FLOWS".to_string()), (8188, "EVENTS".to_string())].into();
        let smaller = MapMemory { max_entries: 4096, memlock_bytes: 1_115_072, ..Default::default() };
        let m = KernelMemory::of(&fdinfos, &names, Some(smaller));
        assert!((m.bytes_per_flow - 272.0146).abs() < 1e-3, "{}", m.bytes_per_flow);
        assert_eq!(m.marginal_bytes_per_flow, 272.0, "the fixed part drops out");
        assert_eq!(m.flow_table_fixed_bytes, 960.0);
        assert_eq!(m.flow_table.as_ref().map(|t| (t.key_size, t.value_size)), Some((44, 160)));
        assert_eq!(m.maps.len(), 3);
        assert!(m.maps.contains_key("id 8190"), "an unnamed map keeps its id: {:?}", m.maps.keys());
        assert_eq!(m.maps_memlock_bytes, 17_826_752 + 4_223_304 + 696);
        assert_eq!(m.programs_memlock_bytes, 8192, "one program twice; the link names it but is none");
    }

    #[test]
    fn without_a_flow_table_there_is_no_figure() {
        let m = KernelMemory::of(&[map_fdinfo(1, 6, 4, 8, 16, 696)], &BTreeMap::new(), None);
        assert!(m.bytes_per_flow.is_nan() && m.marginal_bytes_per_flow.is_nan() && m.flow_table.is_none());
        assert!(serde_json::to_value(&m).unwrap()["marginal_bytes_per_flow"].is_null());
        let names = [(1, "FLOWS".to_string())].into();
        let alone = KernelMemory::of(&[map_fdinfo(1, 9, 40, 152, 65536, 16_778_176)], &names, None);
        assert!(alone.marginal_bytes_per_flow.is_nan(), "one size alone has no difference");
        assert!((alone.bytes_per_flow - 256.0146).abs() < 1e-3);
    }
}
