//! What a run of `iotest` reports: one [`RunRecord`] per run, as the progress callback sees
//! it, and one [`ModeReport`] per mode with the median run, which prints as one line of JSON.

use std::time::Duration;

use super::{BadChunk, ContextStats, Guest, GuestRun, KvmStats, Mode};

/// One run of one mode, as handed to [`run`](super::run)'s progress callback.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub mode: Mode,
    /// The guest that ran: `Kvm` or `Thread`.
    pub guest_kind: Guest,
    /// 0-based round this run belongs to.
    pub round: usize,
    pub guest: GuestRun,
    /// The main context's view of the run; `None` for `direct`, which has no context.
    pub context: Option<ContextStats>,
    /// The vCPU thread's view of the run; `None` for the thread guest.
    pub kvm: Option<KvmStats>,
    /// Every chunk's checksum matched the image's and every byte was read.
    pub checksum_ok: bool,
}

/// The result for one mode: its median run and every run's wall time.
#[derive(Clone, Debug)]
pub struct ModeReport {
    pub mode: Mode,
    /// The guest that ran: `Kvm` or `Thread`.
    pub guest_kind: Guest,
    /// Every run's wall time, in run order.
    pub wall_runs: Vec<Duration>,
    /// The median run by wall time (the lower one of an even count).
    pub median: GuestRun,
    /// The median run's context metrics; `None` for `direct`.
    pub context: Option<ContextStats>,
    /// The median run's vCPU figures; `None` for the thread guest.
    pub kvm: Option<KvmStats>,
    /// The first chunk any run read wrong.
    pub bad_chunk: Option<BadChunk>,
    /// `median.wall` over `direct`'s, when `direct` ran.
    pub ratio_to_direct: Option<f64>,
    /// Every run read every byte with the right checksum.
    pub checksum_ok: bool,
}

impl ModeReport {
    /// The report as one line of JSON; `direct` has no context, so its context metrics are
    /// `null`, and the thread guest has no vCPU figures, so those are `null` there.
    pub fn to_json(&self) -> String {
        let runs: Vec<String> = self.wall_runs.iter().map(|wall| json_ms(*wall)).collect();
        let context = |field: fn(&ContextStats) -> String| {
            self.context.as_ref().map_or("null".to_owned(), field)
        };
        let kvm =
            |field: fn(&KvmStats) -> String| self.kvm.as_ref().map_or("null".to_owned(), field);
        let mut latencies: Vec<Duration> = self
            .median
            .batches
            .iter()
            .map(|batch| batch.latency)
            .collect();
        latencies.sort_unstable();
        let batch_latency = |q: f64| {
            latencies
                .get(((q * latencies.len() as f64).ceil() as usize).max(1) - 1)
                .map_or("null".to_owned(), |latency| json_us(*latency))
        };
        format!(
            concat!(
                "{{\"mode\":\"{}\",\"guest\":\"{}\",\"wall_ms\":{},\"wall_ms_runs\":[{}],",
                "\"ratio_to_direct\":{},",
                "\"sleep_floor_ms\":{},\"completion_wait_ms\":{},\"dwell_p50_us\":{},",
                "\"dwell_p99_us\":{},",
                "\"dwell_max_us\":{},\"kicks_sent\":{},\"kicks_coalesced\":{},\"kicks_suppressed\":{},",
                "\"foreign_ops\":{},\"timer_ticks\":{},",
                "\"batches\":{},\"batch_latency_p50_us\":{},\"batch_latency_max_us\":{},",
                "\"exits\":{},\"exits_per_s\":{},\"exits_mmio_write\":{},\"exits_mmio_read\":{},",
                "\"exits_io_out\":{},\"exits_wait\":{},\"exits_intr\":{},",
                "\"delivery_p50_us\":{},\"delivery_p99_us\":{},\"delivery_max_us\":{},",
                "\"submit_p50_us\":{},\"submit_max_us\":{},",
                "\"bytes\":{},\"bad_chunk\":{},\"checksum_ok\":{}}}"
            ),
            self.mode,
            self.guest_kind,
            json_ms(self.median.wall),
            runs.join(","),
            self.ratio_to_direct
                .map_or("null".to_owned(), |ratio| format!("{ratio:.4}")),
            json_ms(self.median.sleep_floor),
            json_ms(self.median.completion_wait),
            context(|stats| json_us(stats.dwell_p50)),
            context(|stats| json_us(stats.dwell_p99)),
            context(|stats| json_us(stats.dwell_max)),
            context(|stats| stats.kicks_sent.to_string()),
            context(|stats| stats.kicks_coalesced.to_string()),
            context(|stats| stats.kicks_suppressed.to_string()),
            context(|stats| stats.foreign_ops.to_string()),
            context(|stats| stats.timer_ticks.to_string()),
            self.median.batches.len(),
            batch_latency(0.5),
            batch_latency(1.0),
            kvm(|stats| stats.exits.total.to_string()),
            kvm(|stats| format!("{:.0}", stats.exits_per_sec)),
            kvm(|stats| stats.exits.mmio_write.to_string()),
            kvm(|stats| stats.exits.mmio_read.to_string()),
            kvm(|stats| stats.exits.io_out.to_string()),
            kvm(|stats| stats.exits.wait.to_string()),
            kvm(|stats| stats.exits.intr.to_string()),
            kvm(|stats| json_us(stats.delivery_p50)),
            kvm(|stats| json_us(stats.delivery_p99)),
            kvm(|stats| json_us(stats.delivery_max)),
            kvm(|stats| stats.submit_p50.map_or("null".to_owned(), json_us)),
            kvm(|stats| stats.submit_max.map_or("null".to_owned(), json_us)),
            self.median.bytes,
            self.bad_chunk
                .map_or("null".to_owned(), |chunk| chunk.index.to_string()),
            self.checksum_ok,
        )
    }
}

fn json_us(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

fn json_ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1e3)
}

/// One report per mode of `modes`, from every run in `records`: the median run by wall time,
/// and each mode's ratio to `direct`'s median when `direct` ran.
pub fn summarize(modes: &[Mode], records: &[RunRecord]) -> Vec<ModeReport> {
    let mut reports: Vec<ModeReport> = modes
        .iter()
        .map(|&mode| {
            let runs: Vec<&RunRecord> = records.iter().filter(|run| run.mode == mode).collect();
            let mut by_wall = runs.clone();
            by_wall.sort_by_key(|run| run.guest.wall);
            let median = by_wall[(by_wall.len() - 1) / 2];
            ModeReport {
                mode,
                guest_kind: median.guest_kind,
                wall_runs: runs.iter().map(|run| run.guest.wall).collect(),
                median: median.guest.clone(),
                context: median.context,
                kvm: median.kvm.clone(),
                bad_chunk: runs.iter().find_map(|run| run.guest.bad_chunk),
                ratio_to_direct: None,
                checksum_ok: runs.iter().all(|run| run.checksum_ok),
            }
        })
        .collect();
    let direct_wall = reports
        .iter()
        .find(|report| report.mode == Mode::Direct)
        .map(|report| report.median.wall);
    for report in &mut reports {
        report.ratio_to_direct =
            direct_wall.map(|direct| report.median.wall.as_secs_f64() / direct.as_secs_f64());
    }
    reports
}
