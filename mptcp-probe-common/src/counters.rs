//! Per-CPU counters of the kernel programs (indices into the `COUNTERS` per-CPU array).

pub const PACKETS_INSPECTED: u32 = 0;
pub const EVENTS_EMITTED: u32 = 1;
/// Ring-buffer reservations that failed: events lost.
pub const RINGBUF_DROPS: u32 = 2;
/// Flow-table entries created; with the entries user space removed and those still present this
/// gives the LRU evictions.
pub const FLOWS_CREATED: u32 = 3;
/// Flow-table inserts the kernel refused.
pub const FLOW_INSERT_FAILED: u32 = 4;
/// TCP segments whose option area was malformed or truncated.
pub const MALFORMED_OPTIONS: u32 = 5;
/// Packets whose headers could not be read (short, IPv6 extension chain too long, fragments).
pub const UNPARSED: u32 = 6;
/// Tracepoint and fentry invocations seen.
pub const TRACEPOINT_HITS: u32 = 7;
/// `subflow_check_data_avail` statuses 0..=4 (OK, INVALID, EMPTY, DATA_FIN, DUMMY).
pub const MAPPING_STATUS_BASE: u32 = 8;
/// Segments the fast path took (added to a CPU's running totals without the option walk).
pub const FAST_PATH: u32 = 13;
/// Segments in a CPU's running totals whose flow the table evicted before they went to it: lost
/// with the rest of the evicted flow's state.
pub const FAST_PATH_ORPHANED: u32 = 14;
/// Packets whose headers were not all in the linear part and had to be pulled.
pub const HEADER_PULLS: u32 = 15;
pub const COUNTERS_LEN: u32 = 16;

pub const NAMES: [&str; 16] = [
    "packets_inspected",
    "events_emitted",
    "ringbuf_dropped_events",
    "flows_created",
    "flow_insert_failed",
    "malformed_options",
    "unparsed_packets",
    "tracepoint_hits",
    "mapping_status_ok",
    "mapping_status_invalid",
    "mapping_status_empty",
    "mapping_status_data_fin",
    "mapping_status_dummy",
    "fast_path_segments",
    "fast_path_orphaned_segments",
    "header_pulls",
];
