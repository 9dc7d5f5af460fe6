//! Lab scenario `slirp`: moatvm's virtio-net-pci on user-mode networking
//! (`--netdev user`, issue 6): the guest takes its address by DHCP,
//! reaches L1's loopback through 10.0.2.2, is reached through `hostfwd`;
//! the backend process is jailed in L1's network namespace; a seccomp
//! violation in it ends the VM. No interface is created in L1, and all the
//! traffic stays on L1's loopback.
//! Host-side equivalents without a guest: main/tests/slirp_process.rs.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Result};

use crate::checks::{sh, wait_event, BOOT_TIMEOUT, STEP_TIMEOUT};
use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use crate::procfs::{child_with, ns, status_field};
use crate::vmm::Vmm;

const MAC: &str = "52:54:00:12:34:56";
/// iperf3 runs take a few seconds each; slirp under TCG is slow.
const NET_TIMEOUT: Duration = Duration::from_secs(120);

/// The network interfaces of L1.
fn interfaces() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Boots moatvm with one virtio-net-pci NIC on `--netdev user,id=u0,USER`.
fn boot(log: &str, actions: &str, user: &str, extra: &[&str]) -> Result<(LabEnv, Running)> {
    let env = LabEnv::from_env()?;
    let guest = Guest::quiet()
        .moat("nic", "virtio_net")
        .moat("ip", "dhcp")
        .action(actions);
    let netdev = if user.is_empty() {
        "user,id=u0".to_string()
    } else {
        format!("user,id=u0,{user}")
    };
    let device = format!("virtio-net-pci,netdev=u0,mac={MAC}");
    let mut args = vec!["--netdev", &netdev, "--device", &device];
    args.extend_from_slice(extra);
    let vm = Vmm::Moatvm.boot_with(&env, &guest, log, &args)?;
    Ok((env, vm))
}

/// An iperf3 server for one client on L1's loopback; its port.
fn loopback_iperf_server(env: &LabEnv, log: &str) -> Result<(Running, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new("iperf3");
    server.args([
        "-s",
        "--forceflush",
        "-B",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    let mut server = Running::spawn("iperf3 -s", server, &env.out_file(log))?;
    server.wait_for_text("Server listening", STEP_TIMEOUT)?;
    Ok((server, port))
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn dhcp_ping_and_iperf_through_user_networking() -> Result<()> {
    let before = interfaces()?;
    let env = LabEnv::from_env()?;
    let (_server, port) = loopback_iperf_server(&env, "slirp-iperf-server")?;
    let (_env, mut vm) = boot(
        "slirp-traffic",
        &format!("ping:10.0.2.2:3,iperf:10.0.2.2:3:tx:{port},iperf:10.0.2.2:3:rx:{port},reboot"),
        "",
        &[],
    )?;
    wait_event(&mut vm, "start", BOOT_TIMEOUT)?;
    let net = wait_event(&mut vm, "net", STEP_TIMEOUT)?;
    ensure!(
        net.get("driver") == Some("virtio_net")
            && net.get("mac") == Some(MAC)
            && net.get("addr") == Some("10.0.2.15/24"),
        "DHCP should give 10.0.2.15/24: {net:?}\n{}",
        vm.report()
    );
    ensure!(
        interfaces()? == before,
        "user networking should create no interface in L1"
    );
    // libslirp answers ICMP echo to the gateway itself.
    let ping = wait_event(&mut vm, "ping", NET_TIMEOUT)?;
    ensure!(
        ping.number("received")? == 3.0,
        "ping to 10.0.2.2 lost packets: {ping:?}\n{}",
        vm.report()
    );
    for dir in ["tx", "rx"] {
        let iperf = wait_event(&mut vm, "iperf", NET_TIMEOUT)?;
        ensure!(
            iperf.get("dir") == Some(dir) && iperf.number("mbits")? > 0.0,
            "iperf3 {dir} to L1's loopback failed: {iperf:?}\n{}",
            vm.report()
        );
    }
    vm.expect_success(STEP_TIMEOUT)
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn hostfwd_reaches_a_server_in_the_guest() -> Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (_env, mut vm) = boot(
        "slirp-hostfwd",
        "iperf-server:5201,reboot",
        &format!("hostfwd=tcp:127.0.0.1:{port}-:5201"),
        &[],
    )?;
    wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    wait_event(&mut vm, "iperf-server", STEP_TIMEOUT)?;
    // The server is up in the guest; L1's client goes through hostfwd.
    sh(&format!("iperf3 -c 127.0.0.1 -p {port} -t 2 >/dev/null"))?;
    let done = wait_event(&mut vm, "iperf-server", NET_TIMEOUT)?;
    ensure!(
        done.get("status") == Some("0"),
        "the guest's iperf3 server failed: {done:?}\n{}",
        vm.report()
    );
    vm.expect_success(STEP_TIMEOUT)
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn the_backend_is_jailed_in_the_host_network_namespace() -> Result<()> {
    let (_env, mut vm) = boot("slirp-jail", "sleep:600", "", &[])?;
    wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    wait_event(&mut vm, "action", STEP_TIMEOUT)?;
    let launcher = vm.pid();
    let backend = child_with(launcher, "__backend")?;
    for (key, want) in [
        ("Seccomp", "2"),
        ("NoNewPrivs", "1"),
        ("CapEff", "0000000000000000"),
    ] {
        let got = status_field(backend, key)?;
        ensure!(got == want, "backend: {key} is {got}, expected {want}");
    }
    ensure!(
        ns(backend, "net")? == ns(launcher, "net")?,
        "the backend should be in L1's network namespace"
    );
    for kind in ["user", "mnt", "pid"] {
        ensure!(
            ns(backend, kind)? != ns(launcher, kind)?,
            "the backend shares the launcher's {kind} namespace"
        );
    }
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{backend}/root"))?.collect();
    ensure!(root.is_empty(), "the backend's root is not empty");
    // The NIC process, on the other end of the frame channel, has an empty
    // network namespace of its own.
    let nic = child_with(launcher, "__device")?;
    ensure!(ns(nic, "net")? != ns(launcher, "net")?);
    sh(&format!("kill -TERM {launcher}"))?;
    vm.expect_success(STEP_TIMEOUT)
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn a_forbidden_syscall_kills_the_backend_and_ends_the_vm() -> Result<()> {
    let (env, mut vm) = boot(
        "slirp-sigsys",
        "sleep:600",
        "",
        &["--x-violate-seccomp", "u0"],
    )?;
    let status = vm.wait_exit(BOOT_TIMEOUT)?;
    if status.success() {
        bail!(
            "moatvm should fail when the backend breaks its policy\n{}",
            vm.report()
        );
    }
    let stderr =
        std::fs::read_to_string(env.out_file("slirp-sigsys").with_extension("stderr.log"))?;
    for needle in ["backend u0 (user)", "SIGSYS", "socket"] {
        ensure!(
            stderr.contains(needle),
            "moatvm's message should name {needle:?}:\n{stderr}"
        );
    }
    Ok(())
}
