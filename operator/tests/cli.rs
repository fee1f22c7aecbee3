//! The real `bulwark` binary: `crd` prints the checked-in CRDs, and bad settings stop it at
//! start with a message naming the flag and the environment variable.

use std::process::{Command, Output};

fn bulwark(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env("BULWARK_LOG_FORMAT", "text");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("bulwark runs")
}

#[test]
fn crd_prints_exactly_the_checked_in_manifests() {
    let output = bulwark(&["crd"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml"))
            .expect("deploy/crds.yaml exists");
    assert!(
        String::from_utf8_lossy(&output.stdout) == checked_in,
        "deploy/crds.yaml is stale: cargo run -p operator -- crd > deploy/crds.yaml"
    );
}

#[test]
fn an_invalid_environment_variable_names_flag_and_variable() {
    let output = bulwark(&["run"], &[("BULWARK_POLL_INTERVAL", "often")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--poll-interval") && stderr.contains("BULWARK_POLL_INTERVAL"),
        "{stderr}"
    );
    assert!(stderr.contains("\"often\""), "{stderr}");
}

#[test]
fn an_invalid_flag_names_flag_and_variable() {
    let output = bulwark(&["run", "--default-backup-target", "ftp://host/x"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--default-backup-target")
            && stderr.contains("BULWARK_DEFAULT_BACKUP_TARGET"),
        "{stderr}"
    );
    assert!(
        stderr.contains("s3://"),
        "the message says what is accepted: {stderr}"
    );
}

#[test]
fn the_agent_needs_its_node_name() {
    let output = bulwark(&["agent"], &[("NODE_NAME", "")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--node-name") && stderr.contains("NODE_NAME"),
        "{stderr}"
    );
}

#[test]
fn no_cluster_is_a_clear_error() {
    let home = tempfile::tempdir().expect("temp dir");
    let missing = home.path().join("no-such-kubeconfig");
    let output = bulwark(
        &[
            "run",
            "--kubeconfig",
            missing.to_str().expect("utf-8"),
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read kubeconfig") && stderr.contains("no-such-kubeconfig"),
        "{stderr}"
    );
}
