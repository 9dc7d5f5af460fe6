//! Lab scenario `slirp_http`: user-mode networking seen from an HTTP
//! client in the guest (issue 6): a page from an HTTP server on L1's
//! loopback through the gateway 10.0.2.2, with virtio-net and with e1000
//! (`--nic user,model=...`), and `restrict=on` stopping it. Apart from
//! `slirp` so that each L1 boot stays short.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::checks::{wait_event, BOOT_TIMEOUT, STEP_TIMEOUT};
use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use crate::vmm::Vmm;

const MAC: &str = "52:54:00:12:34:56";
const NET_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP server (busybox httpd) on L1's loopback serving `/moat.txt`
/// with `text`; its port. Killed when dropped.
fn loopback_http_server(env: &LabEnv, log: &str, text: &str) -> Result<(Running, u16)> {
    let dir = env.out_file(log).with_extension("www");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("moat.txt"), format!("{text}\n"))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut httpd = Command::new("busybox");
    httpd
        .args(["httpd", "-f", "-vv", "-p"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-h")
        .arg(&dir);
    let server = Running::spawn("httpd", httpd, &env.out_file(log))?;
    // Listening once a connection is accepted (httpd prints nothing before).
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            std::time::Instant::now() < deadline,
            "busybox httpd did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, port))
}

/// The guest fetches a page from L1's loopback through 10.0.2.2 with the
/// NIC `model` (QEMU's `--nic user,model=` shorthand); with `restrict=on`
/// the same fetch fails.
fn fetch(log: &str, model: &str, driver: &str, restrict: bool) -> Result<()> {
    let env = LabEnv::from_env()?;
    let token = format!("moat-{log}");
    let (_httpd, port) = loopback_http_server(&env, &format!("{log}-httpd"), &token)?;
    let guest = Guest::quiet()
        .moat("nic", driver)
        .moat("ip", "dhcp")
        .action(&format!("ping:10.0.2.2:2,fetch:10.0.2.2:{port},reboot"));
    let mut nic = format!("user,model={model},mac={MAC}");
    if restrict {
        nic.push_str(",restrict=on");
    }
    let mut vm = Vmm::Moatvm.boot_with(&env, &guest, log, &["--nic", &nic])?;
    let net = wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    ensure!(
        net.get("driver") == Some(driver) && net.get("addr") == Some("10.0.2.15/24"),
        "{driver} should get 10.0.2.15/24 by DHCP: {net:?}\n{}",
        vm.report()
    );
    let ping = wait_event(&mut vm, "ping", NET_TIMEOUT)?;
    ensure!(
        ping.number("received")? == 2.0,
        "ping to 10.0.2.2 lost packets: {ping:?}\n{}",
        vm.report()
    );
    let fetch = wait_event(&mut vm, "fetch", NET_TIMEOUT)?;
    if restrict {
        ensure!(
            fetch.get("ok") == Some("0"),
            "restrict=on should stop the fetch: {fetch:?}\n{}",
            vm.report()
        );
    } else {
        ensure!(
            fetch.get("ok") == Some("1")
                && fetch.get("text").is_some_and(|t| t.starts_with(&token)),
            "the page from L1's loopback should arrive: {fetch:?}\n{}",
            vm.report()
        );
    }
    vm.expect_success(STEP_TIMEOUT)
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn a_page_from_l1_loopback_through_the_gateway() -> Result<()> {
    fetch("slirp-fetch", "virtio-net-pci", "virtio_net", false)
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn restrict_on_stops_the_fetch() -> Result<()> {
    fetch("slirp-restrict", "virtio-net-pci", "virtio_net", true)
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn e1000_on_user_networking() -> Result<()> {
    fetch("slirp-e1000", "e1000", "e1000", false)
}
