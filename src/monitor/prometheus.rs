//! The Prometheus text exposition format (version 0.0.4) of the array metrics: what
//! `raid serve --metrics-listen` answers on GET /metrics and `--metrics-file` holds.
//!
//! Every family is written once with its HELP and TYPE lines and all its samples (every
//! array, every member) together, as the format requires.

use alloc::string::String;
use core::fmt::Write;

use super::{ArrayMetrics, IoMetrics, LatencySummary, MemberMetrics};

/// The content type to serve the text with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample; `labels` are name/value pairs.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        // Integers print without a fraction; Prometheus parses both.
        if value.is_finite() && value == (value as i64) as f64 && value.abs() < 9.0e15 {
            let _ = writeln!(self.out, " {}", value as i64);
        } else if value.is_nan() {
            self.out.push_str(" NaN\n");
        } else {
            let _ = writeln!(self.out, " {value}");
        }
    }
}

/// The devices one family is written for: the arrays, or every member of every array.
#[derive(Clone, Copy)]
enum Scope {
    Array,
    Member,
}

/// Writes a family of one number per device.
fn per_device(
    w: &mut Writer,
    arrays: &[ArrayMetrics],
    scope: Scope,
    [name, kind, help]: [&str; 3],
    array_value: impl Fn(&ArrayMetrics) -> Option<f64>,
    member_value: impl Fn(&MemberMetrics) -> f64,
) {
    w.family(name, kind, help);
    for a in arrays {
        match scope {
            Scope::Array => {
                if let Some(v) = array_value(a) {
                    w.sample(name, &[("array", &a.name)], v);
                }
            }
            Scope::Member => {
                for m in &a.members {
                    let mut slot = String::new();
                    let _ = write!(slot, "{}", m.slot);
                    w.sample(
                        name,
                        &[("array", &a.name), ("member", &m.member), ("slot", &slot)],
                        member_value(m),
                    );
                }
            }
        }
    }
}

/// Writes the counters and latency summaries of reads and writes for one scope.
fn io_families(w: &mut Writer, arrays: &[ArrayMetrics], scope: Scope, prefix: &str) {
    type Pick = fn(&IoMetrics) -> f64;
    let counters: [(&str, &str, Pick, &str); 4] = [
        (
            "ops_total",
            "counter",
            |m| m.ops as f64,
            "requests completed",
        ),
        (
            "bytes_total",
            "counter",
            |m| m.bytes as f64,
            "bytes transferred",
        ),
        (
            "errors_total",
            "counter",
            |m| m.errors as f64,
            "requests that failed",
        ),
        (
            "bytes_per_second",
            "gauge",
            |m| m.bytes_per_s,
            "bytes per second over the last rate window",
        ),
    ];
    let extra: [(&str, &str, Pick, &str); 1] = [(
        "ops_per_second",
        "gauge",
        |m| m.ops_per_s,
        "requests per second (IOPS) over the last rate window",
    )];
    for dir in ["read", "write"] {
        fn pick_dir<'a>(dir: &str, io: (&'a IoMetrics, &'a IoMetrics)) -> &'a IoMetrics {
            if dir == "read" { io.0 } else { io.1 }
        }
        for (suffix, kind, pick, help) in counters.iter().chain(extra.iter()) {
            let name = alloc::format!("{prefix}_{dir}_{suffix}");
            let help = alloc::format!("{dir} {help}");
            per_device(
                w,
                arrays,
                scope,
                [&name, kind, &help],
                |a| Some(pick(pick_dir(dir, (&a.read, &a.write)))),
                |m| pick(pick_dir(dir, (&m.read, &m.write))),
            );
        }
        let name = alloc::format!("{prefix}_{dir}_latency_seconds");
        let help = alloc::format!("{dir} latency since start (quantiles from a histogram)");
        w.family(&name, "summary", &help);
        let mut write_summary = |labels: &[(&str, &str)], l: &LatencySummary, count: u64| {
            for (q, v) in [
                ("0.5", l.p50_ns),
                ("0.9", l.p90_ns),
                ("0.99", l.p99_ns),
                ("0.999", l.p999_ns),
            ] {
                let mut with_q: alloc::vec::Vec<(&str, &str)> = labels.to_vec();
                with_q.push(("quantile", q));
                w.sample(&name, &with_q, v as f64 / 1e9);
            }
            w.sample(&alloc::format!("{name}_sum"), labels, l.sum_ns as f64 / 1e9);
            w.sample(&alloc::format!("{name}_count"), labels, count as f64);
        };
        for a in arrays {
            match scope {
                Scope::Array => {
                    let io = pick_dir(dir, (&a.read, &a.write));
                    write_summary(&[("array", &a.name)], &io.latency, io.ops);
                }
                Scope::Member => {
                    for m in &a.members {
                        let slot = alloc::format!("{}", m.slot);
                        let io = pick_dir(dir, (&m.read, &m.write));
                        write_summary(
                            &[("array", &a.name), ("member", &m.member), ("slot", &slot)],
                            &io.latency,
                            io.ops,
                        );
                    }
                }
            }
        }
    }
}

/// The text exposition of `arrays`.
pub fn render(arrays: &[ArrayMetrics]) -> String {
    let mut w = Writer { out: String::new() };
    let p = "orion_raid";
    io_families(&mut w, arrays, Scope::Array, p);
    type PickArray = fn(&ArrayMetrics) -> Option<f64>;
    let simple: [(&str, &str, PickArray, &str); 7] = [
        (
            "flushes_total",
            "counter",
            |a| Some(a.flushes as f64),
            "flush requests",
        ),
        (
            "flush_errors_total",
            "counter",
            |a| Some(a.flush_errors as f64),
            "flush requests that failed",
        ),
        (
            "discards_total",
            "counter",
            |a| Some(a.discards as f64),
            "discard requests",
        ),
        (
            "cache_hits_total",
            "counter",
            |a| Some(a.cache_hits as f64),
            "reads served by the stripe cache",
        ),
        (
            "cache_misses_total",
            "counter",
            |a| Some(a.cache_misses as f64),
            "reads the stripe cache fetched from members",
        ),
        (
            "job_progress_ratio",
            "gauge",
            |a| a.job.as_ref().map(|j| j.progress),
            "progress of the background job (0..1)",
        ),
        (
            "job_rate_bytes_per_second",
            "gauge",
            |a| a.job.as_ref().map(|j| j.rate_bytes_per_s as f64),
            "speed of the background job",
        ),
    ];
    for (suffix, kind, pick, help) in simple {
        let name = alloc::format!("{p}_{suffix}");
        per_device(
            &mut w,
            arrays,
            Scope::Array,
            [&name, kind, help],
            pick,
            |_| 0.0,
        );
    }
    let name = alloc::format!("{p}_health");
    w.family(&name, "gauge", "1 for the array's current health state");
    for a in arrays {
        w.sample(&name, &[("array", &a.name), ("health", &a.health)], 1.0);
    }
    let member_prefix = alloc::format!("{p}_member");
    io_families(&mut w, arrays, Scope::Member, &member_prefix);
    per_device(
        &mut w,
        arrays,
        Scope::Member,
        [
            &alloc::format!("{p}_member_up"),
            "gauge",
            "1 while the member is active and in sync",
        ],
        |_| None,
        |m| if m.state == "active" { 1.0 } else { 0.0 },
    );
    per_device(
        &mut w,
        arrays,
        Scope::Member,
        [
            &alloc::format!("{p}_member_corrected_sectors_total"),
            "counter",
            "sectors rewritten after a read error was corrected from redundancy",
        ],
        |_| None,
        |m| m.corrected_sectors as f64,
    );
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::JobStatus;
    use crate::monitor::MemberMetrics;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    /// One parsed sample: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// A strict reader of the text format: checks the grammar and that each family's
    /// samples follow its TYPE line without interruption.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        let mut finished: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(rest.split_once(' ').is_some(), "HELP without text: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(!types.contains_key(name), "family {name} declared twice");
                if let Some(c) = current.replace(name.to_string()) {
                    finished.push(c);
                }
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("sample without value: {line}"),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {name}"
            );
            let mut labels = BTreeMap::new();
            let value_text = if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.chars();
                loop {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label") {
                            '\\' => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                other => panic!("bad escape {other:?} in {line}"),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    match chars.next() {
                        Some(',') => continue,
                        Some('}') => break,
                        other => panic!("unexpected {other:?} in {line}"),
                    }
                }
                chars.collect::<String>()
            } else {
                rest.to_string()
            };
            let value: f64 = value_text.trim().parse().expect("numeric value");
            let family = current.clone().expect("sample before any TYPE");
            let base = ["_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| types.get(*b).map(String::as_str) == Some("summary"))
                .unwrap_or(name);
            assert_eq!(base, family, "sample {name} outside its family block");
            assert!(!finished.contains(&family));
            samples.push((name.to_string(), labels, value));
        }
        (types, samples)
    }

    fn io(ops: u64, bytes: u64) -> IoMetrics {
        IoMetrics {
            ops,
            bytes,
            errors: 1,
            ops_per_s: 12.5,
            bytes_per_s: 51200.0,
            interval_latency_avg_ns: 100,
            latency: LatencySummary {
                sum_ns: ops * 2_000_000,
                avg_ns: 2_000_000,
                p50_ns: 1_500_000,
                p90_ns: 3_000_000,
                p99_ns: 9_000_000,
                p999_ns: 20_000_000,
                max_ns: 30_000_000,
            },
            recent_latency: LatencySummary::default(),
        }
    }

    fn sample_metrics() -> Vec<ArrayMetrics> {
        let member = |slot: u32, name: &str, state: &str| MemberMetrics {
            slot,
            member: name.into(),
            state: state.into(),
            read: io(10 + u64::from(slot), 4096),
            write: io(3, 8192),
            corrected_sectors: 2,
            in_flight: 0,
        };
        vec![
            ArrayMetrics {
                name: "md\"quoted\\name\nx".into(),
                health: "degraded".into(),
                interval_ns: 1_000_000_000,
                read: io(100, 409_600),
                write: io(50, 204_800),
                flushes: 4,
                flush_errors: 0,
                discards: 1,
                discard_errors: 0,
                cache_hits: 7,
                cache_misses: 3,
                cache_hit_ratio: 0.7,
                job: Some(JobStatus {
                    kind: "resync".into(),
                    progress: 0.25,
                    rate_bytes_per_s: 1 << 20,
                    eta_s: 3,
                }),
                members: vec![member(0, "a.img", "active"), member(1, "b.img", "faulty")],
            },
            ArrayMetrics {
                name: "second".into(),
                health: "optimal".into(),
                interval_ns: 0,
                read: io(1, 512),
                write: io(0, 0),
                flushes: 0,
                flush_errors: 0,
                discards: 0,
                discard_errors: 0,
                cache_hits: 0,
                cache_misses: 0,
                cache_hit_ratio: 0.0,
                job: None,
                members: vec![member(0, "c.img", "active")],
            },
        ]
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|(n, l, _)| {
            n == name
                && labels.len() == l.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }

    #[test]
    fn text_format_parses_back_to_the_figures() {
        let metrics = sample_metrics();
        let text = render(&metrics);
        let (types, samples) = parse(&text);
        let weird = "md\"quoted\\name\nx";
        assert_eq!(types["orion_raid_read_ops_total"], "counter");
        assert_eq!(types["orion_raid_read_latency_seconds"], "summary");
        assert_eq!(types["orion_raid_member_write_bytes_total"], "counter");
        let v = |name: &str, labels: &[(&str, &str)]| {
            find(&samples, name, labels)
                .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
                .2
        };
        assert_eq!(v("orion_raid_read_ops_total", &[("array", weird)]), 100.0);
        assert_eq!(
            v("orion_raid_write_bytes_total", &[("array", "second")]),
            0.0
        );
        assert_eq!(v("orion_raid_read_errors_total", &[("array", weird)]), 1.0);
        assert_eq!(
            v("orion_raid_read_ops_per_second", &[("array", weird)]),
            12.5
        );
        assert_eq!(
            v(
                "orion_raid_read_latency_seconds",
                &[("array", weird), ("quantile", "0.99")]
            ),
            0.009
        );
        assert_eq!(
            v("orion_raid_read_latency_seconds_count", &[("array", weird)]),
            100.0
        );
        assert_eq!(
            v("orion_raid_read_latency_seconds_sum", &[("array", weird)]),
            0.2
        );
        assert_eq!(v("orion_raid_cache_hits_total", &[("array", weird)]), 7.0);
        assert_eq!(
            v("orion_raid_job_progress_ratio", &[("array", weird)]),
            0.25
        );
        assert!(
            find(
                &samples,
                "orion_raid_job_progress_ratio",
                &[("array", "second")]
            )
            .is_none()
        );
        assert_eq!(
            v(
                "orion_raid_health",
                &[("array", weird), ("health", "degraded")]
            ),
            1.0
        );
        let member = [("array", weird), ("member", "b.img"), ("slot", "1")];
        assert_eq!(v("orion_raid_member_read_ops_total", &member), 11.0);
        assert_eq!(v("orion_raid_member_up", &member), 0.0);
        assert_eq!(v("orion_raid_member_corrected_sectors_total", &member), 2.0);
        let member_q = [
            ("array", "second"),
            ("member", "c.img"),
            ("slot", "0"),
            ("quantile", "0.5"),
        ];
        assert_eq!(
            v("orion_raid_member_write_latency_seconds", &member_q),
            0.0015
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn no_arrays_still_gives_valid_text() {
        let (types, samples) = parse(&render(&[]));
        assert!(types.contains_key("orion_raid_read_ops_total"));
        assert!(samples.is_empty());
    }
}
