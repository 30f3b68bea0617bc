//! What the bench's threads share: the phase, the shared clock epoch, and per-publisher
//! counters. Threads touch these once per loop turn, not once per message.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Where the run is; only the coordinating thread moves it, always forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connecting, joining, subscribing.
    Setup = 0,
    /// Publishing; nothing counts yet.
    Warmup = 1,
    /// Publishing; messages are marked measured.
    Measure = 2,
    /// No more publishing; receivers drain what is in flight.
    Drain = 3,
    /// Threads close their connections and return their reports.
    Stop = 4,
}

impl Phase {
    /// The name in progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Warmup => "warmup",
            Self::Measure => "measure",
            Self::Drain => "drain",
            Self::Stop => "stop",
        }
    }
}

/// Counters of one publisher, on their own cache line (the publisher's thread writes `sent`,
/// every receiving thread adds to `delivered`).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PublisherCounters {
    /// Highest sequence number handed to the socket (= messages published).
    pub sent: AtomicU64,
    /// Deliveries of this publisher's messages, all subscribers and phases together.
    pub delivered: AtomicU64,
    /// First sequence number published in the measured window, 0 if none.
    pub first_measured: AtomicU64,
    /// Last sequence number published in the measured window, 0 if none.
    pub last_measured: AtomicU64,
}

impl PublisherCounters {
    /// Messages published inside the measured window.
    pub fn measured(&self) -> u64 {
        let first = self.first_measured.load(Ordering::Acquire);
        let last = self.last_measured.load(Ordering::Acquire);
        if first == 0 || last < first {
            0
        } else {
            last - first + 1
        }
    }
}

/// State shared by the coordinator and the client threads.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of every payload timestamp.
    pub epoch: Instant,
    phase: AtomicU8,
    /// When publishing started (ns since `epoch`): the origin of the rate schedule.
    pub start_ns: AtomicU64,
    /// Connections that finished their set-up.
    pub ready: AtomicUsize,
    /// Threads that saw the drain phase and will publish nothing more.
    pub stopped_publishing: AtomicUsize,
    /// Measured messages delivered once (duplicates not counted), all threads together.
    pub unique_measured: AtomicU64,
    /// One counter set per publisher.
    pub publishers: Vec<PublisherCounters>,
    failure: Mutex<Option<String>>,
}

impl Shared {
    /// Fresh state for `publishers` publishers.
    pub fn new(publishers: usize) -> Self {
        Self {
            epoch: Instant::now(),
            phase: AtomicU8::new(Phase::Setup as u8),
            start_ns: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            stopped_publishing: AtomicUsize::new(0),
            unique_measured: AtomicU64::new(0),
            publishers: (0..publishers).map(|_| PublisherCounters::default()).collect(),
            failure: Mutex::new(None),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Setup,
            1 => Phase::Warmup,
            2 => Phase::Measure,
            3 => Phase::Drain,
            _ => Phase::Stop,
        }
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records why the run cannot go on (the first reason wins) and stops it.
    pub fn fail(&self, reason: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failure.get_or_insert(reason);
        drop(failure);
        self.set_phase(Phase::Stop);
    }

    /// Why the run failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Deliveries so far, all publishers together.
    pub fn delivered_total(&self) -> u64 {
        self.publishers.iter().map(|p| p.delivered.load(Ordering::Relaxed)).sum()
    }

    /// Publishes so far, all publishers together.
    pub fn sent_total(&self) -> u64 {
        self.publishers.iter().map(|p| p.sent.load(Ordering::Relaxed)).sum()
    }
}
