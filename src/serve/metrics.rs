//! Prometheus metrics, served as text on the metrics listener (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Pipeline stages with a latency histogram.
pub const STAGES: [&str; 6] = [
    "queue",
    "demux",
    "decode_preprocess",
    "encode",
    "publish",
    "total",
];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Server-wide metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    stages: [Histogram; STAGES.len()],
    pub queued: AtomicI64,
    pub in_flight: AtomicI64,
    pub rejected: AtomicU64,
}

impl Metrics {
    /// Counts a finished request by method and gRPC status code name.
    pub fn request(&self, method: &str, code: &str) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((method.to_string(), code.to_string()))
            .or_default() += 1;
    }

    /// Records a stage's latency.
    pub fn stage(&self, stage: &str, seconds: f64) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            self.stages[i].observe(seconds);
        }
    }

    /// The text exposition, with `gauges` (name, help, value) appended.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP reel_requests_total Finished requests by method and gRPC status.\n");
        out.push_str("# TYPE reel_requests_total counter\n");
        for ((method, code), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "reel_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP reel_stage_seconds Latency of each pipeline stage.\n");
        out.push_str("# TYPE reel_stage_seconds histogram\n");
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "reel_stage_seconds_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "reel_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {cumulative}"
            );
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "reel_stage_seconds_sum{{stage=\"{stage}\"}} {sum}");
            let _ = writeln!(
                out,
                "reel_stage_seconds_count{{stage=\"{stage}\"}} {cumulative}"
            );
        }
        let own = [
            (
                "reel_queued_requests",
                "Requests waiting for a pipeline slot.",
                self.queued.load(Ordering::Relaxed) as f64,
            ),
            (
                "reel_in_flight_requests",
                "Requests being processed.",
                self.in_flight.load(Ordering::Relaxed) as f64,
            ),
            (
                "reel_rejected_total",
                "Requests refused because the queue was full.",
                self.rejected.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, value) in own.iter().chain(gauges) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.request("Embed", "Ok");
        m.request("Embed", "Ok");
        m.stage("total", 0.2);
        m.stage("total", 3.0);
        let text = m.render(&[("reel_leases", "Outstanding leases.", 2.0)]);
        assert!(text.contains("reel_requests_total{method=\"Embed\",code=\"Ok\"} 2"));
        assert!(text.contains("reel_stage_seconds_bucket{stage=\"total\",le=\"0.25\"} 1"));
        assert!(text.contains("reel_stage_seconds_bucket{stage=\"total\",le=\"5\"} 2"));
        assert!(text.contains("reel_stage_seconds_count{stage=\"total\"} 2"));
        assert!(text.contains("reel_leases 2"));
    }
}
