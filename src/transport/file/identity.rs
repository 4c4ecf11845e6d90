//! Which *start* of a process holds a claim or a lock.
//!
//! A pid alone does not name a process: a container restarted with the same host name gets pid 1
//! again, and on the host pid 1 is some unrelated, live process. So claims and locks also carry the
//! process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot — the same in every
//! pid namespace of the machine). A process with that pid whose start time differs is another
//! process: the recorded owner has ended.

use std::sync::OnceLock;

/// The start time of process `pid` in clock ticks since boot, if `/proc` tells it.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the command: field 3 (state) is the first; starttime is field 22, i.e. the 20th here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's start identity: its start time, or (without `/proc`) a random nonce fixed for
/// the life of the process. Never 0 (0 marks an owner of unknown start).
pub fn own_start() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(|| {
        process_start(std::process::id())
            .filter(|&s| s != 0)
            .unwrap_or_else(|| fastrand::u64(1..))
    })
}

/// `true` when process `pid` on this host still is the start `start` (0: unknown, any start
/// counts) — i.e. it runs and, where `/proc` tells, started at that time.
pub fn same_process_alive(pid: u32, start: u64) -> bool {
    if !super::lock::process_alive(pid) {
        return false;
    }
    if start == 0 {
        return true;
    }
    match process_start(pid) {
        Some(now) => now == start,
        // Alive, but its start time is not visible here (no /proc): assume it is the owner.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_start_time_after_an_odd_command_name() {
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_start(stat), Some(987654));
        assert_eq!(parse_start("garbage"), None);
    }

    #[test]
    fn this_process_is_its_own_start_and_no_other() {
        let me = std::process::id();
        let start = own_start();
        assert_ne!(start, 0);
        assert!(same_process_alive(me, start));
        assert!(same_process_alive(me, 0));
        assert!(!same_process_alive(me, start + 1));
        assert!(!same_process_alive(2147483632, 0));
    }
}
