//! Storage per connection: what watch keeps for one bulk connection (events, summary, pcapng)
//! against what the captures keep of the same transfer.

use serde::Serialize;

use super::{
    bulk::{BulkRun, ObserverFigures},
    observer::{Kept, Obs, PerObserver},
    stats::{median, ratio, Spread},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Storage {
    /// The median two-CPU bulk transfer with watch.
    pub bulk_connection_gb: f64,
    pub probe_kept_bytes: ProbeKept,
    pub counters_line_bytes_per_watch_session: f64,
    pub tcpdump_header_bytes_same_transfer: f64,
    pub tcpdump_full_bytes_same_transfer: f64,
    pub probe_over_tcpdump_header: f64,
    pub probe_over_tcpdump_full: f64,
    pub short_connection_kept_bytes: f64,
}

/// Bytes watch keeps for one bulk connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeKept {
    pub events: Spread,
    pub summary: Spread,
    pub pcapng: Spread,
    /// The median of the runs' totals.
    pub total: f64,
}

impl Storage {
    /// `runs`: every bulk run (the two-CPU runs with watch are used); `short_kept`: the median
    /// total a short connection keeps.
    pub fn of(runs: &[BulkRun], figures: &PerObserver<ObserverFigures>, short_kept: f64) -> Self {
        let probe_runs: Vec<&BulkRun> = runs.iter().filter(|r| r.obs == Obs::Probe && !r.pinned).collect();
        let stopped: Vec<_> = probe_runs.iter().filter_map(|r| r.stopped.as_ref()).collect();
        let kept: Vec<_> = stopped.iter().map(|s| s.kept_per_connection(1.0)).collect();
        let spread = |f: fn(&Kept) -> f64| Spread::of(&kept.iter().map(f).collect::<Vec<_>>());
        let gb = median(&probe_runs.iter().map(|r| r.t.gb()).collect::<Vec<_>>());
        let total = median(&kept.iter().map(|k| k.total()).collect::<Vec<_>>());
        let header_same = figures.tcpdump_header.file_bytes_per_gb.median * gb;
        let full_same = figures.tcpdump_full.file_bytes_per_gb.median * gb;
        Self {
            bulk_connection_gb: gb,
            probe_kept_bytes: ProbeKept {
                events: spread(|k| k.events),
                summary: spread(|k| k.summary),
                pcapng: spread(|k| k.pcapng),
                total,
            },
            counters_line_bytes_per_watch_session: median(
                &stopped.iter().map(|s| s.watch.counters_bytes as f64).collect::<Vec<_>>(),
            ),
            tcpdump_header_bytes_same_transfer: header_same,
            tcpdump_full_bytes_same_transfer: full_same,
            probe_over_tcpdump_header: ratio(total, header_same),
            probe_over_tcpdump_full: ratio(total, full_same),
            short_connection_kept_bytes: short_kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{bulk::tests::run, observer::WatchTally};

    #[test]
    fn the_probe_keeps_its_lines_and_pcapng_against_the_captures_of_the_same_transfer() {
        let mut runs = vec![run(Obs::Probe, false, 2000.0, 1.0), run(Obs::Probe, true, 1000.0, 1.0)];
        for r in &mut runs {
            let s = r.stopped.as_mut().unwrap();
            s.file_bytes = 1200;
            s.watch =
                WatchTally { event_bytes: 6500, flow_bytes: 1300, counters_bytes: 530, ..Default::default() };
        }
        let mut figures = PerObserver::<ObserverFigures>::default();
        figures.tcpdump_header.file_bytes_per_gb.median = 4e6;
        let s = Storage::of(&runs, &figures, 8400.0);
        assert_eq!(s.bulk_connection_gb, 2.0, "two-CPU runs only");
        assert_eq!(s.probe_kept_bytes.total, 9000.0);
        assert_eq!(s.probe_kept_bytes.pcapng.median, 1200.0);
        assert_eq!(s.tcpdump_header_bytes_same_transfer, 8e6);
        assert_eq!(s.probe_over_tcpdump_header, 9000.0 / 8e6);
        assert!(s.probe_over_tcpdump_full.is_nan(), "no full capture measured");
        assert_eq!(s.counters_line_bytes_per_watch_session, 530.0);
        assert_eq!(s.short_connection_kept_bytes, 8400.0);
    }
}
