//! The client commands against a real broker: topic, produce, consume, group.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{spate, start};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = spate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "spate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn topics_produce_consume_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path(), &["--shards", "2"]);
    let addr = broker.listen_addr();
    let b = ["--bootstrap", addr.as_str()];
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(b.iter().map(|s| s.to_string()))
            .collect()
    };
    let call = |args: &[&'static str], stdin: Option<&str>| {
        let v = with(args);
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        ok(&r, stdin)
    };

    call(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    );
    assert!(call(&["topic", "list"], None).contains("orders\t3 partitions"));
    call(
        &["produce", "orders", "--key-separator", ":", "--acks", "all"],
        Some("a:1\nb:2\nc:3\nd:4\nnokey\n"),
    );
    call(
        &["produce", "orders", "--acks", "1", "--compression", "zstd"],
        Some("z1\nz2\n"),
    );

    // A group member reads everything once, and commits.
    let out = call(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--group",
            "g",
            "--key-separator",
            "=",
            "--idle-exit-ms",
            "1500",
        ],
        None,
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["=nokey", "=z1", "=z2", "a=1", "b=2", "c=3", "d=4"]
    );
    // The group resumes where it stopped: nothing is read twice.
    call(&["produce", "orders"], Some("late\n"));
    let out = call(
        &[
            "consume",
            "orders",
            "--group",
            "g",
            "--idle-exit-ms",
            "1500",
        ],
        None,
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["late"]);
    // -n stops after n records.
    let out = call(&["consume", "orders", "--from-beginning", "-n", "2"], None);
    assert_eq!(out.lines().count(), 2);

    let desc = call(&["topic", "describe", "orders"], None);
    assert!(desc.contains("retention.ms = 3600000"), "{desc}");
    assert!(
        desc.contains("segment.bytes = 1073741824 (default)"),
        "{desc}"
    );
    let groups = call(&["group", "list"], None);
    assert!(groups.contains("g\tconsumer"), "{groups}");
    let g = call(&["group", "describe", "g"], None);
    assert!(g.contains("group g: Empty"), "{g}");
    // Every partition's committed offset is its end: lag 0.
    let lags: Vec<&str> = g.lines().filter(|l| l.starts_with("orders\t")).collect();
    assert_eq!(lags.len(), 3, "{g}");
    assert!(lags.iter().all(|l| l.ends_with("\t0")), "{g}");

    call(&["topic", "delete", "orders"], None);
    assert!(!call(&["topic", "list"], None).contains("orders"));

    // Errors: a clear message and a non-zero exit.
    let v = with(&["topic", "create", "bad/name"]);
    let out = run(&v.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidTopicException"));
    let v = with(&["topic", "describe", "missing"]);
    let out = run(&v.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(!out.status.success());
    assert!(broker.terminate().success());

    let out = run(
        &[
            "topic",
            "list",
            "--bootstrap",
            "127.0.0.1:1",
            "--timeout-ms",
            "2000",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach 127.0.0.1:1"));
}
