//! `herd-bench plot`: pictures of latency from the HdrHistogram interval
//! logs that `load --hist-log` writes, as SVG for bench/REPORT.md.
//!
//! - `percentiles`: the whole run's latency (log axis) against percentile on
//!   the usual 1/(1-p) axis, so the tail takes most of the width; one line
//!   per log, e.g. one per load level or per server.
//! - `timeline`: p99 and maximum of each one-second interval over the run,
//!   so a stall (a failing neighbour, a table growing) shows where it is.
//!
//! Reading the logs and shaping the points is pure and tested; drawing is
//! plotters' SVG backend, with no font files needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::stats::histogram;

/// What to draw.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Latency by percentile over the whole run.
    Percentiles,
    /// p99 and maximum per second of the run.
    Timeline,
}

/// Options of `herd-bench plot`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// What to draw.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The title over the plot.
    #[arg(long)]
    pub title: String,
    /// `LABEL=FILE`: an interval log and the name of its line.
    #[arg(required = true)]
    pub series: Vec<String>,
}

/// One interval of a log: its start within the run and its histogram.
pub struct Interval {
    /// Start, relative to the log's base time.
    pub start: Duration,
    /// Latencies of the interval, ns.
    pub histogram: Histogram<u64>,
}

/// Every interval of an interval log's text.
pub fn read_log(text: &[u8]) -> Result<Vec<Interval>> {
    let mut out = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(text) {
        let entry = entry.map_err(|e| anyhow!("reading the interval log: {e:?}"))?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .context("decoding an interval's histogram")?;
        let histogram: Histogram<u64> = deserializer
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow!("decoding an interval's histogram: {e:?}"))?;
        out.push(Interval {
            start: interval.start_timestamp(),
            histogram,
        });
    }
    Ok(out)
}

/// The x of percentile `q` on the 1/(1-p) axis: 1 at 0 %, 10 at 90 %,
/// 100 at 99 % and so on.
fn tail_x(q: f64) -> f64 {
    1.0 / (1.0 - q).max(1e-7)
}

/// The percentile an x of the 1/(1-p) axis stands for, as a label.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let text = format!("{p:.5}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Points (1/(1-p), latency µs) of a histogram, from the median's
/// neighbourhood out to its maximum.
pub fn percentile_points(h: &Histogram<u64>) -> Points {
    let mut points: Points = h
        .iter_quantiles(5)
        .map(|v| {
            (
                tail_x(v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1e3,
            )
        })
        .filter(|&(x, _)| x.is_finite())
        .collect();
    // The last step reports quantile 1.0: put the maximum one step past
    // the last finite point instead of at infinity.
    if let Some(&(x, _)) = points.last() {
        points.push(((x * 2.0).min(1e6), h.max() as f64 / 1e3));
    }
    points.dedup_by(|a, b| a.0 <= b.0);
    points
}

/// Points of one line: (x, latency in µs).
type Points = Vec<(f64, f64)>;

/// Points (seconds, µs) of the p99 and of the maximum of each interval.
pub fn timeline_points(intervals: &[Interval]) -> (Points, Points) {
    let mut p99 = Vec::new();
    let mut max = Vec::new();
    for i in intervals.iter().filter(|i| !i.histogram.is_empty()) {
        let t = i.start.as_secs_f64();
        p99.push((t, i.histogram.value_at_quantile(0.99) as f64 / 1e3));
        max.push((t, i.histogram.max() as f64 / 1e3));
    }
    (p99, max)
}

/// Splits `LABEL=FILE`.
fn parse_series(text: &str) -> Result<(&str, &Path)> {
    let (label, file) = text
        .split_once('=')
        .filter(|(l, f)| !l.is_empty() && !f.is_empty())
        .ok_or_else(|| anyhow!("a series is LABEL=FILE, not {text:?}"))?;
    Ok((label, Path::new(file)))
}

/// A log axis range that holds every y of `lines`, with some room.
fn y_range<'a>(lines: impl Iterator<Item = &'a [(f64, f64)]>) -> std::ops::Range<f64> {
    let ys = lines.flat_map(|l| l.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let lo = (lo.max(0.1) / 1.5).max(0.1);
    let hi = (hi * 1.5).max(lo * 10.0);
    lo..hi
}

type Line = (String, Points, bool);

/// Draws `lines` (label, points, thin) on log-log or linear-log axes.
fn draw(out: &Path, title: &str, kind: Kind, lines: &[Line]) -> Result<()> {
    let root = SVGBackend::new(out, (900, 480)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let y = y_range(lines.iter().map(|l| l.1.as_slice()));
    let x_max = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    // Distinct, print-friendly colours (matplotlib's "tab10").
    const COLOURS: [(u8, u8, u8); 8] = [
        (31, 119, 180),
        (214, 39, 40),
        (44, 160, 44),
        (255, 127, 14),
        (148, 103, 189),
        (140, 86, 75),
        (23, 190, 207),
        (127, 127, 127),
    ];
    let palette = |i: usize| {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        RGBColor(r, g, b)
    };
    macro_rules! series {
        ($chart:expr) => {{
            let mut thick = 0;
            for (label, points, thin) in lines.iter() {
                // Thin lines (a maximum) share the colour of the thick line
                // (the p99) drawn just before them.
                if !*thin {
                    thick += 1;
                }
                let colour = palette(thick.max(1) - 1);
                let style = if *thin {
                    colour.mix(0.5).stroke_width(1)
                } else {
                    colour.stroke_width(2)
                };
                $chart
                    .draw_series(LineSeries::new(points.iter().copied(), style))
                    .map_err(|e| fail(&e))?
                    .label(label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            $chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| fail(&e))?;
        }};
    }
    match kind {
        Kind::Percentiles => {
            let mut chart = builder
                .build_cartesian_2d((1.0..x_max.min(1e6) * 1.2).log_scale(), y.log_scale())
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("latency (µs)")
                .x_label_formatter(&|x| percentile_label(*x))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(|e| fail(&e))?;
            series!(chart);
        }
        Kind::Timeline => {
            let mut chart = builder
                .build_cartesian_2d(0.0..x_max + 1.0, y.log_scale())
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .x_desc("seconds into the measured window")
                .y_desc("latency (µs)")
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(|e| fail(&e))?;
            series!(chart);
        }
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Runs `herd-bench plot`.
pub fn run(args: &PlotArgs) -> Result<()> {
    let mut lines: Vec<Line> = Vec::new();
    for series in &args.series {
        let (label, file) = parse_series(series)?;
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let intervals = read_log(&text).with_context(|| format!("in {}", file.display()))?;
        match args.kind {
            Kind::Percentiles => {
                let mut all = histogram()?;
                for i in &intervals {
                    all.add(&i.histogram)
                        .map_err(|e| anyhow!("merging intervals: {e:?}"))?;
                }
                if all.is_empty() {
                    continue;
                }
                lines.push((label.to_owned(), percentile_points(&all), false));
            }
            Kind::Timeline => {
                let (p99, max) = timeline_points(&intervals);
                if p99.is_empty() {
                    continue;
                }
                lines.push((format!("{label} p99"), p99, false));
                lines.push((format!("{label} max"), max, true));
            }
        }
    }
    if lines.is_empty() {
        bail!("no latencies in any of the logs given");
    }
    draw(&args.out, &args.title, args.kind, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::write_interval_log;
    use std::time::SystemTime;

    #[test]
    fn percentile_axis_labels_read_as_percentiles() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(10_000.0), "99.99%");
        assert!((tail_x(0.999) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn points_rise_with_the_percentile_and_end_at_the_maximum() {
        let mut h = histogram().unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let points = percentile_points(&h);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let (_, last) = *points.last().unwrap();
        assert!((last - 10_000.0).abs() < 10.0, "{last}");
    }

    #[test]
    fn a_written_interval_log_reads_back_and_plots() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.hlog");
        let mut hists = Vec::new();
        for second in 1..=3u64 {
            let mut h = histogram().unwrap();
            for v in 1..=100u64 {
                h.record(v * 1_000 * second).unwrap();
            }
            hists.push(h);
        }
        write_interval_log(&log, &hists, SystemTime::now(), Duration::from_secs(3), "t").unwrap();
        let intervals = read_log(&std::fs::read(&log).unwrap()).unwrap();
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[2].start, Duration::from_secs(2));
        assert_eq!(intervals[2].histogram.max(), hists[2].max());
        let (p99, max) = timeline_points(&intervals);
        assert_eq!(p99.len(), 3);
        assert!(max[2].1 > max[0].1);
        for kind in [Kind::Percentiles, Kind::Timeline] {
            let out = dir.path().join(format!("{kind:?}.svg"));
            run(&PlotArgs {
                kind,
                out: out.clone(),
                title: "t".into(),
                series: vec![format!("run={}", log.display())],
            })
            .unwrap();
            let svg = std::fs::read_to_string(&out).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("run"), "{kind:?}");
        }
        assert!(parse_series("nofile").is_err());
    }
}
