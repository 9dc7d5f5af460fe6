//! Watching a running L1 from the host: its console log (kernel trouble,
//! lines to echo, the stage 2 marker) and stage 2's heartbeat file.

use anyhow::Result;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Lines in L1's console that mean L1's kernel is in trouble.
const TROUBLE: &[&str] = &[
    "Kernel panic",
    "corrupted stack end",
    "BUG:",
    "Oops:",
    "general protection fault",
    "Call Trace:",
    // An L2 guest reset before its init ran (tests/src/process.rs).
    "LAB-L2-EARLY-RESET",
    // An L1 CPU stuck for a minute (as under the emulated SVM, inside
    // KVM_RUN): the other CPU keeps the heartbeat going, so only this
    // tells that L1 will not get anywhere.
    "detected stalls on CPUs",
    "self-detected stall on CPU",
];
/// Trouble L1 does not survive: it should go down by itself (`panic=-1`
/// with `-no-reboot`), and is killed if it has not within [`FATAL_GRACE`].
const FATAL: &[&str] = &[
    "Kernel panic",
    "corrupted stack end",
    "detected stalls on CPUs",
    "self-detected stall on CPU",
];
pub const FATAL_GRACE: Duration = Duration::from_secs(20);
/// An L1 whose stage 2 heartbeat (`share/heartbeat`, every 5 s) has not
/// changed for this long is hung.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(120);
/// Watches stage 2's heartbeat file (once it exists).
pub struct Heartbeat {
    path: PathBuf,
    last: String,
    changed: Instant,
}

impl Heartbeat {
    pub fn new(path: PathBuf) -> Heartbeat {
        Heartbeat {
            path,
            last: String::new(),
            changed: Instant::now(),
        }
    }

    /// Whether the beat has not changed for [`HEARTBEAT_LIMIT`].
    pub fn stale(&mut self) -> bool {
        let Ok(beat) = fs::read_to_string(&self.path) else {
            return false;
        };
        if beat != self.last {
            self.last = beat;
            self.changed = Instant::now();
        }
        self.changed.elapsed() > HEARTBEAT_LIMIT
    }
}

/// Follows L1's console log as QEMU writes it.
pub struct Watch {
    file: File,
    pub console: String,
    /// Start of the line not yet complete.
    line_start: usize,
    echo: Option<&'static str>,
    pub trouble: Option<String>,
    pub fatal_since: Option<Instant>,
    pub booted: Option<Duration>,
}

impl Watch {
    pub fn new(file: File, echo: Option<&'static str>) -> Watch {
        Watch {
            file,
            console: String::new(),
            line_start: 0,
            echo,
            trouble: None,
            fatal_since: None,
            booted: None,
        }
    }

    /// Reads what is new and looks at each completed line.
    pub fn read(&mut self) -> Result<()> {
        let mut buf = Vec::new();
        self.file.read_to_end(&mut buf)?;
        self.console.push_str(&String::from_utf8_lossy(&buf));
        while let Some(end) = self.console[self.line_start..].find('\n') {
            let line = self.console[self.line_start..self.line_start + end]
                .trim_end_matches('\r')
                .to_string();
            self.line_start += end + 1;
            self.look_at(&line);
        }
        Ok(())
    }

    fn look_at(&mut self, line: &str) {
        if self.trouble.is_none() && TROUBLE.iter().any(|t| line.contains(t)) {
            self.trouble = Some(line.trim().to_string());
        }
        if self.fatal_since.is_none() && FATAL.iter().any(|t| line.contains(t)) {
            self.fatal_since = Some(Instant::now());
        }
        if let Some(prefix) = self.echo {
            if line.starts_with(prefix) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }

    /// Echoes an unterminated last line.
    pub fn flush_echo(&mut self) {
        let rest = self.console[self.line_start..].to_string();
        if !rest.trim().is_empty() {
            self.line_start = self.console.len();
            self.look_at(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_spots_trouble() {
        let mut watch = Watch::new(File::open("/dev/null").unwrap(), None);
        watch.look_at("[ 1.0] kvm: Unhandled WRMSR(0xc0010007)");
        assert!(watch.trouble.is_none() && watch.fatal_since.is_none());
        watch.look_at("[ 2.0] BUG: kernel NULL pointer dereference");
        assert!(watch.fatal_since.is_none());
        watch.look_at("[ 3.0] Kernel panic - not syncing: corrupted stack end");
        assert_eq!(
            watch.trouble.as_deref(),
            Some("[ 2.0] BUG: kernel NULL pointer dereference")
        );
        assert!(watch.fatal_since.is_some());

        let mut watch = Watch::new(File::open("/dev/null").unwrap(), None);
        watch.look_at("[ 73.2] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:");
        assert!(watch.trouble.is_some() && watch.fatal_since.is_some());
    }
}
