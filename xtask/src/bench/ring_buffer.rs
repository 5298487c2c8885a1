//! Ring-buffer drops in every observed run, with the event rate each ran at.

use serde::Serialize;

use super::{bulk::BulkRun, observer::Obs, short::ShortRun};

/// One observed run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RingRun {
    pub run: String,
    /// Events the kernel programs emitted per second; null where the run has no rate.
    pub events_per_s: f64,
    /// None when watch printed no counters.
    pub dropped: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RingBuffer {
    pub dropped_total: u64,
    pub max_events_per_s: f64,
    /// The lowest event rate of a run that dropped events.
    pub drops_start_at_events_per_s: f64,
    pub runs: Vec<RingRun>,
    pub prog_bench_dropped: u64,
}

/// The bulk runs with watch, as ring-buffer runs.
pub fn bulk_runs(runs: &[BulkRun]) -> impl Iterator<Item = RingRun> + '_ {
    runs.iter().filter(|r| r.obs == Obs::Probe).map(|r| {
        let s = r.stopped.as_ref().expect("probe runs have output");
        RingRun {
            run: if r.pinned { "bulk, one CPU" } else { "bulk" }.to_string(),
            events_per_s: s.events_per_s(r.t.seconds),
            dropped: s.ringbuf_dropped(),
        }
    })
}

/// The short-connection runs with watch.
pub fn short_runs(runs: &[ShortRun]) -> impl Iterator<Item = RingRun> + '_ {
    runs.iter().filter_map(|r| Some((r.watch?, r.watched.as_ref()?))).map(|(mode, w)| RingRun {
        run: format!("short connections, {}", mode.label()),
        events_per_s: w.events_per_s,
        dropped: w.ringbuf_dropped,
    })
}

/// The flow-table overflow run: many short batches, no single rate.
pub fn overflow_run(dropped: Option<u64>) -> RingRun {
    RingRun { run: "flow-table overflow".to_string(), events_per_s: f64::NAN, dropped }
}

impl RingBuffer {
    pub fn of(runs: Vec<RingRun>, prog_bench_dropped: u64) -> Self {
        let rates = || runs.iter().filter(|r| r.events_per_s.is_finite());
        Self {
            dropped_total: runs.iter().filter_map(|r| r.dropped).sum(),
            max_events_per_s: rates().map(|r| r.events_per_s).fold(0.0, f64::max),
            drops_start_at_events_per_s: rates()
                .filter(|r| r.dropped.unwrap_or(0) > 0)
                .map(|r| r.events_per_s)
                .fold(f64::INFINITY, f64::min),
            runs,
            prog_bench_dropped,
        }
    }

    /// The run at the highest event rate.
    pub fn heaviest(&self) -> Option<&RingRun> {
        self.runs
            .iter()
            .filter(|r| r.events_per_s.is_finite())
            .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events_per_s: f64, dropped: Option<u64>) -> RingRun {
        RingRun { run: "bulk".to_string(), events_per_s, dropped }
    }

    #[test]
    fn drops_start_at_the_slowest_run_that_dropped() {
        let r = RingBuffer::of(
            vec![run(100.0, Some(0)), run(90_000.0, Some(3)), run(70_000.0, Some(1)), overflow_run(Some(2))],
            0,
        );
        assert_eq!(r.dropped_total, 6);
        assert_eq!(r.max_events_per_s, 90_000.0);
        assert_eq!(r.drops_start_at_events_per_s, 70_000.0);
        assert_eq!(r.heaviest().map(|h| h.events_per_s), Some(90_000.0));
    }

    #[test]
    fn without_drops_there_is_no_rate_where_they_start() {
        let r = RingBuffer::of(vec![run(100.0, Some(0)), run(f64::NAN, None)], 0);
        assert_eq!(r.dropped_total, 0);
        assert_eq!(r.max_events_per_s, 100.0);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["drops_start_at_events_per_s"].is_null());
        assert!(v["runs"][1]["events_per_s"].is_null() && v["runs"][1]["dropped"].is_null());
    }
}
