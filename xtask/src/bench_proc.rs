//! What the VMM's processes cost L1, read from `/proc`: the memory of
//! the `mem` case (PSS, guest RAM excluded) and, around each traffic step,
//! where L1's CPU time went ([`Tasks`]: every thread's run and wait time,
//! printed as `LAB-BENCH-CPU` lines to explain a figure, never a figure).

use anyhow::{bail, Context, Result};
use e2e::checks::STEP_TIMEOUT;
use e2e::guest::Guest;
use e2e::process::Running;
use e2e::vmm::Vmm;
use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

/// How long into the guest's idle `sleep` step the `mem` measurement
/// starts.
const SETTLE: Duration = Duration::from_secs(2);

/// `mem`: the VMM's own memory, MiB: the PSS of every process of the VMM
/// (the launcher and its descendants) once the guest `vm` (512 MiB, one
/// virtio-net NIC on the bridge) has booted and idles, minus the guest RAM
/// mappings' share (moatvm: the `moatvm-guest-ram` memfd; QEMU: the mapping
/// at least as large as the guest's memory). The per-process breakdown is
/// printed on the first run (`LAB-BENCH-MEM` lines).
pub fn measure_mem(vm: &mut Running, vmm: Vmm, run: usize) -> Result<f64> {
    vm.wait_for("`MOAT action name=sleep` line", STEP_TIMEOUT, |l| {
        e2e::guest::Event::parse(l)
            .is_some_and(|e| e.name == "action" && e.get("name") == Some("sleep"))
    })?;
    std::thread::sleep(SETTLE);
    let guest_kib = u64::from(Guest::new().memory_mib) * 1024;
    let mut pids = vec![vm.pid()];
    pids.extend(descendants(vm.pid())?);
    let mut rest_kib = 0;
    let mut ram_seen = false;
    let mut breakdown = Vec::new();
    for &pid in &pids {
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))
            .with_context(|| format!("reading /proc/{pid}/smaps"))?;
        let pss = pss_split(&smaps, |name, size_kib| match vmm {
            Vmm::Moatvm => name.contains("memfd:moatvm-guest-ram"),
            Vmm::Qemu => size_kib >= guest_kib,
        });
        ram_seen |= pss.ram_mappings > 0;
        rest_kib += pss.total_kib - pss.ram_kib;
        let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd: Vec<&str> = cmdline.split('\0').filter(|w| !w.is_empty()).collect();
        let cmd: String = cmd.join(" ").chars().take(60).collect();
        breakdown.push(format!(
            "LAB-BENCH-MEM {} pid={pid} pss_kib={} guest_ram_pss_kib={} guest_ram_mappings={} rest_kib={} cmd={cmd:?}",
            vmm.name(),
            pss.total_kib,
            pss.ram_kib,
            pss.ram_mappings,
            pss.total_kib - pss.ram_kib
        ));
        let top: Vec<String> = pss
            .by_name
            .iter()
            .take(8)
            .map(|(n, k)| format!("{k}:{n}"))
            .collect();
        breakdown.push(format!("LAB-BENCH-MEM-TOP pid={pid} {}", top.join(" ")));
    }
    if run == 0 {
        for line in &breakdown {
            println!("{line}");
        }
    }
    if !ram_seen {
        bail!(
            "no guest RAM mapping found in {} processes {pids:?}",
            vmm.name()
        );
    }
    Ok(rest_kib as f64 / 1024.0)
}

/// Every process below `root` (children by `PPid`, recursively).
fn descendants(root: u32) -> Result<Vec<u32>> {
    let mut parents = Vec::new();
    for pid in numeric_entries("/proc")? {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(parent) = todo.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
                todo.push(pid);
            }
        }
    }
    Ok(out)
}

/// A process's PSS (kB), and the part in guest-RAM mappings.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pss {
    total_kib: u64,
    ram_kib: u64,
    ram_mappings: usize,
    /// PSS by mapping name (`[anon]` for unnamed ones), largest first.
    by_name: Vec<(String, u64)>,
}

/// Sums `Pss:` over the mappings of a `/proc/PID/smaps`, and separately
/// over those for which `is_ram(name, size_kib)` holds.
fn pss_split(smaps: &str, is_ram: impl Fn(&str, u64) -> bool) -> Pss {
    let mut pss = Pss::default();
    // The current mapping's name and whether it is guest RAM.
    let mut name = String::new();
    let mut ram = false;
    for line in smaps.lines() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        if !first.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode [name]`.
            name = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            ram = false;
            continue;
        }
        let kib = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" => {
                ram = is_ram(&name, kib());
                pss.ram_mappings += usize::from(ram);
            }
            "Pss:" => {
                pss.total_kib += kib();
                if ram {
                    pss.ram_kib += kib();
                }
                let key = if name.is_empty() {
                    "[anon]"
                } else {
                    name.as_str()
                };
                match pss.by_name.iter_mut().find(|(n, _)| n == key) {
                    Some((_, sum)) => *sum += kib(),
                    None => pss.by_name.push((key.to_string(), kib())),
                }
            }
            _ => {}
        }
    }
    pss.by_name.sort_by_key(|e| std::cmp::Reverse(e.1));
    pss
}

/// One thread's scheduler counters (`/proc/PID/task/TID/schedstat`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    name: String,
    /// Time on a CPU, and time runnable but waiting for one (ns).
    run_ns: u64,
    wait_ns: u64,
    /// Times it was put on a CPU.
    slices: u64,
}

/// Every thread of L1 (kernel threads included: vhost workers, softirq
/// daemons) at one moment, and L1's busy and total CPU time.
pub struct Tasks {
    at: Instant,
    by_tid: HashMap<u32, Task>,
    /// (busy, all) clock ticks over every CPU, from `/proc/stat`.
    cpu_ticks: (u64, u64),
    /// KVM's counters summed over every VM, [`KVM_COUNTERS`] in order
    /// (empty without debugfs).
    kvm: Vec<u64>,
}

impl Tasks {
    pub fn now() -> Tasks {
        let mut by_tid = HashMap::new();
        for pid in numeric_entries("/proc").unwrap_or_default() {
            // A process gone meanwhile has no tasks left to read.
            for tid in numeric_entries(&format!("/proc/{pid}/task")).unwrap_or_default() {
                let dir = format!("/proc/{pid}/task/{tid}");
                let (Ok(stat), Ok(sched)) = (
                    fs::read_to_string(format!("{dir}/stat")),
                    fs::read_to_string(format!("{dir}/schedstat")),
                ) else {
                    continue; // gone meanwhile
                };
                if let Some(task) = parse_task(&stat, &sched) {
                    by_tid.insert(tid, task);
                }
            }
        }
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        Tasks {
            at: Instant::now(),
            by_tid,
            cpu_ticks: cpu_ticks(&stat),
            kvm: kvm_counters(KVM_STATS),
        }
    }

    /// What ran between `earlier` and `self`: a `LAB-BENCH-CPU` line naming
    /// `what`, with L1's busy CPUs (of how many) and the threads that ran
    /// longest, summed by name: `name:run_ms/wait_ms/slices`.
    pub fn since(&self, earlier: &Tasks, what: &str) -> String {
        let secs = self.at.duration_since(earlier.at).as_secs_f64();
        // The interval's counters, summed by thread name.
        let mut by_name: Vec<Task> = Vec::new();
        for (tid, now) in &self.by_tid {
            let before = earlier.by_tid.get(tid).filter(|b| b.name == now.name);
            let (run, wait, slices) = match before {
                Some(b) => (
                    now.run_ns.saturating_sub(b.run_ns),
                    now.wait_ns.saturating_sub(b.wait_ns),
                    now.slices.saturating_sub(b.slices),
                ),
                None => (now.run_ns, now.wait_ns, now.slices),
            };
            match by_name.iter_mut().find(|t| t.name == now.name) {
                Some(t) => {
                    t.run_ns += run;
                    t.wait_ns += wait;
                    t.slices += slices;
                }
                None => by_name.push(Task {
                    name: now.name.clone(),
                    run_ns: run,
                    wait_ns: wait,
                    slices,
                }),
            }
        }
        by_name.sort_by_key(|t| std::cmp::Reverse(t.run_ns));
        let top: Vec<String> = by_name
            .iter()
            .take(TOP)
            .filter(|t| t.run_ns > 0)
            .map(|t| {
                format!(
                    "{}:{}/{}/{}",
                    t.name.replace(' ', "_"),
                    t.run_ns / 1_000_000,
                    t.wait_ns / 1_000_000,
                    t.slices
                )
            })
            .collect();
        let busy = self.cpu_ticks.0.saturating_sub(earlier.cpu_ticks.0);
        let all = self.cpu_ticks.1.saturating_sub(earlier.cpu_ticks.1);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let mut line = format!(
            "LAB-BENCH-CPU {what} secs={secs:.1} l1_busy={:.2}/{cpus} top={}",
            busy as f64 / all.max(1) as f64 * cpus as f64,
            top.join(",")
        );
        if self.kvm.len() == KVM_COUNTERS.len() && earlier.kvm.len() == KVM_COUNTERS.len() {
            let kvm: Vec<String> = KVM_COUNTERS
                .iter()
                .zip(self.kvm.iter().zip(&earlier.kvm))
                .map(|(name, (now, before))| format!("{name}:{}", now.saturating_sub(*before)))
                .collect();
            line += &format!(" kvm={}", kvm.join(","));
        }
        line
    }
}

/// Where L1's kernel keeps KVM's counters summed over every VM (debugfs,
/// which [`mount_debugfs`] mounts in L1).
const KVM_STATS: &str = "/sys/kernel/debug/kvm";

/// The KVM counters a `LAB-BENCH-CPU` line shows: exits of every kind, the
/// port and MMIO ones (doorbells, device registers), interrupts injected,
/// HLTs, exits to open an interrupt window, vCPUs kicked out by a signal
/// or a request, exits for a host interrupt (a kick to inject one), and
/// instructions KVM emulated (an MMIO doorbell is one, decoded from guest
/// memory when the CPU gives no decode assist).
const KVM_COUNTERS: [&str; 10] = [
    "exits",
    "io_exits",
    "mmio_exits",
    "irq_injections",
    "halt_exits",
    "irq_window_exits",
    "signal_exits",
    "request_irq_exits",
    "irq_exits",
    "insn_emulation",
];

/// [`KVM_COUNTERS`] read from `dir`; empty when any is missing.
fn kvm_counters(dir: &str) -> Vec<u64> {
    KVM_COUNTERS
        .iter()
        .map(|name| {
            fs::read_to_string(format!("{dir}/{name}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
        .collect::<Option<Vec<u64>>>()
        .unwrap_or_default()
}

/// Mounts debugfs in L1 (as root there) so the CPU lines can show KVM's
/// counters; without it they show none.
pub fn mount_debugfs() {
    if std::path::Path::new(KVM_STATS).exists() {
        return;
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"])
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("LAB-BENCH no debugfs: the CPU lines leave out KVM's counters");
    }
}

/// Threads a `LAB-BENCH-CPU` line names.
const TOP: usize = 10;

/// The entries of `dir` whose names are numbers (pids, tids).
fn numeric_entries(dir: &str) -> std::io::Result<Vec<u32>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Ok(n) = entry?.file_name().to_string_lossy().parse() {
            numbers.push(n);
        }
    }
    Ok(numbers)
}

/// A thread from its `stat` (for the name: between the first `(` and the
/// last `)`) and `schedstat` (`run_ns wait_ns slices`).
fn parse_task(stat: &str, schedstat: &str) -> Option<Task> {
    let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
    let mut n = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some(Task {
        name,
        run_ns: n.next()??,
        wait_ns: n.next()??,
        slices: n.next()??,
    })
}

/// (busy, all) ticks of `/proc/stat`'s `cpu` line: all but idle and
/// iowait are busy.
fn cpu_ticks(proc_stat: &str) -> (u64, u64) {
    let Some(line) = proc_stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (all - idle, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_split_separates_the_guest_ram() {
        let smaps = "\
55d0c0000000-55d0c0001000 r-xp 00000000 08:01 42 /usr/bin/moatvm
Size:                  4 kB
Rss:                   4 kB
Pss:                   3 kB
VmFlags: rd ex
7f0000000000-7f0020000000 rw-s 00000000 00:01 7 /memfd:moatvm-guest-ram (deleted)
Size:             524288 kB
Pss:               90000 kB
7f0030000000-7f0030021000 rw-p 00000000 00:00 0
Size:                132 kB
Pss:                  20 kB
";
        let pss = pss_split(smaps, |name, _| name.contains("memfd:moatvm-guest-ram"));
        assert_eq!(
            (pss.total_kib, pss.ram_kib, pss.ram_mappings),
            (90023, 90000, 1)
        );
        assert_eq!(
            pss.by_name,
            [
                ("/memfd:moatvm-guest-ram (deleted)".to_string(), 90000),
                ("[anon]".to_string(), 20),
                ("/usr/bin/moatvm".to_string(), 3)
            ]
        );
        let by_size = pss_split(smaps, |_, size| size >= 512 * 1024);
        assert_eq!(by_size.ram_kib, 90000);
    }

    #[test]
    fn a_task_is_read_from_stat_and_schedstat() {
        let stat = "4242 (moatvm (net0) x) S 1 2 3 0 -1 4194560 1 0 0 0 5 6";
        let task = parse_task(stat, "123456789 2000000 77\n").unwrap();
        assert_eq!(
            task,
            Task {
                name: "moatvm (net0) x".into(),
                run_ns: 123_456_789,
                wait_ns: 2_000_000,
                slices: 77
            }
        );
        assert_eq!(parse_task(stat, "12 oops"), None);
    }

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 45 1 9 0 0 0\ncpu0 50 2 25 400 20 0 4 0 0 0\n";
        assert_eq!(cpu_ticks(stat), (165, 1010));
        assert_eq!(cpu_ticks("intr 1 2 3"), (0, 0));
    }

    #[test]
    fn threads_are_summed_by_name_over_the_interval() {
        let task = |name: &str, run_ms: u64| Task {
            name: name.into(),
            run_ns: run_ms * 1_000_000,
            wait_ns: 1_000_000,
            slices: 10,
        };
        let at = Instant::now();
        let earlier = Tasks {
            at,
            by_tid: HashMap::from([(1, task("vcpu0", 100)), (2, task("iperf3", 50))]),
            cpu_ticks: (100, 400),
            kvm: vec![10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let later = Tasks {
            at: at + Duration::from_secs(2),
            by_tid: HashMap::from([
                (1, task("vcpu0", 1100)),
                (2, task("iperf3", 350)),
                // Started meanwhile: all of its time counts.
                (3, task("iperf3", 200)),
            ]),
            cpu_ticks: (300, 800),
            kvm: vec![110, 20, 30, 40, 5, 6, 7, 8, 9, 10],
        };
        let line = later.since(&earlier, "user-rx moatvm run=1");
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let busy = format!("l1_busy={:.2}/{cpus}", 0.5 * cpus as f64);
        assert!(
            line.starts_with("LAB-BENCH-CPU user-rx moatvm run=1 secs=2.0 "),
            "{line}"
        );
        assert!(line.contains(&busy), "{line}");
        assert!(
            line.ends_with(
                " top=vcpu0:1000/0/0,iperf3:500/1/10 kvm=exits:100,io_exits:20,mmio_exits:30,\
                 irq_injections:40,halt_exits:5,irq_window_exits:6,signal_exits:7,\
                 request_irq_exits:8,irq_exits:9,insn_emulation:10"
            ),
            "{line}"
        );
    }

    #[test]
    fn kvm_counters_are_all_or_nothing() {
        let dir = std::env::temp_dir().join(format!("kvm-counters-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for (i, name) in KVM_COUNTERS.iter().enumerate() {
            fs::write(dir.join(name), format!("{}\n", i * 3)).unwrap();
        }
        let path = dir.to_str().unwrap();
        assert_eq!(kvm_counters(path), [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
        fs::remove_file(dir.join("halt_exits")).unwrap();
        assert_eq!(kvm_counters(path), Vec::<u64>::new());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_thread_is_read_this_one_included() {
        let tasks = Tasks::now();
        // `/proc/thread-self` links to `PID/task/TID`.
        let link = fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let me = tasks.by_tid.get(&tid).expect("this thread is among L1's");
        assert!(me.run_ns > 0 && me.slices > 0, "{me:?}");
        assert!(
            tasks.cpu_ticks.1 > tasks.cpu_ticks.0,
            "{:?}",
            tasks.cpu_ticks
        );
    }
}
