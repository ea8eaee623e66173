//! The benchmark harness against a real broker: a 10-second workload whose JSON holds every
//! figure, with as many messages consumed as produced and no errors; and bad input.

mod common;

use std::process::Output;

use common::{spate, start};

fn run(args: &[&str]) -> Output {
    spate().args(args).output().unwrap()
}

/// Runs `spate bench` against `addr` with `args`, writing to `out_dir`; asserts it succeeded
/// and returns its stdout and results.json.
fn bench_ok(addr: &str, out_dir: &std::path::Path, args: &[&str]) -> (String, serde_json::Value) {
    let mut all = vec!["bench", "--bootstrap", addr, "--quiet", "--out"];
    all.push(out_dir.to_str().unwrap());
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    (stdout, json)
}

#[test]
fn a_ten_second_workload_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(&dir.path().join("data"), &[]);
    let addr = broker.listen_addr();
    let out_dir = dir.path().join("out");
    let (stdout, json) = bench_ok(
        &addr,
        &out_dir,
        &[
            "--duration-s",
            "10",
            "--set",
            "producerRate=2000",
            "--set",
            "partitionsPerTopic=4",
        ],
    );
    assert!(
        stdout.contains("| publish |") && stdout.contains("| end to end |"),
        "{stdout}"
    );

    let overall = &json["overall"];
    for key in [
        "duration_s",
        "produced",
        "consumed",
        "expected_consumed",
        "publish_errors",
        "consume_errors",
        "publish_msgs_per_s",
        "publish_mb_per_s",
        "consume_msgs_per_s",
        "consume_mb_per_s",
    ] {
        assert!(overall[key].is_number(), "overall.{key} missing: {overall}");
    }
    for lat in ["publish_latency", "end_to_end_latency"] {
        for p in [
            "p50_ms", "p99_ms", "p999_ms", "p9999_ms", "max_ms", "samples",
        ] {
            assert!(overall[lat][p].is_number(), "overall.{lat}.{p} missing");
        }
    }
    let produced = overall["produced"].as_u64().unwrap();
    // 10 s at 2000 msg/s, open loop: close to 20000.
    assert!(produced > 15_000, "{overall}");
    assert_eq!(overall["consumed"].as_u64().unwrap(), produced, "{overall}");
    assert_eq!(overall["publish_errors"].as_u64(), Some(0));
    assert_eq!(overall["consume_errors"].as_u64(), Some(0));
    let intervals = json["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 9, "one interval a second");
    assert!(intervals[0]["publish_latency"]["p99_ms"].is_number());
    assert!(json["workload"]["partitionsPerTopic"].as_u64() == Some(4));
    let svg = std::fs::read_to_string(out_dir.join("latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    assert!(broker.terminate().success());
}

#[test]
fn a_backlog_is_built_with_consumers_paused_then_drained() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(&dir.path().join("data"), &[]);
    let addr = broker.listen_addr();
    let out_dir = dir.path().join("out");
    // 20 MB/s of 1 KiB messages against a 10 MB backlog: built after about half a second.
    let (stdout, json) = bench_ok(
        &addr,
        &out_dir,
        &[
            "--duration-s",
            "4",
            "--set",
            "producerRate=20000",
            "--set",
            "messageSize=1024",
            "--set",
            "consumerBacklogSizeGB=0.01",
        ],
    );
    assert!(stdout.contains("backlog of 0.010 GB: built"), "{stdout}");
    let backlog = &json["backlog"];
    assert_eq!(backlog["built"], serde_json::json!(true), "{backlog}");
    let reached = backlog["reached_after_s"].as_f64().unwrap();
    let drained = backlog["drained_after_s"].as_f64().unwrap();
    assert!(reached > 0.2 && reached < drained, "{backlog}");
    assert!(backlog["drain_consume_mb_per_s"].as_f64().unwrap() > 0.0);
    // While paused, nothing was consumed: the first end-to-end latencies are at least as long
    // as the pause (messages waited in the backlog).
    let overall = &json["overall"];
    assert!(overall["end_to_end_latency"]["max_ms"].as_f64().unwrap() >= reached * 1000.0 * 0.5);
    let produced = overall["produced"].as_u64().unwrap();
    assert!(produced > 40_000, "{overall}");
    assert_eq!(overall["consumed"].as_u64().unwrap(), produced, "{overall}");
    assert_eq!(overall["publish_errors"].as_u64(), Some(0));
    assert_eq!(overall["consume_errors"].as_u64(), Some(0));
    assert!(broker.terminate().success());
}

#[test]
fn bad_workloads_rates_and_brokers_get_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 1024\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: 10\ntestDurationMinutes: 1\nproducerRat: 5\n",
    )
    .unwrap();
    // Each against a port where nothing listens.
    fn bench<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["bench"], args, &["--bootstrap", "127.0.0.1:1"]].concat()
    }
    fails_saying(&bench(&[bad.to_str().unwrap()]), "producerRat");
    fails_saying(
        &bench(&["--set", "producerRate=0"]),
        "producerRate 0 must be a positive",
    );
    let started = std::time::Instant::now();
    fails_saying(&bench(&["--duration-s", "5"]), "cannot reach 127.0.0.1:1");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "no hang"
    );
    fails_saying(&bench(&["--set", "noSuchField=1"]), "noSuchField");
    // A broker configuration is for the embedded broker only.
    fails_saying(
        &bench(&["--broker-config", "spate.toml"]),
        "--broker-config configures the embedded broker",
    );
}

/// Runs `spate args` and checks that it fails with `needle` in its error output.
fn fails_saying(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn the_embedded_broker_takes_a_configuration_and_says_how_it_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spate.toml");
    std::fs::write(&config, "[log]\nsync_scope = \"filesystem\"\n").unwrap();
    let out_dir = dir.path().join("out");
    let out = run(&[
        "bench",
        "--broker-config",
        config.to_str().unwrap(),
        "--duration-s",
        "2",
        "--set",
        "producerRate=1000",
        "--quiet",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("durable appends: one syncfs per shard"),
        "the broker did not use the configuration: {err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    let overall = &json["overall"];
    assert!(overall["produced"].as_u64().unwrap() > 0, "{overall}");
    assert_eq!(overall["produced"], overall["consumed"], "{overall}");

    // A configuration the broker rejects stops the run with the broker's reason.
    std::fs::write(&config, "[log]\nsync_scope = \"disk\"\n").unwrap();
    let out = run(&[
        "bench",
        "--broker-config",
        config.to_str().unwrap(),
        "--duration-s",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("disk"), "{err}");
}

#[test]
fn an_interrupted_run_stops_its_broker_and_removes_its_data() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let temp = tempfile::tempdir().unwrap();
    // A directory left by a run that was killed outright: its process is gone, no lock held.
    let gone = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .unwrap();
    let stale = temp.path().join(format!("spate-bench-{gone}-1"));
    std::fs::create_dir_all(stale.join("topics")).unwrap();

    let out_dir = temp.path().join("out");
    let mut child = spate()
        .args(["bench", "--duration-s", "120", "--set", "producerRate=1000"])
        .args(["--quiet", "--out", out_dir.to_str().unwrap()])
        .env("TMPDIR", temp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Killed whatever happens below, so no broker outlives the test.
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: signalling the test's own child by pid.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _reap = Reap(pid);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (address, data_dir) = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no broker line: {seen:?}"))
            .unwrap();
        if let Some(rest) = line.strip_prefix("spate-bench: embedded broker at ") {
            let (address, rest) = rest.split_once(" (data in ").unwrap();
            let (dir, _) = rest.split_once(';').unwrap();
            break (address.to_string(), std::path::PathBuf::from(dir));
        }
        seen.push(line);
    };
    assert!(
        seen.iter().any(|l| l.contains(stale.to_str().unwrap())),
        "the stale directory was not reported: {seen:?}"
    );
    assert!(!stale.exists(), "the stale directory is still there");
    assert!(data_dir.starts_with(temp.path()), "{}", data_dir.display());
    assert!(data_dir.exists());
    // Let producers and consumers get going, then stop the run as a terminal or a
    // supervisor would.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling the test's own child by pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "spate bench did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted: stopped the embedded broker and removed")),
        "{rest:?}"
    );
    assert!(!data_dir.exists(), "{} is still there", data_dir.display());
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "the broker still listens on {address}"
    );
}
