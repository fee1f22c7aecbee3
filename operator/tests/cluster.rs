//! Against a real cluster (`KUBECONFIG`, e.g. kind): `bulwark run --install-crds` installs the
//! CRDs, takes the Lease, creates the `default` BackupTarget, reports ready, and stops on SIGTERM.
//! Run with `cargo test -p operator --test cluster -- --ignored`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `--install-crds`, unless the CRDs are installed already (`BULWARK_CRDS=preinstalled`): a
/// Kubernetes 1.24 API server cannot compile the CEL transition rules (`oldSelf`) of our CRDs,
/// so there a copy without them is installed by hand and the installation is not tested.
fn install_crds() -> Vec<&'static str> {
    if std::env::var("BULWARK_CRDS").as_deref() == Ok("preinstalled") {
        eprintln!(
            "not testing --install-crds: BULWARK_CRDS=preinstalled (CRDs installed by hand, e.g. \
             without the CEL transition rules a 1.24 API server cannot compile)"
        );
        Vec::new()
    } else {
        vec!["--install-crds"]
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((status, response))
}

#[test]
#[ignore = "needs a cluster in KUBECONFIG"]
fn run_installs_crds_leads_and_becomes_ready() {
    let port = free_port();
    let namespace = format!("bulwark-test-{}", std::process::id());
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        kubectl(&["create", "namespace", &namespace]),
        "kubectl create namespace"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("run")
        .args(install_crds())
        .args([
            "--namespace",
            &namespace,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bulwark starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready = false;
    while Instant::now() < deadline {
        if let Some((200, _)) = get(port, "/readyz") {
            ready = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("`bulwark run` exited before it was ready ({status}): see its log above");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let default_target = Command::new("kubectl")
        .args([
            "get",
            "backuptargets.bulwark.io",
            "default",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.spec.backupTargetURL}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let metrics = get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exited = child.wait().expect("bulwark exits");
    kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
    assert!(ready, "/readyz never answered 200");
    assert_eq!(default_target, "file:///var/lib/bulwark/backups");
    assert!(metrics.contains("bulwark_leader 1"), "{metrics}");
    assert!(exited.success(), "clean exit on SIGTERM");
}
