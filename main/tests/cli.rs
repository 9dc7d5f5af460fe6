//! Runs the built `moatvm` binary with bad command lines and checks that each
//! is refused with exit status 2, exactly one line on stderr naming the
//! offending word, and nothing created.
//!
//! Every case here fails validation, so no VM is ever created; cases that
//! need a valid kernel use a fake bzImage header written to a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const OPTIONS: [&str; 11] = [
    "--kernel",
    "--initrd",
    "--cmdline",
    "--memory",
    "--cpus",
    "--serial",
    "--netdev",
    "--device",
    "--nic",
    "--net",
    "--config",
];

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "moatvm-cli-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// Writes the header of a bzImage that passes moatvm's checks (boot
    /// protocol 2.15, loaded high, 64-bit entry point) as `vmlinuz`.
    fn kernel(&self) -> String {
        let mut b = vec![0u8; 4096];
        b[0x1f1] = 4;
        b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = 0x01;
        b[0x236..0x238].copy_from_slice(&0x0003u16.to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        s(&self.write("vmlinuz", &b))
    }

    /// Names of the entries in the directory.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn moatvm<S: AsRef<str>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moatvm"))
        .args(args.iter().map(AsRef::as_ref))
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run moatvm")
}

/// Runs moatvm, expects exit status 2 and one stderr line containing every
/// word of `words`, and returns that line (without the newline).
fn refused<S: AsRef<str>>(args: &[S], words: &[&str]) -> String {
    let out = moatvm(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let argv: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert_eq!(out.status.code(), Some(2), "{argv:?}: stderr {stderr:?}");
    assert!(
        out.stdout.is_empty(),
        "{argv:?}: stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{argv:?}: stderr not one line: {stderr:?}"));
    assert!(
        !line.contains('\n'),
        "{argv:?}: stderr not one line: {stderr:?}"
    );
    assert!(line.starts_with("moatvm: "), "{argv:?}: {line}");
    for w in words {
        assert!(line.contains(w), "{argv:?}: {line:?} does not name {w:?}");
    }
    line.to_string()
}

#[test]
fn help_documents_every_option() {
    for args in [&["--help"][..], &["run", "--help"], &["help", "run"]] {
        let out = moatvm(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for opt in OPTIONS {
            assert!(
                help.contains(&format!("{opt} ")),
                "{args:?} does not mention {opt}"
            );
        }
    }
    let out = moatvm(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("moatvm "));
}

#[test]
fn usage_errors_are_one_line() {
    refused(&["run", "--kernal", "x"], &["'--kernal'"]);
    refused(&["run", "--memory"], &["--memory"]);
    refused(&["frobnicate"], &["'frobnicate'"]);
    refused::<&str>(&[], &["no command given"]);
}

#[test]
fn missing_or_bad_kernel() {
    let dir = TempDir::new("kernel");
    refused(&["run"], &["no kernel given"]);
    let missing = s(&dir.path("no-such-bzImage"));
    refused(
        &["run", "--kernel", &missing],
        &[&missing, "does not exist"],
    );
    let text = s(&dir.write("notes.txt", b"not a kernel at all"));
    refused(
        &["run", "--kernel", &text],
        &[&text, "is not a Linux kernel"],
    );
    refused(&["run", "--kernel", &s(&dir.0)], &["is a directory"]);
}

#[test]
fn missing_initrd() {
    let dir = TempDir::new("initrd");
    let kernel = dir.kernel();
    let initrd = s(&dir.path("initramfs.cpio"));
    refused(
        &["run", "--kernel", &kernel, "--initrd", &initrd],
        &[&initrd, "does not exist"],
    );
}

#[test]
fn bad_memory_cpus_serial() {
    let dir = TempDir::new("values");
    let kernel = dir.kernel();
    let run = |extra: &[&str], words: &[&str]| {
        let mut args = vec!["run", "--kernel", &kernel];
        args.extend_from_slice(extra);
        refused(&args, words)
    };
    run(&["--memory", "12XB"], &["--memory", "'12XB'", "'XB'"]);
    run(&["--memory", "0"], &["--memory", "'0'"]);
    run(&["--cpus", "0"], &["--cpus", "'0'", "1 to 32"]);
    run(&["--cpus", "33"], &["--cpus", "'33'", "1 to 32"]);
    run(&["--serial", "bogus"], &["--serial", "'bogus'"]);
    let log = s(&dir.path("missing-dir/serial.log"));
    run(
        &["--serial", &format!("file:{log}")],
        &["--serial", "does not exist"],
    );
    run(
        &["--cmdline", &"x".repeat(3000)],
        &["--cmdline", "3000 bytes"],
    );
}

#[test]
fn more_memory_than_the_host_has() {
    let Some(host_mib) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(str::to_owned))
        })
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib / 1024)
    else {
        return;
    };
    let dir = TempDir::new("hostmem");
    let kernel = dir.kernel();
    let asked = host_mib + 1024;
    let line = refused(
        &["run", "--kernel", &kernel, "--memory", &asked.to_string()],
        &[
            "--memory",
            &format!("{asked} MiB"),
            &format!("only {host_mib} MiB"),
        ],
    );
    assert!(line.contains("MemTotal"), "{line}");
}

#[test]
fn config_file_errors() {
    let dir = TempDir::new("config");
    let kernel = dir.kernel();
    let missing = s(&dir.path("missing.toml"));
    refused(
        &["run", "--config", &missing],
        &[&missing, "does not exist"],
    );
    let bad = s(&dir.write("bad.toml", b"cpus = 2\nmemory = [\n"));
    refused(&["run", "--config", &bad], &[&bad, "line"]);
    let unknown = s(&dir.write("unknown.toml", b"cpus = 2\nmemroy = \"1G\"\n"));
    refused(&["run", "--config", &unknown], &["`memroy`", "line 2"]);
    let cpus = s(&dir.write("cpus.toml", b"cpus = 99\n"));
    refused(
        &["run", "--kernel", &kernel, "--config", &cpus],
        &["cpus", "'99'"],
    );
}

#[test]
fn network_errors() {
    let dir = TempDir::new("net");
    let kernel = dir.kernel();
    let run = |extra: &[&str], words: &[&str]| {
        let mut args = vec!["run", "--kernel", &kernel];
        args.extend_from_slice(extra);
        refused(&args, words)
    };
    run(&["--netdev", "vde,id=n0"], &["--netdev", "'vde'"]);
    run(
        &["--netdev", "tap,id=n0,color=blue"],
        &["--netdev tap", "'color'"],
    );
    run(
        &["--device", "virtio-blk-pci"],
        &["--device", "'virtio-blk-pci'"],
    );
    run(
        &["--netdev", "user,id=n0", "--device", "e1000,netdev=n1"],
        &["--device e1000", "'n1'"],
    );
    run(
        &["--netdev", "user,id=n0", "--netdev", "tap,id=n0"],
        &["duplicate", "'n0'"],
    );
    run(
        &["--device", "e1000,mac=52:54:00:12:34"],
        &["MAC", "'52:54:00:12:34'"],
    );
    run(
        &["--device", "e1000,mac=01:00:5e:00:00:01"],
        &["'01:00:5e:00:00:01'", "multicast"],
    );
    run(
        &["--netdev", "tap,id=n0,script=/etc/qemu-ifup"],
        &["script='/etc/qemu-ifup'"],
    );
    run(
        &["--netdev", "socket,id=s,listen=:1234,connect=h:1"],
        &["listen=", "connect="],
    );
    run(
        &["--netdev", "user,id=u,hostfwd=tcp:2222:22"],
        &["hostfwd='tcp:2222:22'"],
    );
    run(&["--nic", "user,model=tulip"], &["--nic user", "'tulip'"]);
    run(&["--net", "nic,vlan=x"], &["--net nic", "vlan='x'"]);
}

#[test]
fn valid_nic_is_not_implemented_yet() {
    let dir = TempDir::new("nic");
    let kernel = dir.kernel();
    let line = refused(
        &[
            "run",
            "--kernel",
            &kernel,
            "--netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "--device",
            "rtl8139,netdev=n0,mac=52:54:00:12:34:56",
        ],
        &[],
    );
    assert_eq!(
        line,
        "moatvm: --device rtl8139: NIC model 'rtl8139' is not implemented yet"
    );
    refused(
        &["run", "--kernel", &kernel, "--nic", "user,model=pcnet"],
        &["--nic user: NIC model 'pcnet' is not implemented yet"],
    );
    refused(
        &[
            "run",
            "--kernel",
            &kernel,
            "--net",
            "nic,model=pcnet,vlan=1",
            "--net",
            "user,vlan=1",
        ],
        &["--net nic: NIC model 'pcnet' is not implemented yet"],
    );
}

/// A `user` netdev on virtio-net-pci passes every check of the
/// configuration: moatvm goes on to start the VM, and here fails only at
/// loading the fake kernel (or at opening /dev/kvm, where there is none),
/// with exit status 1, before anything is created.
#[test]
fn user_netdev_passes_the_config_check() {
    let dir = TempDir::new("user");
    let kernel = dir.kernel();
    for net in [
        &[
            "--netdev",
            "user,id=n0",
            "--device",
            "virtio-net-pci,netdev=n0",
        ][..],
        &["--nic", "user,hostfwd=tcp:127.0.0.1:2222-:22"],
        &["--nic", "user,model=virtio-net-pci,restrict=on,ipv6=off"],
    ] {
        let mut args = vec!["run", "--kernel", &kernel, "--serial", "none"];
        args.extend_from_slice(net);
        let out = moatvm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{net:?}: {stderr}");
        assert!(
            stderr.starts_with("moatvm: cannot load kernel")
                || stderr.starts_with("moatvm: cannot open /dev/kvm"),
            "{net:?}: {stderr}"
        );
        assert!(!stderr.contains("not implemented"), "{net:?}: {stderr}");
    }
    assert_eq!(dir.entries(), ["vmlinuz"]);
    // Still refused: models not implemented yet, and tftp=.
    refused(
        &["run", "--kernel", &kernel, "--nic", "user,model=ne2k_pci"],
        &["--nic user: NIC model 'ne2k_pci' is not implemented yet"],
    );
    refused(
        &[
            "run",
            "--kernel",
            &kernel,
            "--netdev",
            "user,id=n0,tftp=/srv/tftp",
            "--device",
            "virtio-net-pci,netdev=n0",
        ],
        &["--netdev user: tftp= (a TFTP server) is not implemented yet"],
    );
}

#[test]
fn config_file_with_nic_and_overrides() {
    let dir = TempDir::new("cfgnic");
    dir.kernel();
    let cfg = dir.write(
        "vm.toml",
        br#"
kernel = "vmlinuz"
memory = "not a size"
cpus = 2
serial = "file:serial.log"
netdev = ["user,id=n0,hostfwd=tcp::2222-:22"]
device = ["rtl8139,netdev=n0,mac=52:54:00:12:34:56"]
"#,
    );
    // --memory overrides the file's bad value, so the NIC is what is refused.
    let line = refused(&["run", "--config", &s(&cfg), "--memory", "256M"], &[]);
    assert_eq!(
        line,
        format!(
            "moatvm: {}: device[0] rtl8139: NIC model 'rtl8139' is not implemented yet",
            cfg.display()
        )
    );
    // Without the flag, the file's value is checked.
    refused(&["run", "--config", &s(&cfg)], &["memory", "'not a size'"]);
    // A --device flag replaces the file's device list.
    refused(
        &[
            "run",
            "--config",
            &s(&cfg),
            "--memory",
            "256",
            "--device",
            "rtl8139,netdev=n0",
        ],
        &["--device rtl8139: NIC model 'rtl8139' is not implemented yet"],
    );
    assert_eq!(
        dir.entries(),
        ["vm.toml", "vmlinuz"],
        "something was created"
    );
}

/// Multiqueue's options: queues=N on the tap needs mq=on on the device,
/// at most 16 pairs, and no single vhostfd= for several pairs; each
/// refusal is one line naming what to change, before anything is created.
#[test]
fn multiqueue_options_are_checked() {
    let dir = TempDir::new("mq");
    let kernel = dir.kernel();
    let run = |netdev: &str, device: &str| {
        vec![
            "run".to_string(),
            "--kernel".into(),
            kernel.clone(),
            "--serial".into(),
            "none".into(),
            "--netdev".into(),
            netdev.into(),
            "--device".into(),
            device.into(),
        ]
    };
    refused(
        &run("tap,id=n0,queues=2", "virtio-net-pci,netdev=n0"),
        &["--device virtio-net-pci", "queues=2", "mq=on"],
    );
    refused(
        &run("tap,id=n0,queues=2", "e1000,netdev=n0"),
        &["--device e1000", "queues=2", "mq=on"],
    );
    refused(
        &run("tap,id=n0,queues=32", "virtio-net-pci,netdev=n0,mq=on"),
        &["queues=32", "at most 16 queue pairs"],
    );
    refused(
        &run(
            "tap,id=n0,queues=2,vhost=on,vhostfd=7",
            "virtio-net-pci,netdev=n0,mq=on",
        ),
        &["vhostfd=", "queues=2", "vhostfds= is not implemented"],
    );
    refused(
        &run("tap,id=n0,fd=7,queues=2", "virtio-net-pci,netdev=n0,mq=on"),
        &["fd=", "queues="],
    );
    refused(
        &run("tap,id=n0,queues=0", "virtio-net-pci,netdev=n0,mq=on"),
        &["queues"],
    );
    refused(
        &run("tap,id=n0,queues=2", "e1000,netdev=n0,mq=on"),
        &["'mq'"],
    );
    assert_eq!(dir.entries(), ["vmlinuz"]);
}

#[test]
fn nothing_is_created_on_error() {
    let dir = TempDir::new("nothing");
    let kernel = dir.kernel();
    let log = dir.path("serial.log");
    let serial = format!("file:{}", log.display());
    refused(
        &[
            "run",
            "--kernel",
            &kernel,
            "--serial",
            &serial,
            "--netdev",
            "tap,id=n0,bogus=1",
        ],
        &["'bogus'"],
    );
    refused(
        &[
            "run",
            "--kernel",
            &kernel,
            "--serial",
            &serial,
            "--nic",
            "tap,ifname=tap0,queues=2",
        ],
        &["queues=2", "mq=on"],
    );
    refused(
        &[
            "run", "--kernel", &kernel, "--serial", &serial, "--cpus", "33",
        ],
        &["--cpus"],
    );
    assert!(!log.exists());
    assert_eq!(dir.entries(), ["vmlinuz"]);
}

#[test]
fn control_characters_stay_on_one_line() {
    let dir = TempDir::new("ctl");
    let kernel = dir.kernel();
    refused(
        &["run", "--kernel", &kernel, "--memory", "1\nG"],
        &["--memory", "1\\nG"],
    );
    refused(
        &["run", "--kernel", &kernel, "--netdev", "tap,id=a\nb"],
        &["--netdev"],
    );
    refused(
        &["run", "--kernel", &kernel, "--serial", "x\ny"],
        &["--serial", "x\\ny"],
    );
    let weird = s(&dir.path("new\nline"));
    refused(&["run", "--kernel", &weird], &["new\\nline"]);
}
