//! One server per port: starting on an address another process already listens on fails at
//! once, names the listener and the address, and leaves the first server serving — for the
//! client listener at one and at several reactor threads (SO_REUSEPORT), for `--metrics` and
//! for `--cluster-listen`.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use fanout::client::{Client, ClientOptions};
use support::{connect_joined, run_to_exit, Server, IO_TIMEOUT};

/// How long a refused server may take to give up and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections opened to the first server after the second was refused: with the bug, the
/// kernel would have spread them over both servers.
const CLIENTS_AFTER_REFUSAL: usize = 8;

/// Runs `fanout serve` with `args` and asserts it fails at once with `expected` on stderr.
fn assert_refused(args: &[&str], expected: &str) {
    let mut all = vec!["serve", "--log-level", "debug"];
    all.extend_from_slice(args);
    let (status, stderr) = run_to_exit(&all, EXIT_TIMEOUT);
    let status: ExitStatus = status
        .unwrap_or_else(|| panic!("`fanout {}` still ran after {EXIT_TIMEOUT:?}; stderr:\n{stderr}", all.join(" ")));
    assert!(!status.success(), "`fanout {}` exited with {status:?}; stderr:\n{stderr}", all.join(" "));
    assert!(stderr.contains(expected), "stderr of `fanout {}` lacks {expected:?}:\n{stderr}", all.join(" "));
}

/// Asserts that `server` still serves: every fresh client gets WELCOME, and what each publishes
/// reaches a member that joined before — so all of them landed on this very server.
fn assert_still_serving(server: &Server) {
    let addr = server.addr();
    let mut watcher = connect_joined(addr, "watcher", "lobby");
    let options = ClientOptions { connect_timeout: Some(IO_TIMEOUT), ..ClientOptions::default() };
    for i in 0..CLIENTS_AFTER_REFUSAL {
        let name = format!("late-{i}");
        let mut client = Client::connect_with(addr, &name, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        client.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
        client.join("lobby").unwrap_or_else(|e| panic!("{name} join: {e}"));
        client.publish("lobby", name.as_bytes()).expect("publish");
        let message = watcher.next_message().unwrap_or_else(|e| panic!("watcher, waiting for {name}: {e}"));
        assert_eq!(&message.payload[..], name.as_bytes());
    }
}

/// The address logged after `prefix` (up to the next `/` or the end of the line).
fn logged_addr(server: &Server, prefix: &str) -> SocketAddr {
    let line = server.wait_for_log(prefix, IO_TIMEOUT).unwrap_or_else(|| panic!("no {prefix:?} in the log"));
    let rest = &line[line.find(prefix).expect("the prefix") + prefix.len()..];
    rest.split('/').next().unwrap_or(rest).trim().parse().expect("a socket address")
}

fn second_server_on_the_client_address_is_refused(threads: &str) {
    let first = Server::start(&["--threads", threads]);
    let addr = first.addr().to_string();
    assert_refused(
        &["--listen", &addr, "--threads", threads],
        &format!("client listener (--listen): address {addr} is already in use"),
    );
    assert_still_serving(&first);
}

#[test]
fn a_second_server_on_a_taken_client_address_is_refused_with_one_thread() {
    second_server_on_the_client_address_is_refused("1");
}

#[test]
fn a_second_server_on_a_taken_client_address_is_refused_with_two_threads() {
    second_server_on_the_client_address_is_refused("2");
}

#[test]
fn a_busy_metrics_address_is_refused_and_named() {
    let first = Server::start(&["--threads", "2", "--metrics", "127.0.0.1:0"]);
    let metrics = logged_addr(&first, "metrics on http://");
    assert_refused(
        &["--listen", "127.0.0.1:0", "--threads", "2", "--metrics", &metrics.to_string()],
        &format!("metrics listener (--metrics): address {metrics} is already in use"),
    );
    assert_still_serving(&first);
}

#[test]
fn a_busy_cluster_address_is_refused_and_named() {
    let dir = std::env::temp_dir().join(format!("fanout-ports-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let secret: PathBuf = dir.join("secret");
    std::fs::write(&secret, "s").expect("write the secret");
    let secret = secret.display().to_string();
    let cluster_flags = ["--cluster-listen", "127.0.0.1:0", "--cluster-secret-file", &secret, "--node-id", "1"];
    let first = Server::start(&[&["--threads", "2"][..], &cluster_flags].concat());
    let cluster = logged_addr(&first, "accepting node links on ").to_string();
    assert_refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--cluster-listen",
            &cluster,
            "--cluster-secret-file",
            &secret,
            "--node-id",
            "2",
        ],
        &format!("cluster listener (--cluster-listen): address {cluster} is already in use"),
    );
    assert_still_serving(&first);
}
