//! CPU time of a process from `/proc/PID/stat`, to put the bench's own cost next to the
//! server's.

use std::fs;

/// Clock ticks per second of the `/proc` times (`getconf CLK_TCK`). It is USER_HZ, 100 on every
/// mainstream Linux build; assumed rather than asked of `sysconf`, which would need libc.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds of process `pid` (all its threads), or of this process for
/// `None`; `None` if it cannot be read (no such process, not Linux).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&fs::read_to_string(path).ok()?)
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11); // field 3 (state) is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_after_an_awkward_name() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(stat), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
        assert!(cpu_seconds(None).is_some_and(|s| s >= 0.0));
    }
}
