//! The end of a run: a table on the terminal, a JSON file of every figure, and an SVG chart
//! of latency percentiles over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::run::Results;
use crate::stats::Percentiles;

fn row(name: &str, p: &Percentiles) -> String {
    format!(
        "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        p.p50_ms, p.p99_ms, p.p999_ms, p.p9999_ms, p.max_ms, p.samples
    )
}

/// The summary table (markdown, so it can go into docs as it is).
pub fn table(r: &Results) -> String {
    let o = &r.overall;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "workload {:?}: {} topic(s) x {} partitions, {} B messages, acks={}, compression={}, {}",
        r.workload.name,
        r.workload.topics,
        r.workload.partitions_per_topic,
        r.workload.message_size,
        r.acks,
        r.compression,
        match r.target_rate_msgs_per_s {
            Some(t) => format!("target {t:.0} msg/s"),
            None => "max rate".into(),
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| throughput | msg/s | MB/s | messages | errors |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| publish | {:.0} | {:.1} | {} | {} |",
        o.publish_msgs_per_s, o.publish_mb_per_s, o.produced, o.publish_errors
    );
    let _ = writeln!(
        s,
        "| consume | {:.0} | {:.1} | {} of {} | {} |",
        o.consume_msgs_per_s, o.consume_mb_per_s, o.consumed, o.expected_consumed, o.consume_errors
    );
    if o.duplicates > 0 {
        let _ = writeln!(s, "\n{} records were consumed more than once", o.duplicates);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| latency (ms) | p50 | p99 | p99.9 | p99.99 | max | samples |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let _ = writeln!(s, "{}", row("publish", &o.publish_latency));
    let _ = writeln!(s, "{}", row("end to end", &o.end_to_end_latency));
    if let Some(b) = &r.backlog {
        let _ = writeln!(s);
        let at = |v: Option<f64>| v.map_or_else(|| "never".to_string(), |t| format!("{t:.1} s"));
        let _ = writeln!(
            s,
            "backlog of {:.3} GB: {} {}; drained at {}; drain consume rate {}",
            b.requested_bytes / 1e9,
            if b.built {
                "built, consumers resumed at"
            } else {
                "not built; consumers resumed when producing stopped, at"
            },
            at(b.reached_after_s),
            at(b.drained_after_s),
            b.drain_consume_mb_per_s
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.1} MB/s")),
        );
    }
    s
}

pub fn write_json(r: &Results, path: &Path) -> Result<(), String> {
    let text = serde_json::to_string_pretty(r).map_err(|e| format!("encoding results: {e}"))?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A chart line: name, colour, (time s, latency ms) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Latency percentiles per interval as an SVG line chart (log scale of milliseconds).
pub fn svg(r: &Results) -> String {
    let (w, h, left, bottom, top, right) = (900.0, 420.0, 70.0, 40.0, 30.0, 170.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let series: Vec<Series> = vec![
        (
            "publish p50",
            "#1f77b4",
            r.intervals
                .iter()
                .map(|i| (i.t_s, i.publish_latency.p50_ms))
                .collect(),
        ),
        (
            "publish p99",
            "#ff7f0e",
            r.intervals
                .iter()
                .map(|i| (i.t_s, i.publish_latency.p99_ms))
                .collect(),
        ),
        (
            "publish p99.9",
            "#d62728",
            r.intervals
                .iter()
                .map(|i| (i.t_s, i.publish_latency.p999_ms))
                .collect(),
        ),
        (
            "end-to-end p99",
            "#2ca02c",
            r.intervals
                .iter()
                .map(|i| (i.t_s, i.end_to_end_latency.p99_ms))
                .collect(),
        ),
    ];
    let t_max = r.intervals.iter().map(|i| i.t_s).fold(1.0, f64::max);
    let values = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .filter(|v| *v > 0.0);
    let v_max = values.clone().fold(1.0, f64::max);
    let v_min = values.fold(v_max, f64::min).min(0.1);
    let (lo, hi) = (
        v_min.log10().floor(),
        v_max.log10().ceil().max(v_min.log10().floor() + 1.0),
    );
    let x = |t: f64| left + t / t_max * pw;
    let y = |v: f64| top + ph - ((v.max(10f64.powf(lo)).log10() - lo) / (hi - lo)) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18" font-size="14">{} — latency percentiles per second (ms, log scale)</text>"#,
        xml(&r.workload.name)
    );
    let mut d = lo;
    while d <= hi {
        let v = 10f64.powf(d);
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + ph,
        left + pw,
        top + ph
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s), up to {t_max:.0}</text>"#,
        left + pw / 2.0,
        h - 8.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
        }
        let ly = top + 16.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            left + pw + 12.0,
            left + pw + 32.0,
            left + pw + 38.0,
            ly + 4.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `results.json` and `latency.svg` into `dir`; returns their paths.
pub fn write_all(r: &Results, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json = dir.join("results.json");
    write_json(r, &json)?;
    let chart = dir.join("latency.svg");
    std::fs::write(&chart, svg(r)).map_err(|e| format!("cannot write {}: {e}", chart.display()))?;
    Ok((json, chart))
}
