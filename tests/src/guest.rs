//! The lab's L2 guest: its kernel command line (`moat.*` words read by
//! `xtask/lab/guest-init.sh`) and the `MOAT <event> key=value ...` lines its
//! init prints on the serial console.

/// What every test guest's command line starts with: serial console, reset
/// through the i8042 controller on reboot, reboot one second after a panic.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// A guest to boot: vCPUs, memory and the init's configuration.
#[derive(Debug, Clone)]
pub struct Guest {
    pub cpus: u32,
    pub memory_mib: u32,
    /// Words appended to [`BASE_CMDLINE`], in order.
    pub words: Vec<String>,
}

impl Default for Guest {
    fn default() -> Self {
        Guest {
            cpus: 1,
            memory_mib: 512,
            words: Vec::new(),
        }
    }
}

impl Guest {
    /// One vCPU, 512 MiB, no `moat.*` words (the init then reboots at once).
    pub fn new() -> Self {
        Self::default()
    }

    /// A guest for the tests: [`Guest::new`] with `quiet` unless
    /// [`crate::env::VERBOSE`] is set. Kernel warnings, panics and the
    /// final "reboot: ..." line are still printed.
    pub fn quiet() -> Self {
        let guest = Self::new();
        if std::env::var_os(crate::env::VERBOSE).is_some() {
            guest
        } else {
            guest.word("quiet")
        }
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Adds a raw command line word, e.g. `quiet`.
    pub fn word(mut self, word: &str) -> Self {
        self.words.push(word.to_string());
        self
    }

    /// Adds `moat.KEY=VALUE`.
    pub fn moat(self, key: &str, value: &str) -> Self {
        self.word(&format!("moat.{key}={value}"))
    }

    /// Sets the init's steps (`moat.action=`), e.g. `"reboot"`.
    pub fn action(self, steps: &str) -> Self {
        self.moat("action", steps)
    }

    /// The full kernel command line.
    pub fn cmdline(&self) -> String {
        let mut line = BASE_CMDLINE.to_string();
        for word in &self.words {
            line.push(' ');
            line.push_str(word);
        }
        line
    }
}

/// One `MOAT <name> key=value ...` line from the guest's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// Finds the event in a serial line (the marker may follow other output
    /// on the same line, e.g. a kernel message that was cut short).
    pub fn parse(line: &str) -> Option<Event> {
        let start = line.find("MOAT ")?;
        let mut words = line[start + 5..].split_whitespace();
        let name = words.next()?.to_string();
        let fields = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (w.to_string(), String::new()),
            })
            .collect();
        Some(Event { name, fields })
    }

    /// The value of a field, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A field parsed as a number.
    pub fn number(&self, key: &str) -> anyhow::Result<f64> {
        let value = self
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("event {:?} has no field {key}", self.name))?;
        value
            .parse()
            .map_err(|_| anyhow::anyhow!("event {:?}: {key}={value:?} is not a number", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_appends_words_in_order() {
        let guest = Guest::new()
            .moat("nic", "e1000")
            .action("reboot")
            .word("quiet");
        assert_eq!(
            guest.cmdline(),
            "console=ttyS0 reboot=k panic=1 moat.nic=e1000 moat.action=reboot quiet"
        );
    }

    #[test]
    fn parses_event_after_noise() {
        let event = Event::parse("[    1.2] foo MOAT cpus online=2 list=0-1\r").unwrap();
        assert_eq!(event.name, "cpus");
        assert_eq!(event.get("online"), Some("2"));
        assert_eq!(event.get("list"), Some("0-1"));
        assert_eq!(event.number("online").unwrap(), 2.0);
        assert!(event.number("list").is_err());
        assert!(Event::parse("no marker here").is_none());
    }
}
