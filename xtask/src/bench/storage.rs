//! Storage per connection: what watch keeps for one bulk connection (events, summary, the trace's
//! packets) against what the captures keep of the same transfer, and for a clean short
//! connection in watch's default mode.

use serde::Serialize;

use super::{
    bulk::{BulkRun, ObserverFigures},
    observer::{Kept, Obs, PerObserver},
    short::KeptSpread,
    stats::{median, ratio, Spread},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Storage {
    /// The median two-CPU bulk transfer with watch.
    pub bulk_connection_gb: f64,
    pub probe_kept_bytes: ProbeKept,
    /// Written once per watch session: the counters line and the trace's section and interface
    /// blocks.
    pub session_bytes: Spread,
    pub tcpdump_header_bytes_same_transfer: f64,
    pub tcpdump_full_bytes_same_transfer: f64,
    pub probe_over_tcpdump_header: f64,
    pub probe_over_tcpdump_full: f64,
    /// A clean short connection in the default mode (`watch --json --pcap FILE`), per
    /// connection of its runs.
    pub clean_connection: KeptSpread,
}

/// Bytes watch keeps for one bulk connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeKept {
    pub events: Spread,
    pub summary: Spread,
    pub pcapng_packets: Spread,
    /// The median of the runs' totals.
    pub total: f64,
}

impl Storage {
    /// `runs`: every bulk run (the two-CPU runs with watch are used); `clean`: what a short
    /// connection keeps in the default mode.
    pub fn of(runs: &[BulkRun], figures: &PerObserver<ObserverFigures>, clean: &KeptSpread) -> Self {
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
                pcapng_packets: spread(|k| k.pcapng_packets),
                total,
            },
            session_bytes: Spread::of(&stopped.iter().map(|s| s.session_bytes() as f64).collect::<Vec<_>>()),
            tcpdump_header_bytes_same_transfer: header_same,
            tcpdump_full_bytes_same_transfer: full_same,
            probe_over_tcpdump_header: ratio(total, header_same),
            probe_over_tcpdump_full: ratio(total, full_same),
            clean_connection: clean.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        bulk::tests::run,
        observer::{PcapngTally, WatchTally},
    };

    #[test]
    fn the_probe_keeps_its_lines_and_packets_against_the_captures_of_the_same_transfer() {
        let mut runs = vec![run(Obs::Probe, false, 2000.0, 1.0), run(Obs::Probe, true, 1000.0, 1.0)];
        for r in &mut runs {
            let s = r.stopped.as_mut().unwrap();
            s.file_bytes = 500;
            s.pcapng = PcapngTally { packets: 3, packet_bytes: 300, other_bytes: 200, trailing_bytes: 0 };
            s.watch = WatchTally { flow_bytes: 450, counters_bytes: 530, ..Default::default() };
        }
        let mut figures = PerObserver::<ObserverFigures>::default();
        figures.tcpdump_header.file_bytes_per_gb.median = 4e6;
        let clean = KeptSpread::of(&[Kept { events: 0.0, summary: 400.0, pcapng_packets: 290.0 }]);
        let s = Storage::of(&runs, &figures, &clean);
        assert_eq!(s.bulk_connection_gb, 2.0, "two-CPU runs only");
        assert_eq!(s.probe_kept_bytes.total, 750.0, "the session's own bytes are not the connection's");
        assert_eq!(s.probe_kept_bytes.pcapng_packets.median, 300.0);
        assert_eq!(s.session_bytes.median, 730.0);
        assert_eq!(s.tcpdump_header_bytes_same_transfer, 8e6);
        assert_eq!(s.probe_over_tcpdump_header, 750.0 / 8e6);
        assert!(s.probe_over_tcpdump_full.is_nan(), "no full capture measured");
        assert_eq!(s.clean_connection.total.median, 690.0);
    }
}
