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
        "CSIDriver",
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
    // A rolling update would cut the I/O of every mounted volume of a node (see agent.yaml).
    assert_eq!(
        find(&docs, "DaemonSet", "bulwark-agent")["spec"]["updateStrategy"]["type"],
        "OnDelete"
    );
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
    assert_eq!(
        host_paths,
        [
            "/var/lib/bulwark",
            "/dev",
            "/var/lib/kubelet/plugins/driver.bulwark.io",
            "/var/lib/kubelet/plugins_registry",
            "/var/lib/kubelet",
        ]
    );
    // Pods' volumes are mounted under kubelet's directory, which must see them.
    let kubelet = mounts
        .iter()
        .find(|m| m["name"] == "kubelet-dir")
        .expect("kubelet's directory");
    assert_eq!(kubelet["mountPath"], "/var/lib/kubelet");
    assert_eq!(kubelet["mountPropagation"], "Bidirectional");
    // The sidecars are not privileged.
    for sidecar in agent["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .skip(1)
    {
        assert!(sidecar["securityContext"].get("privileged").is_none());
    }
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

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn arg<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    container["args"]
        .as_array()?
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix(&format!("{flag}=")))
}

#[test]
fn csi_sidecars_talk_to_the_sockets_bulwark_serves() {
    let docs = installed();
    let driver = find(&docs, "CSIDriver", "driver.bulwark.io");
    assert_eq!(driver["spec"]["attachRequired"], false);
    assert!(
        bulwark(&["run", "--help"]).contains("driver.bulwark.io"),
        "the default driver name is the CSIDriver's"
    );

    let controller = &find(&docs, "Deployment", "bulwark-controller")["spec"]["template"]["spec"];
    let run = container(controller, "controller");
    assert_eq!(
        env(run, "BULWARK_CSI_ENDPOINT"),
        Some("unix:///csi/csi.sock")
    );
    for sidecar in ["csi-provisioner", "csi-snapshotter", "csi-resizer"] {
        let c = container(controller, sidecar);
        assert_eq!(arg(c, "--csi-address"), Some("/csi/csi.sock"), "{sidecar}");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/csi", "{sidecar}");
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{sidecar}"
        );
    }
    assert_eq!(run["volumeMounts"][0]["name"], "socket-dir");
    let provisioner = container(controller, "csi-provisioner");
    let args: Vec<&str> = provisioner["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // The PVC's name and namespace reach CreateVolume; the scheduled node places the volume.
    assert!(args.contains(&"--extra-create-metadata"));
    assert!(args.contains(&"--feature-gates=Topology=true"));

    let agent = &find(&docs, "DaemonSet", "bulwark-agent")["spec"]["template"]["spec"];
    let plugin = container(agent, "agent");
    assert_eq!(
        env(plugin, "BULWARK_CSI_ENDPOINT"),
        Some("unix:///csi/csi.sock")
    );
    let registrar = container(agent, "node-driver-registrar");
    assert_eq!(arg(registrar, "--csi-address"), Some("/csi/csi.sock"));
    let plugin_dir = agent["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "plugin-dir")
        .expect("plugin-dir")["hostPath"]["path"]
        .as_str()
        .expect("a host path");
    assert_eq!(
        arg(registrar, "--kubelet-registration-path"),
        Some(format!("{plugin_dir}/csi.sock").as_str()),
        "kubelet finds the socket where the agent's /csi is on the host"
    );
    container(agent, "liveness-probe");
}

/// Every document of `deploy/examples/<file>`.
fn example(file: &str) -> Vec<Value> {
    documents(&format!("examples/{file}"))
}

#[test]
fn example_classes_are_read_as_the_driver_reads_them() {
    use crd_types::Validate;
    let classes = example("storageclass.yaml");
    assert!(classes.len() >= 3);
    for class in &classes {
        let name = class["metadata"]["name"].as_str().expect("name");
        let parameters = class["parameters"].as_object().expect("parameters");
        let parsed = operator::csi::parameters::parse(
            parameters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().expect("string parameters"))),
        )
        .unwrap_or_else(|e| panic!("StorageClass {name}: {e}"));
        let volume = operator::csi::controller::build_volume("pvc-1", 1 << 30, None, &parsed);
        volume
            .validate()
            .unwrap_or_else(|e| panic!("a volume of StorageClass {name} is invalid: {e}"));
        for job in &parsed.recurring_jobs {
            operator::csi::parameters::recurring_job_object(job)
                .unwrap_or_else(|e| panic!("StorageClass {name}: {e}"))
                .validate()
                .unwrap_or_else(|e| panic!("StorageClass {name}, job {}: {e}", job.name));
        }
    }
    assert!(
        classes.iter().any(
            |c| c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true"
        ),
        "one class is the default"
    );

    let snapshot_classes = example("volumesnapshotclasses.yaml");
    let mut kinds = std::collections::BTreeSet::new();
    for class in &snapshot_classes {
        let name = class["metadata"]["name"].as_str().expect("name");
        let parameters: std::collections::BTreeMap<String, String> =
            serde_json::from_value(class["parameters"].clone()).expect("string parameters");
        let request = handle_codec::parse_snapshot_class_parameters(&parameters)
            .unwrap_or_else(|e| panic!("VolumeSnapshotClass {name}: {e}"));
        kinds.insert(request.kind.handle_kind().scheme());
    }
    assert_eq!(kinds, ["bak", "bi", "snap"].into(), "one class per type");

    // The restore example names a snapshot and classes that exist.
    let flow = example("pvc-snapshot-restore.yaml");
    let snapshot = flow
        .iter()
        .find(|d| d["kind"] == "VolumeSnapshot")
        .expect("a VolumeSnapshot");
    assert!(
        snapshot_classes
            .iter()
            .any(|c| c["metadata"]["name"] == snapshot["spec"]["volumeSnapshotClassName"])
    );
    let restored = flow
        .iter()
        .find(|d| d["spec"]["dataSource"].is_object())
        .expect("a restored PVC");
    assert_eq!(
        restored["spec"]["dataSource"]["name"],
        snapshot["metadata"]["name"]
    );
    for pvc in flow.iter().filter(|d| d["kind"] == "PersistentVolumeClaim") {
        assert!(
            classes
                .iter()
                .any(|c| c["metadata"]["name"] == pvc["spec"]["storageClassName"])
        );
    }
}
