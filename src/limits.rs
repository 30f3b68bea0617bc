//! Every limit of the server in one place, with its unit in its name: the protocol's own (from
//! `fanout_proto::limits`, re-exported) and the server's.
//!
//! `protocol.md` documents each of these; `config.rs` lets an operator change the ones that
//! have a flag. Relations between them are checked at compile time at the bottom.

use std::time::Duration;

pub use fanout_proto::limits::*;

/// Highest core id: session and stream ids give the core 8 bits (node 16, counter 40).
pub const MAX_CORE_ID: u16 = 255;

/// Default limit on rooms one connection may be a member of at once.
pub const ROOMS_PER_CONNECTION_MAX: usize = 64;

/// Default limit on bytes queued for one connection before it is cut as a slow consumer.
pub const OUTPUT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Shortest handshake, ping interval or ping timeout an operator may set.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(10);

/// Timer ticks per shortest timeout: a timeout fires at most 1/4 late.
pub const TICKS_PER_TIMEOUT: u32 = 4;

/// Shortest timer tick of a reactor (a loop waking more often would only burn CPU).
pub const TICK_MIN: Duration = Duration::from_millis(10);

/// Longest timer tick of a reactor (so idle buffers are released and pings sent within it).
pub const TICK_MAX: Duration = Duration::from_secs(1);

/// Default time over which a draining server (SIGUSR2) closes its clients with `DRAINING`, spread
/// evenly, so that they reconnect elsewhere a few at a time rather than all at once.
pub const DRAIN_PERIOD: Duration = Duration::from_secs(5);

/// Default bound on how long a busy reactor holds its clients' bytes after a flush pass so that
/// the next messages leave in the same `write` (see `linger.rs`); an idle reactor never holds.
/// A hold shorter than a millisecond is timed by a `timerfd` (`fanout-timer`), since the poll's
/// own timeout counts whole milliseconds.
pub const FLUSH_LINGER_MAX: Duration = Duration::from_millis(1);

/// The largest `--flush-linger-us` accepted: beyond it the hold is no longer small against a
/// person's sense of "instant", whatever it saves.
pub const FLUSH_LINGER_CONFIG_MAX: Duration = Duration::from_millis(20);

const _: () = assert!(FLUSH_LINGER_MAX.as_micros() <= FLUSH_LINGER_CONFIG_MAX.as_micros());

/// File descriptors a server needs besides one per client: listeners, pollers and wakers,
/// node links and their handshakes, metrics scrapes, stdio (the descriptor limit is raised to
/// `--max-connections` plus this).
pub const DESCRIPTORS_RESERVED: u64 = 256;

/// Cores at or below which one reactor is the default: on such a machine a second reactor
/// competes with the kernel's network processing (and any co-located clients) for the same
/// cores, and measured slower than one on most workloads (README, Performance).
pub const SINGLE_REACTOR_CORES_MAX: usize = 2;

/// The default number of reactors on a machine with `cores` cores: one per core, or one on a
/// machine of at most [`SINGLE_REACTOR_CORES_MAX`] cores.
pub fn default_threads(cores: usize) -> usize {
    if cores <= SINGLE_REACTOR_CORES_MAX {
        1
    } else {
        cores
    }
}

/// Default limit on concurrent client connections per server.
pub const CONNECTIONS_MAX: usize = 100_000;

/// Default time a binary client has between connecting and sending `HELLO`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection being closed for a fault may take to read its error and hang up.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Default silence from a client after which the server sends `PING`.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Default further silence after a `PING` before the server gives up on the client.
pub const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from one connection per event-loop turn, so one flooding client cannot starve
/// the others; the rest is read on the next turn.
pub const READ_BYTES_PER_TURN_MAX: usize = 256 * 1024;

/// Bytes the reactor asks the kernel for in one `read`.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Most buffers handed to one vectored write (Linux `IOV_MAX` is 1024).
pub const IOVECS_PER_WRITE_MAX: usize = 64;

/// Frames of this size or more are shared by reference count; smaller ones are copied into a
/// connection's output buffer. Chosen by `benches/fanout.rs`: copying wins below 384 B,
/// sharing from 512 B (see the README for the figures).
pub const SHARE_FRAME_BYTES_MIN: usize = 512;

/// How long a new connection may stay silent before it is taken as a line-mode (text) client
/// and greeted. Binary clients send `HELLO` the moment they connect, so they decide their
/// dialect by their first byte long before this; a person with `nc` who only listens is greeted
/// after it and then receives the room's messages.
pub const LINE_MODE_SILENCE: Duration = Duration::from_millis(150);

/// Idle time before the kernel probes a client's TCP connection (line-mode clients are never
/// pinged, so this is what finds a dead `nc`).
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Time between two TCP keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered TCP keepalive probes before the kernel drops the connection: a dead peer is found
/// within idle + probes × interval = 90 s.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Most presence entries (one per member of a room, cluster-wide) one core keeps; entries
/// from peers beyond it are not stored, so `/who` shows fewer members than there are.
pub const PRESENCE_ENTRIES_MAX: usize = 1_000_000;

/// How long a member holding a name someone else asks for (a `JOIN` refused with
/// `NAME_TAKEN`) has to answer the `PING` it is sent at once, before it is closed with
/// `TIMEOUT`: a half-open connection left by a client that reconnects under its name is found
/// within this (plus a tick), not after the ping interval and timeout.
pub const NAME_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most presence entries from peers one core keeps for one room: a room of many thousands is
/// listed, but one room cannot take the whole table.
pub const PRESENCE_ROOM_ENTRIES_MAX: usize = 100_000;

/// Most bytes of presence state one core keeps (an estimate of the table's memory: entries,
/// rooms, tombstones and names); entries from peers beyond it are not stored.
pub const PRESENCE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The estimated memory of one presence entry besides its name: the entry (64 B), its places in
/// the room's three indexes (join order, session id, name), and the allocation holding its name.
pub const PRESENCE_ENTRY_BYTES: usize = 224;

/// The estimated memory of one room of the presence table besides its name.
pub const PRESENCE_ROOM_BYTES: usize = 128;

/// The estimated memory of one presence tombstone (its two indexes and, at worst, a copy of its
/// room's name).
pub const PRESENCE_TOMBSTONE_BYTES: usize = 192;

/// Most presence tombstones (members of peers that left, remembered so that a late join of
/// theirs cannot bring them back) one core keeps; beyond it the oldest is forgotten. Each is
/// also dropped when the link that brought it goes down (see `presence`).
pub const PRESENCE_TOMBSTONES_MAX: usize = 100_000;

const _: () = assert!(PRESENCE_TOMBSTONES_MAX <= PRESENCE_ENTRIES_MAX, "tombstones cost less than the members");
const _: () = assert!(
    PRESENCE_TOMBSTONES_MAX * PRESENCE_TOMBSTONE_BYTES <= PRESENCE_BYTES_MAX / 8,
    "tombstones never take more than an eighth of presence's bytes"
);
const _: () = assert!(
    PRESENCE_ENTRIES_MAX * PRESENCE_ENTRY_BYTES <= PRESENCE_BYTES_MAX,
    "the byte bound binds before the entry bound only for long names"
);
const _: () = assert!(PRESENCE_ROOM_ENTRIES_MAX <= PRESENCE_ENTRIES_MAX);
const _: () = assert!(
    NAME_PROBE_TIMEOUT.as_millis() + TICK_MAX.as_millis() < NAME_TAKEN_RETRY_MAX.as_millis(),
    "a client retrying a taken name outlasts the probe of a dead holder"
);

const _: () = assert!(READ_CHUNK_BYTES <= READ_BYTES_PER_TURN_MAX);

const _: () = assert!(OUTPUT_BYTES_MAX >= HEADER_BYTES + FRAME_BODY_BYTES_MAX);

const _: () = assert!(LINE_MODE_SILENCE.as_millis() < HANDSHAKE_TIMEOUT.as_millis());

/// How long accepting pauses after the process ran out of file descriptors (client and node
/// listeners alike): the rest waits in the kernel's backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accept errors in a row (other than running out of descriptors) after which a turn stops
/// accepting from a listener; the next readiness goes on. Bounds the loop when a listener keeps
/// failing, while one connection that died in the backlog (ECONNABORTED) is merely skipped.
pub const ACCEPT_ERRORS_IN_A_ROW_MAX: usize = 64;

/// Node links accepted and not yet authenticated, at most; a connection to the cluster port
/// beyond it is closed at once (a real node redials), so a flood of half-open connections costs
/// no handshake state.
pub const NODE_LINKS_PENDING_MAX: usize = 64;

/// Longest a `JOIN` (or a gateway relaying an announcement) waits for a peer's `INTEREST_ACK`;
/// a peer that has not answered by then is not waited for (checked once per timer tick).
pub const INTEREST_ACK_WAIT_MAX: Duration = Duration::from_secs(2);

/// Longest the oldest unsent byte of data may wait on a node link before the link is cut as too
/// slow (grey failure); with the kernel's share bounded by [`NODE_LINK_UNSENT_BYTES_MAX`], this
/// bounds how late a message crossing a slow link can be.
pub const NODE_LINK_LAG_MAX: Duration = Duration::from_secs(2);

/// Bytes a node link's socket may hold that the kernel has not sent yet (`TCP_NOTSENT_LOWAT`):
/// the backlog waits in the link's queues, where control frames can pass it and its age is known.
pub const NODE_LINK_UNSENT_BYTES_MAX: u32 = 128 * 1024;

/// Bytes queued on one peer link before further forwards to that peer are dropped.
pub const LINK_OUTPUT_BYTES_MAX: usize = 64 * 1024 * 1024;

// ----- moved here from the modules that use them -----

/// First redial delay after a link to a node fails.
pub const REDIAL_DELAY_MIN: Duration = Duration::from_millis(100);

/// Longest redial delay; with jitter a healed network is used again within about this long.
pub const REDIAL_DELAY_MAX: Duration = Duration::from_secs(2);

/// Silence on a node link after which the gateway pings it.
pub const LINK_PING_INTERVAL: Duration = Duration::from_millis(500);

/// Silence on a node link after which it is declared down (crash, partition, blackhole).
pub const LINK_SILENCE_MAX: Duration = Duration::from_secs(3);

/// A node link that has not finished its handshake in this long is dropped.
pub const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest cluster secret read from `--cluster-secret-file`.
pub const SECRET_BYTES_MAX: usize = 4096;

/// Bytes one link may have in flight (sent, not yet taken by the peer).
pub const MAIL_IN_FLIGHT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Bytes reserved at a time for encoding publishes, so small frames share one allocation.
pub const ENCODE_BUFFER_BYTES: usize = 64 * 1024;

/// Readiness events taken from the kernel per `poll`.
pub const EVENTS_PER_POLL: usize = 1024;

/// Default listen backlog (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Longest HTTP request head accepted; longer gets 400.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Metrics connections served at once; more are refused (closed at accept).
pub const METRICS_CONNECTIONS_MAX: usize = 64;

/// How long a scraper has to send its request and read the answer.
pub const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `/connz` and `/roomz` wait for every core's answer before giving up with 503.
pub const INTROSPECTION_WAIT_MAX: Duration = Duration::from_secs(2);

/// Rows in a `/connz` or `/roomz` page when `limit` is not given.
pub const INTROSPECTION_LIMIT_DEFAULT: usize = 256;

/// Most rows in one page; a larger `limit` is cut to this (the answer says which limit held).
pub const INTROSPECTION_LIMIT_MAX: usize = 1024;

/// `/connz` and `/roomz` requests waiting at once; more get 503 (each may hold megabytes).
pub const INTROSPECTIONS_WAITING_MAX: usize = 16;

/// A resolved host name is resolved again this often, to find nodes added behind it.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// After the first warning about failed dials to an address, at most one per this long.
pub const DIAL_WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Most addresses whose failures are remembered for rate-limiting warnings.
pub const WARN_RUNS_MAX: usize = 1024;

const _: () = assert!(MAIL_IN_FLIGHT_BYTES_MAX <= LINK_OUTPUT_BYTES_MAX, "a sibling's queue holds what is in flight");
const _: () = assert!(REDIAL_DELAY_MIN.as_millis() <= REDIAL_DELAY_MAX.as_millis());
const _: () = assert!(
    LINK_PING_INTERVAL.as_millis() < LINK_SILENCE_MAX.as_millis(),
    "a live link pings before it is called silent"
);
const _: () = assert!(LINK_SILENCE_MAX.as_millis() <= LINK_HANDSHAKE_TIMEOUT.as_millis());
const _: () = assert!(
    INTEREST_ACK_WAIT_MAX.as_millis() < LINK_SILENCE_MAX.as_millis(),
    "a JOIN never waits for a link about to be cut"
);
const _: () = assert!(INTROSPECTION_LIMIT_DEFAULT <= INTROSPECTION_LIMIT_MAX);
const _: () = assert!(TICK_MIN.as_millis() <= TICK_MAX.as_millis() && TIMEOUT_MIN.as_millis() >= TICK_MIN.as_millis());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_machines_default_to_one_reactor_larger_ones_to_one_per_core() {
        let defaults: Vec<usize> = [1, 2, 3, 4, 64].into_iter().map(default_threads).collect();
        assert_eq!(defaults, [1, 1, 3, 4, 64]);
    }
}
