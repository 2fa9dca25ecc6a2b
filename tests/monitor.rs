//! Monitoring through a live `raid serve`: I/O from qemu-io shows up in `raid stats --json`,
//! in the Prometheus text on GET /metrics and in the metrics file, and `raid monitor --json`
//! streams the event of a `raid stop`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

mod common;
use common::{Server, have, qemu_io, raid, stdout_ok, test_dir};

/// A free TCP port on the loopback (free when asked; the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Plain HTTP/1.1 GET; returns (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head.lines().next().unwrap_or("").to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(body.len(), length, "body length matches its header");
    (status, body.to_string())
}

/// The value of the sample `name{labels}` in Prometheus text (labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn stats_metrics_and_events_of_a_live_server() {
    if !have("qemu-io") {
        return;
    }
    let dir = test_dir("monitor");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(
        &dir,
        &[
            "--create",
            "--level",
            "1",
            "-N",
            "mon",
            "--metrics-listen",
            &listen,
            "--metrics-file",
            "raid.prom",
            "--monitor-interval",
            "200ms",
            "mem:32M",
            "mem:32M",
        ],
    );

    qemu_io(
        &server.uri(""),
        &[
            "write -P 0x11 0 64k",
            "write -P 0x22 64k 64k",
            "write -P 0x33 1M 64k",
            "read -P 0x11 0 64k",
            "read -P 0x33 1M 64k",
        ],
    );

    // raid stats --json: the array and each mirror saw exactly the bytes written.
    let stats = json(&stdout_ok(&raid(
        &["stats", "--json", "--control", "ctl.sock"],
        &dir,
    )));
    let array = &stats["arrays"][0];
    assert_eq!(array["name"], "mon");
    assert_eq!(array["health"], "optimal");
    assert_eq!(array["write"]["bytes"], 3 * 65536, "{array}");
    assert_eq!(array["write"]["ops"], 3, "{array}");
    assert_eq!(array["write"]["errors"], 0);
    assert!(
        array["read"]["bytes"].as_u64().unwrap() >= 2 * 65536,
        "{array}"
    );
    assert!(
        array["write"]["latency"]["p99_ns"].as_u64().unwrap() > 0,
        "{array}"
    );
    assert!(
        array["write"]["latency"]["p50_ns"].as_u64()
            <= array["write"]["latency"]["max_ns"].as_u64()
    );
    let members = array["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        assert!(m["write"]["bytes"].as_u64().unwrap() >= 3 * 65536, "{m}");
        assert_eq!(m["state"], "active");
    }
    let member_reads: u64 = members
        .iter()
        .map(|m| m["read"]["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        member_reads,
        array["read"]["bytes"].as_u64().unwrap(),
        "a mirror read reads one copy"
    );
    // One array by name; an unknown name is refused.
    let one = json(&stdout_ok(&raid(
        &["stats", "mon", "--json", "--control", "ctl.sock"],
        &dir,
    )));
    assert_eq!(one["arrays"].as_array().unwrap().len(), 1);
    assert!(
        !raid(&["stats", "nosuch", "--control", "ctl.sock"], &dir)
            .status
            .success()
    );
    let text = stdout_ok(&raid(&["stats", "--control", "ctl.sock"], &dir));
    assert!(text.contains("mon: optimal"), "{text}");

    // GET /metrics with a plain socket.
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        sample(&body, r#"orion_raid_write_bytes_total{array="mon"}"#),
        Some(196_608.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"orion_raid_write_ops_total{array="mon"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(&body, r#"orion_raid_health{array="mon",health="optimal"}"#),
        Some(1.0)
    );
    assert!(body.contains("# TYPE orion_raid_read_latency_seconds summary"));
    assert!(
        sample(
            &body,
            r#"orion_raid_member_up{array="mon",member="mem:33554432",slot="1"}"#
        ) == Some(1.0),
        "{body}"
    );
    assert_eq!(http_get(port, "/other").0, "HTTP/1.1 404 Not Found");

    // The metrics file is rewritten every interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(dir.join("raid.prom")).unwrap_or_default();
        if sample(&text, r#"orion_raid_write_bytes_total{array="mon"}"#) == Some(196_608.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics file not written: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // raid monitor --json follows the events; stopping the array is one.
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_raid"))
        .args([
            "monitor",
            "--json",
            "--all",
            "--poll",
            "50ms",
            "--control",
            "ctl.sock",
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start raid monitor");
    let stdout = monitor.stdout.take().unwrap();
    let (tx, rx) = channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a first event");
    let first = json(&first);
    assert_eq!(first["event"]["type"], "array_started", "{first}");
    assert_eq!(first["array"], "mon");
    assert_eq!(first["seq"], 1);
    stdout_ok(&raid(&["stop", "mon", "--control", "ctl.sock"], &dir));
    let deadline = Instant::now() + Duration::from_secs(20);
    let stopped = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("array_stopped streamed by raid monitor");
        let event = json(&line);
        if event["event"]["type"] == "array_stopped" {
            break event;
        }
    };
    assert_eq!(stopped["array"], "mon");
    assert!(stopped["seq"].as_u64().unwrap() > 1);
    assert!(stopped["wall_time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let _ = monitor.kill();
    let _ = monitor.wait();

    // After the stop the array is gone from the figures.
    let stats = json(&stdout_ok(&raid(
        &["stats", "--json", "--control", "ctl.sock"],
        &dir,
    )));
    assert_eq!(stats["arrays"].as_array().unwrap().len(), 0);
    let (_, body) = http_get(port, "/metrics");
    assert_eq!(
        sample(&body, r#"orion_raid_write_ops_total{array="mon"}"#),
        None
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
