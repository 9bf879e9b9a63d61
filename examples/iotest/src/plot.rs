//! `--plot FILE.svg`: one panel per mode, each batch's doorbell-to-completion latency over the
//! median run, on one shared log axis, so the bug (every batch waiting for the main loop's
//! timer) and the fix (the device's own time) are told apart at a glance. Drawn with plotters'
//! SVG backend, which needs no system library.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::{Config, Mode, ModeReport};

const PANEL_HEIGHT: u32 = 210;
const TITLE_HEIGHT: u32 = 50;
const WIDTH: u32 = 960;

/// Draws `reports` into `path`.
pub fn write(path: &Path, config: &Config, reports: &[ModeReport]) -> Result<(), String> {
    let height = TITLE_HEIGHT + PANEL_HEIGHT * reports.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| err.to_string())?;
    let guest = reports
        .first()
        .map_or("no".to_owned(), |report| report.guest_kind.to_string());
    let title = format!(
        "iotest, {guest} guest: doorbell to last completion, per batch of {} x {} KiB \
         (main-loop timer {} ms)",
        config.batch,
        config.chunk / 1024,
        config.timer.as_millis()
    );
    let (title_area, body) = root.split_vertically(TITLE_HEIGHT);
    title_area
        .titled(&title, ("sans-serif", 18))
        .map_err(|err| err.to_string())?;
    let (floor, ceiling) = latency_range(reports);
    for (area, report) in body
        .split_evenly((reports.len().max(1), 1))
        .iter()
        .zip(reports)
    {
        draw_panel(area, report, floor, ceiling).map_err(|err| err.to_string())?;
    }
    root.present().map_err(|err| err.to_string())
}

/// One log axis for every panel, in milliseconds, from a decade under the fastest batch to a
/// decade over the slowest.
fn latency_range(reports: &[ModeReport]) -> (f64, f64) {
    let latencies = || {
        reports
            .iter()
            .flat_map(|report| &report.median.batches)
            .map(|batch| ms(batch.latency).max(1e-3))
    };
    let low = latencies().fold(f64::INFINITY, f64::min);
    let high = latencies().fold(0.0, f64::max);
    if !low.is_finite() {
        return (1e-2, 1e3);
    }
    (
        10f64.powf(low.log10().floor()),
        10f64.powf(high.log10().ceil() + f64::from(high <= low)),
    )
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &ModeReport,
    floor: f64,
    ceiling: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let batches = &report.median.batches;
    let end = report.median.wall.as_secs_f64().max(1e-3);
    let mut sorted: Vec<Duration> = batches.iter().map(|batch| batch.latency).collect();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len().saturating_sub(1) / 2).copied();
    let caption = format!(
        "{}: {} batches in {:.2} s, median {} per batch{}",
        report.mode,
        batches.len(),
        end,
        median.map_or("-".to_owned(), |latency| format!("{:.3} ms", ms(latency))),
        report
            .ratio_to_direct
            .map_or(String::new(), |ratio| format!(
                ", {ratio:.2}x direct's wall time"
            )),
    );
    let color = match report.mode {
        Mode::Direct => BLACK,
        Mode::Kick => RGBColor(0, 114, 178),
        Mode::NoKick => RGBColor(213, 94, 0),
        Mode::NoKickBusy => RGBColor(0, 158, 115),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, (floor..ceiling).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time into the run (s)")
        .y_desc("latency (ms)")
        .y_label_formatter(&|value| format!("{value}"))
        .draw()?;
    chart.draw_series(batches.iter().map(|batch| {
        Circle::new(
            (batch.at.as_secs_f64(), ms(batch.latency).max(floor)),
            3,
            color.filled(),
        )
    }))?;
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
