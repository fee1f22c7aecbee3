//! `deploy/`: what `kubectl apply -k deploy/` installs, checked without a cluster: the RBAC is
//! the generated least-privilege table, every manifest parses, and the workloads reference
//! accounts, subcommands and settings that exist.

use std::process::Command;

use serde_json::Value;

fn deploy(file: &str) -> String {
    let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(file: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&deploy(file))
        .unwrap_or_else(|e| panic!("deploy/{file} is not valid YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every document `kubectl apply -k deploy/` applies.
fn installed() -> Vec<Value> {
    let kustomization = documents("kustomization.yaml");
    let resources = kustomization[0]["resources"]
        .as_array()
        .expect("kustomization lists resources")
        .clone();
    resources
        .iter()
        .flat_map(|r| documents(r.as_str().expect("a file name")))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"))
}

fn bulwark(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .expect("bulwark runs");
    assert!(
        output.status.success(),
        "bulwark {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn rbac_is_exactly_the_generated_table() {
    assert!(
        bulwark(&["rbac"]) == deploy("rbac.yaml"),
        "deploy/rbac.yaml is stale: cargo run -p operator -- rbac > deploy/rbac.yaml"
    );
}

#[test]
fn every_manifest_parses_and_lives_in_the_operator_namespace() {
    let docs = installed();
    assert!(docs.len() >= 15, "only {} documents", docs.len());
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("every document has a kind");
        assert!(doc["apiVersion"].is_string(), "{kind} without apiVersion");
        assert!(doc["metadata"]["name"].is_string(), "{kind} without a name");
        if !cluster_scoped.contains(&kind) {
            assert_eq!(
                doc["metadata"]["namespace"], "bulwark-system",
                "{kind} {}",
                doc["metadata"]["name"]
            );
        }
    }
    find(&docs, "Namespace", "bulwark-system");
    for crd in [
        "volumes",
        "snapshots",
        "backups",
        "backupvolumes",
        "backuptargets",
        "backingimages",
        "recurringjobs",
    ] {
        find(
            &docs,
            "CustomResourceDefinition",
            &format!("{crd}.bulwark.io"),
        );
    }
}

#[test]
fn workloads_use_existing_accounts_subcommands_and_settings() {
    let docs = installed();
    for (kind, name, subcommand) in [
        ("Deployment", "bulwark-controller", "run"),
        ("DaemonSet", "bulwark-agent", "agent"),
    ] {
        let pod = &find(&docs, kind, name)["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .expect("a service account");
        find(&docs, "ServiceAccount", account);
        let container = &pod["containers"][0];
        assert_eq!(container["args"][0], subcommand);
        let help = bulwark(&[subcommand, "--help"]);
        for env in container["env"].as_array().expect("env") {
            let var = env["name"].as_str().expect("env name");
            if var.starts_with("BULWARK_") || var == "NODE_NAME" {
                assert!(
                    help.contains(&format!("env: {var}")),
                    "{name} sets {var}, which `bulwark {subcommand}` does not read"
                );
            }
        }
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    }
}

#[test]
fn only_the_agent_is_privileged_and_for_its_fuse_mount() {
    let docs = installed();
    let controller = &find(&docs, "Deployment", "bulwark-controller")["spec"]["template"]["spec"];
    assert_eq!(controller["securityContext"]["runAsNonRoot"], true);
    let security = &controller["containers"][0]["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert!(security.get("privileged").is_none());

    let agent = &find(&docs, "DaemonSet", "bulwark-agent")["spec"]["template"]["spec"];
    assert!(agent.get("hostNetwork").is_none() && agent.get("hostPID").is_none());
    let container = &agent["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let data = mounts
        .iter()
        .find(|m| m["name"] == "data")
        .expect("the data mount");
    // Bidirectional propagation is what requires privileged: the FUSE files must reach the host.
    assert_eq!(data["mountPropagation"], "Bidirectional");
    let node = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let host_paths: Vec<&str> = agent["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(host_paths, ["/var/lib/bulwark", "/dev"]);
}

#[test]
fn the_metrics_service_selects_the_controller() {
    let docs = installed();
    let service = find(&docs, "Service", "bulwark-metrics");
    let deployment = find(&docs, "Deployment", "bulwark-controller");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(&labels[key], value, "selector {key}");
    }
}
