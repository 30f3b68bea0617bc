//! The flush linger (a busy reactor holds its clients' bytes briefly so that several messages
//! leave in one write) loses nothing, reorders nothing, and never strands a held message: the
//! reactor wakes for the end of the hold, not for its next timer tick.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::{connect_joined, Progress, Server};

const SUBSCRIBERS: usize = 300;
const MESSAGES: usize = 30;
const PAYLOAD_BYTES: usize = 64;
/// The loop's timer ticks every second with these timeouts (a quarter of the 10 s handshake
/// timeout, at most 1 s): a held flush that waited for the tick would take about that long.
const HELD_MESSAGE_WAIT_MAX: Duration = Duration::from_millis(500);

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:06}:").into_bytes();
    p.resize(PAYLOAD_BYTES, b'a' + (i % 26) as u8);
    p
}

#[test]
fn messages_into_a_big_room_arrive_whole_in_order_and_a_held_one_is_not_left_for_a_tick() {
    // The largest hold allowed, so that every pass over 300 recipients holds the next flush for
    // as long as the pass took.
    let server = Server::start(&["--threads", "1", "--flush-linger-us", "20000"]);
    let addr = server.addr();
    let mut subscribers: Vec<_> = (0..SUBSCRIBERS).map(|i| connect_joined(addr, &format!("s{i}"), "big")).collect();
    let publisher = connect_joined(addr, "p", "big");
    // Ping-pong with the last subscriber: each message is published right after the previous
    // one's pass reached it, so it arrives while the reactor holds its next flush, and nothing
    // else arrives after it.
    let last = subscribers.last_mut().expect("subscribers");
    for i in 0..MESSAGES {
        publisher.publish("big", &payload(i)).expect("publish");
        let published = Instant::now();
        let m = last.next_message().unwrap_or_else(|e| panic!("the last subscriber's message {i}: {e}"));
        assert_eq!(m.payload[..], payload(i)[..], "the last subscriber's message {i}");
        let waited = published.elapsed();
        assert!(waited < HELD_MESSAGE_WAIT_MAX, "message {i} took {waited:?} to reach the last subscriber");
    }
    for (s, subscriber) in subscribers.iter_mut().enumerate().take(SUBSCRIBERS - 1) {
        for i in 0..MESSAGES {
            let m = subscriber.next_message().unwrap_or_else(|e| panic!("s{s}'s message {i}: {e}"));
            assert_eq!((&m.name[..], &m.payload[..]), (&b"p"[..], &payload(i)[..]), "s{s}'s message {i}");
            assert_eq!(m.seq, i as u64 + 1, "s{s}'s message {i}");
        }
    }
}

/// A publisher that keeps a window of messages in flight, as a load generator does, so input
/// keeps arriving during holds of tens of microseconds: nothing is lost or reordered, and the
/// window never stalls for a tick. (Bytes whose hold ended while a turn ran are due at once —
/// `Linger::due_at`'s unit test; this run does not reliably reach that moment, `fanout bench`
/// with a window of 100 did: p99 of 0.3–0.9 s before the fix.)
#[test]
fn a_windowed_publisher_is_never_left_waiting_for_a_tick() {
    const SUBSCRIBERS: usize = 40;
    const MESSAGES: u64 = 4000;
    const WINDOW: u64 = 40;
    let server = Server::start(&["--threads", "1"]);
    let addr = server.addr();
    let progress = Progress::new(SUBSCRIBERS);
    let readers: Vec<_> = (0..SUBSCRIBERS)
        .map(|s| {
            let mut subscriber = connect_joined(addr, &format!("s{s}"), "windowed");
            let progress = progress.clone();
            thread::spawn(move || {
                for i in 0..MESSAGES {
                    let m = subscriber.next_message().unwrap_or_else(|e| panic!("s{s}'s message {i}: {e}"));
                    assert_eq!(m.payload[..], payload(i as usize)[..], "s{s}'s message {i}");
                    progress.set(s, i + 1);
                }
            })
        })
        .collect();
    let publisher = connect_joined(addr, "p", "windowed");
    let mut stalled_max = Duration::ZERO;
    for i in 0..MESSAGES {
        if i >= WINDOW {
            let asked = Instant::now();
            let within = progress.wait_min(i + 1 - WINDOW, HELD_MESSAGE_WAIT_MAX * 4);
            stalled_max = stalled_max.max(asked.elapsed());
            assert!(within, "message {} never reached every subscriber", i + 1 - WINDOW);
        }
        publisher.publish("windowed", &payload(i as usize)).expect("publish");
    }
    for reader in readers {
        reader.join().expect("a subscriber failed");
    }
    assert!(stalled_max < HELD_MESSAGE_WAIT_MAX, "the window stalled for {stalled_max:?}");
}

#[test]
fn a_linger_beyond_its_limit_is_refused_naming_the_flag() {
    let (status, stderr) = support::run_to_exit(&["serve", "--flush-linger-us", "20001"], Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("--flush-linger-us must be at most 20000 µs"), "{stderr}");
}
