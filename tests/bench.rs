//! `fanout bench` against a live server: exact accounting and a valid JSON summary line, also
//! against a server that wants a token; `--sweep` steps through its rates and names the
//! highest one sustained.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use support::json::{Json, Parser};
use support::Server;

fn count(object: &BTreeMap<String, Json>, key: &str) -> u64 {
    match object.get(key) {
        Some(Json::Number(n)) if n.fract() == 0.0 && *n >= 0.0 => *n as u64,
        other => panic!("{key} should be a count, is {other:?}"),
    }
}

#[test]
fn bench_against_a_live_server_counts_exactly_and_prints_json() {
    let server = Server::start(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--addr", &server.addr().to_string(), "--subscribers", "20", "--publishers", "2"])
        .args(["--rooms", "2", "--size", "64", "--duration", "2", "--warmup", "1", "--json"])
        .output()
        .expect("run fanout bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    // With --json, stdout is the JSON and nothing else (the table goes to stderr): `| jq` works.
    assert_eq!(stdout.lines().count(), 1, "stdout holds more than the JSON line:\n{stdout}");
    let last = stdout.lines().last().expect("some output");
    let Json::Object(report) = Parser::parse(last).unwrap_or_else(|e| panic!("invalid JSON ({e}): {last}")) else {
        panic!("the last line is not a JSON object: {last}");
    };
    let published = count(&report, "published");
    let expected = count(&report, "expected");
    assert!(published > 0, "nothing was published");
    // 2 rooms of 10 subscribers; publisher p publishes to room p % 2.
    assert_eq!(expected, published * 10, "every publish is expected by the 10 subscribers of its room");
    assert_eq!(count(&report, "delivered"), expected);
    assert_eq!(count(&report, "lost"), 0);
    assert_eq!(count(&report, "duplicated"), 0);
    assert_eq!(count(&report, "reordered"), 0);
    assert!(matches!(report.get("delivered_per_sec"), Some(Json::Number(n)) if *n > 0.0));
    let Some(Json::Object(latency)) = report.get("latency_us") else { panic!("latency_us is not an object") };
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(matches!(latency.get(key), Some(Json::Number(n)) if *n >= 0.0), "latency_us.{key}");
    }
}

#[test]
fn bench_presents_its_token_to_a_server_started_with_a_token_file() {
    let path = std::env::temp_dir().join(format!("fanout-bench-token-{}", std::process::id()));
    std::fs::write(&path, "bench-s3cret\n").expect("write the token file");
    let server = Server::start(&["--token-file", path.to_str().expect("utf-8 temp path")]);
    let bench = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
        command.args(["bench", "--addr", &server.addr().to_string(), "--subscribers", "2", "--publishers", "1"]);
        command.args(["--size", "32", "--rate", "200", "--duration", "0.5", "--warmup", "0", "--json"]);
        command.env_remove("FANOUT_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command.output().expect("run fanout bench")
    };

    let output = bench(Some("bench-s3cret"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().last().expect("some output");
    let Ok(Json::Object(report)) = Parser::parse(last) else { panic!("the last line is not a JSON object: {last}") };
    let published = count(&report, "published");
    assert!(published > 0, "nothing was published");
    assert_eq!(count(&report, "expected"), published * 2);
    assert_eq!(count(&report, "delivered"), published * 2);
    assert_eq!(count(&report, "lost"), 0);
    assert!(!stdout.contains("bench-s3cret"), "the report shows the token");

    let refused = bench(None);
    assert!(!refused.status.success(), "without the token the bench must fail");
    let text = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(text.contains("UNAUTHORIZED"), "unclear failure without a token: {text}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_sweep_raises_the_rate_step_by_step_and_names_the_highest_sustained() {
    let server = Server::start(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--addr", &server.addr().to_string(), "--subscribers", "3", "--publishers", "1"])
        .args(["--size", "32", "--duration", "1", "--warmup", "0", "--json", "--label", "loopback"])
        // The p99 bound is a minute: a step here fails only on loss, never on speed.
        .args([
            "--sweep",
            "--sweep-start",
            "50",
            "--sweep-factor",
            "2",
            "--sweep-steps",
            "2",
            "--sweep-p99-ms",
            "60000",
        ])
        .output()
        .expect("run fanout bench --sweep");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sweep failed: {stderr}\n{stdout}");
    let lines: Vec<Json> = stdout.lines().map(Json::parse).collect();
    assert_eq!(lines.len(), 3, "two steps and the summary:\n{stdout}");
    for (step, offered) in [(0, 50), (1, 100)] {
        let line = &lines[step];
        assert_eq!((line.text("label"), line.text("protocol")), ("loopback", "fanout"));
        assert_eq!((line.int("step"), line.int("attempt"), line.int("offered_per_sec")), (step as u64, 1, offered));
        assert_eq!(line.int("offered_deliveries_per_sec"), offered * 3);
        assert_eq!((line.int("lost"), line.int("wrong"), line.int("disconnects")), (0, 0, 0));
        assert_eq!((line.get("pass"), line.text("verdict")), (&Json::Bool(true), "pass"));
    }
    assert_eq!(lines[2].int("sustained_per_sec"), 100);
    assert_eq!(lines[2].int("sustained_deliveries_per_sec"), 300);
    assert_eq!(lines[2].text("stop"), "all_passed");
    // The table goes to stderr: a header, a row per step, and the closing sentence.
    let rows: Vec<&str> = stderr.lines().filter(|l| l.starts_with("| loopback | ")).collect();
    assert_eq!(rows.len(), 2, "{stderr}");
    assert!(rows[0].starts_with("| loopback | 50 | 150 | ") && rows[0].ends_with(" | pass |"), "{}", rows[0]);
    assert!(
        stderr.contains(
            "loopback sustains 100 msgs/s (300 deliveries/s) with p99 under 60000 ms and nothing lost; \
         every step passed"
        ),
        "{stderr}"
    );
}

#[test]
fn the_json_parser_refuses_broken_json() {
    for broken in ["{", "{\"a\":}", "[1,]", "{\"a\":1}x", "\"open", "{\"a\" 1}"] {
        assert!(Parser::parse(broken).is_err(), "{broken}");
    }
    assert_eq!(Parser::parse("{\"a\":[1,true,null,\"x\\n\"]}").unwrap(), {
        let mut m = BTreeMap::new();
        m.insert(
            "a".to_string(),
            Json::List(vec![Json::Number(1.0), Json::Bool(true), Json::Null, Json::Text("x\n".into())]),
        );
        Json::Object(m)
    });
}
