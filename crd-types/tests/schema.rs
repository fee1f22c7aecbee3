//! The generated CRDs: names, scope, status subresource, printer columns, validation rules,
//! and that `deploy/crds.yaml` is exactly what `bulwark crd` prints.

use crd_types::crds;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn crd(kind: &str) -> CustomResourceDefinition {
    crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

/// Every `x-kubernetes-validations` rule in a schema, with its message.
fn rules_of(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    out.push((
                        rule["rule"].as_str().unwrap_or_default().to_owned(),
                        rule["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            map.values().for_each(|v| rules_of(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| rules_of(v, out)),
        _ => {}
    }
}

fn schema_json(crd: &CustomResourceDefinition) -> serde_json::Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("every CRD has an openAPIV3Schema")).expect("schema is JSON")
}

#[test]
fn every_kind_is_namespaced_v1beta1_with_status_short_name_and_category() {
    let expected = [
        ("Volume", "volumes", "bwv"),
        ("Snapshot", "snapshots", "bwsnap"),
        ("Backup", "backups", "bwb"),
        ("BackupVolume", "backupvolumes", "bwbv"),
        ("BackupTarget", "backuptargets", "bwbt"),
        ("BackingImage", "backingimages", "bwbi"),
        ("RecurringJob", "recurringjobs", "bwrj"),
    ];
    assert_eq!(crds::all().len(), expected.len());
    for (kind, plural, short) in expected {
        let crd = crd(kind);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.bulwark.io").as_str())
        );
        assert_eq!(crd.spec.group, "bulwark.io");
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..]),
            "{kind}"
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["bulwark".to_owned()][..])
        );
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1beta1");
        assert!(version.served && version.storage);
        let status = version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref());
        assert!(status.is_some(), "{kind} has a status subresource");
    }
}

/// The field names of a printer column's JSONPath, each with whether a `[...]` filter follows
/// it (dots inside the brackets belong to the filter).
fn path_parts(path: &str) -> Vec<(&str, bool)> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in path.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                if i > start {
                    parts.push(&path[start..i]);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < path.len() {
        parts.push(&path[start..]);
    }
    parts
        .into_iter()
        .map(|p| match p.split_once('[') {
            Some((name, _)) => (name, true),
            None => (p, false),
        })
        .collect()
}

#[test]
fn column_paths_split_outside_their_filters() {
    assert_eq!(
        path_parts(".status.conditions[?(@.type==\"Valid\")].status"),
        [("status", false), ("conditions", true), ("status", false)]
    );
    assert_eq!(path_parts(".spec.size"), [("spec", false), ("size", false)]);
}

#[test]
fn printer_columns_show_what_users_look_for() {
    let expected: &[(&str, &[(&str, &str)])] = &[
        (
            "Volume",
            &[
                ("Size", ".spec.size"),
                ("State", ".status.state"),
                ("Node", ".status.ownerID"),
                ("Last Backup At", ".status.lastBackupAt"),
            ],
        ),
        (
            "Snapshot",
            &[
                ("Volume", ".spec.volume"),
                ("Ready", ".status.readyToUse"),
                ("Size", ".status.size"),
            ],
        ),
        (
            "Backup",
            &[
                ("Volume", ".spec.volume"),
                ("State", ".status.state"),
                ("Progress", ".status.progress"),
                ("Size", ".status.size"),
            ],
        ),
        (
            "BackupVolume",
            &[
                ("Volume", ".spec.volumeName"),
                ("Last Backup", ".status.lastBackupName"),
            ],
        ),
        (
            "BackupTarget",
            &[
                ("URL", ".spec.backupTargetURL"),
                ("Available", ".status.available"),
                ("Last Synced", ".status.lastSyncedAt"),
            ],
        ),
        (
            "BackingImage",
            &[("Source", ".spec.sourceType"), ("State", ".status.state")],
        ),
        (
            "RecurringJob",
            &[
                ("Task", ".spec.task"),
                ("Cron", ".spec.cron"),
                ("Retain", ".spec.retain"),
                ("Last Result", ".status.lastResult"),
                ("Next Run", ".status.nextRunAt"),
                // A job the scheduler cannot schedule (invalid cron or time zone) has no next
                // run: this column says so (`False`, the scheduler's `Valid` condition).
                ("Valid", ".status.conditions[?(@.type==\"Valid\")].status"),
            ],
        ),
    ];
    for (kind, columns) in expected {
        let crd = crd(kind);
        let printed = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        for (name, path) in *columns {
            let column = printed.iter().find(|c| c.name == *name);
            let column = column.unwrap_or_else(|| panic!("{kind} lacks printer column {name}"));
            assert_eq!(column.json_path, *path, "{kind}/{name}");
        }
        // Every column points at a field that exists in the schema.
        let schema = schema_json(&crd);
        for column in &printed {
            let mut node = &schema;
            for (part, filtered) in path_parts(&column.json_path) {
                if part == "metadata" {
                    break;
                }
                node = &node["properties"][part];
                if filtered {
                    // `list[?(@.type=="X")]`: the fields of the list's items follow.
                    assert_eq!(node["type"], "array", "{kind} column {}", column.name);
                    node = &node["items"];
                }
                assert!(
                    !node.is_null(),
                    "{kind} column {} points at a missing field",
                    column.name
                );
            }
        }
    }
}

#[test]
fn every_rule_has_a_message_that_names_a_field() {
    for crd in crds::all() {
        let mut rules = Vec::new();
        rules_of(&schema_json(&crd), &mut rules);
        assert!(!rules.is_empty(), "{} has CEL rules", crd.spec.names.kind);
        for (rule, message) in rules {
            assert!(
                message.starts_with("spec.")
                    || message.starts_with("metadata.")
                    || message.starts_with("the spec"),
                "{}: rule {rule:?} has message {message:?} that names no field",
                crd.spec.names.kind
            );
        }
    }
}

#[test]
fn strings_inspected_by_rules_are_bounded() {
    // The API server refuses rules whose estimated cost is unbounded; every string a regex reads
    // carries a maxLength (or is the object name, which the server bounds itself).
    fn check(value: &serde_json::Value, path: &str) {
        let Some(map) = value.as_object() else { return };
        if let Some(serde_json::Value::Array(rules)) = map.get("x-kubernetes-validations") {
            let reads_with_regex = rules.iter().any(|r| {
                r["rule"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("self.matches"))
            });
            if reads_with_regex && map.get("type").and_then(|t| t.as_str()) == Some("string") {
                assert!(
                    map.contains_key("maxLength"),
                    "{path} is matched by a regex but has no maxLength"
                );
            }
        }
        if let Some(serde_json::Value::Object(props)) = map.get("properties") {
            for (name, child) in props {
                check(child, &format!("{path}.{name}"));
            }
        }
    }
    for crd in crds::all() {
        let schema = schema_json(&crd);
        check(&schema, &crd.spec.names.kind);
    }
}

#[test]
fn enums_list_their_values() {
    let volume = schema_json(&crd("Volume"));
    let compression =
        &volume["properties"]["spec"]["properties"]["backupCompressionMethod"]["enum"];
    for value in ["none", "lz4", "gzip"] {
        assert!(
            compression
                .as_array()
                .is_some_and(|a| a.contains(&value.into())),
            "{value}"
        );
    }
    let job = schema_json(&crd("RecurringJob"));
    let tasks = job["properties"]["spec"]["properties"]["task"]["enum"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(tasks.len(), 6);
    let image = schema_json(&crd("BackingImage"));
    let sources = image["properties"]["spec"]["properties"]["sourceType"]["enum"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expected: Vec<serde_json::Value> = [
        "download",
        "export-from-volume",
        "upload",
        "restore",
        "clone",
    ]
    .iter()
    .map(|s| (*s).into())
    .collect();
    assert_eq!(sources, expected);
}

#[test]
fn checked_in_crds_equal_the_generated_ones() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
    let generated = crds::to_yaml().expect("CRDs serialize");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "deploy/crds.yaml is stale: regenerate it with `cargo run -p operator -- crd > deploy/crds.yaml`"
    );
}

#[test]
fn crd_yaml_reads_back_to_the_same_crds() {
    let yaml = crds::to_yaml().expect("CRDs serialize");
    let parsed: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&yaml).expect("YAML parses");
    let parsed: Vec<serde_json::Value> = parsed
        .iter()
        .map(|c| serde_json::to_value(c).expect("json"))
        .collect();
    let original: Vec<serde_json::Value> = crds::all()
        .iter()
        .map(|c| serde_json::to_value(c).expect("json"))
        .collect();
    assert_eq!(parsed, original);
}
