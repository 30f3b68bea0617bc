//! The bench's payload: a fixed stamp at the front, padding after it. Every protocol adapter
//! carries the same bytes, so the receivers' accounting does not depend on the server.
//!
//! ```text
//! bytes 0..8    send time: u64 LE, ns since the bench's shared epoch
//! bytes 8..12   publisher id: u32 LE
//! bytes 12..20  sequence number: u64 LE, from 1, per publisher
//! byte  20      flags: bit 0 = published inside the measured window
//! bytes 21..    padding up to --size
//! ```

/// Bytes the stamp needs: the smallest allowed `--size`.
pub const STAMP_BYTES: usize = 21;

/// Flag bit: the message was published inside the measured window.
const FLAG_MEASURED: u8 = 0b1;

/// Byte used to pad payloads past the stamp.
const PADDING: u8 = b'.';

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When the publisher handed it to its socket, in ns since the shared epoch.
    pub send_ns: u64,
    /// The publisher's index.
    pub publisher: u32,
    /// The publisher's sequence number, from 1.
    pub seq: u64,
    /// Whether it counts (published after the warm-up and before the end of the duration).
    pub measured: bool,
}

impl Stamp {
    /// Writes the stamp over the front of `payload` (at least [`STAMP_BYTES`] long).
    pub fn write(&self, payload: &mut [u8]) {
        let Some(head) = payload.get_mut(..STAMP_BYTES) else {
            debug_assert!(false, "payload shorter than its stamp");
            return;
        };
        head[0..8].copy_from_slice(&self.send_ns.to_le_bytes());
        head[8..12].copy_from_slice(&self.publisher.to_le_bytes());
        head[12..20].copy_from_slice(&self.seq.to_le_bytes());
        head[20] = if self.measured { FLAG_MEASURED } else { 0 };
    }

    /// Reads the stamp of a received payload; `None` if it cannot be one of ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let head = payload.get(..STAMP_BYTES)?;
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let mut publisher = [0u8; 4];
        publisher.copy_from_slice(&head[8..12]);
        let flags = head[20];
        let seq = u64_at(12);
        if flags & !FLAG_MEASURED != 0 || seq == 0 {
            return None;
        }
        Some(Self { send_ns: u64_at(0), publisher: u32::from_le_bytes(publisher), seq, measured: flags != 0 })
    }
}

/// A payload of `size` bytes, padded, ready for [`Stamp::write`].
pub fn blank(size: usize) -> Vec<u8> {
    vec![PADDING; size.max(STAMP_BYTES)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut payload = blank(64);
        let stamp = Stamp { send_ns: 123_456_789, publisher: 7, seq: 42, measured: true };
        stamp.write(&mut payload);
        assert_eq!(payload.len(), 64);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert_eq!(payload[STAMP_BYTES..], [PADDING; 64 - STAMP_BYTES]);
    }

    #[test]
    fn foreign_payloads_are_refused() {
        assert_eq!(Stamp::read(b"hello"), None);
        assert_eq!(Stamp::read(&[0u8; STAMP_BYTES]), None, "seq 0 is never sent");
        let mut payload = blank(STAMP_BYTES);
        Stamp { send_ns: 1, publisher: 0, seq: 1, measured: false }.write(&mut payload);
        payload[20] = 0x80;
        assert_eq!(Stamp::read(&payload), None);
    }
}
