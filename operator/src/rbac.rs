//! The least privileges `bulwark run` and `bulwark agent` need, as one table per component:
//! `bulwark rbac` prints them as ServiceAccounts, Roles and bindings (`deploy/rbac.yaml`,
//! checked by a test). A new API call in the code means a new row here, reviewed as such.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;

/// Namespace the manifests install into (`deploy/namespace.yaml`).
pub const NAMESPACE: &str = "bulwark-system";
pub const CONTROLLER: &str = "bulwark-controller";
pub const AGENT: &str = "bulwark-agent";
/// The ClusterRole (and binding to the controller's account) of the CSI sidecars.
pub const CSI_SIDECARS: &str = "bulwark-csi-sidecars";

/// One rule: API group, resources, verbs (and resource names when narrowed to them).
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub names: &'static [&'static str],
}

const fn rule(
    group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
) -> Rule {
    Rule {
        group,
        resources,
        verbs,
        names: &[],
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const EVENTS: Rule = rule("events.k8s.io", &["events"], &["create", "patch"]);

/// The controller, in its namespace.
pub const CONTROLLER_RULES: &[Rule] = &[
    // Caches of every kind; placement patches finalizers and backup defaults; the CSI
    // controller service creates and deletes the volumes of PVCs.
    rule(
        "bulwark.io",
        &["volumes"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // The CSI controller service creates the jobs of a StorageClass's legacy `recurringJobs`.
    rule(
        "bulwark.io",
        &["recurringjobs"],
        &["get", "list", "watch", "create"],
    ),
    // Snapshots: recurring jobs create them and delete them by retention, cleanup and skips;
    // VolumeSnapshotContents create them (dynamic `snap`) and delete them (`deletionPolicy:
    // Delete`).
    rule(
        "bulwark.io",
        &["snapshots"],
        &["get", "list", "watch", "create", "delete"],
    ),
    // BackingImages: the controller holds their data finalizer; VolumeSnapshotContents and
    // volumes with a `bi://` dataSource create them on demand; `deletionPolicy: Delete` deletes.
    rule(
        "bulwark.io",
        &["backingimages"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // The store mirror creates and deletes BackupVolumes and Backups; deletion removes finalizers.
    rule(
        "bulwark.io",
        &["backups", "backupvolumes"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // The `default` target is created from configuration.
    rule(
        "bulwark.io",
        &["backuptargets"],
        &["get", "list", "watch", "create", "patch"],
    ),
    rule(
        "bulwark.io",
        &[
            "volumes/status",
            "backups/status",
            "backupvolumes/status",
            "backuptargets/status",
            "backingimages/status",
        ],
        &["patch"],
    ),
    // The recurring-job scheduler writes its jobs' status.
    rule("bulwark.io", &["recurringjobs/status"], &["patch"]),
    // Credential Secrets of backup targets (watched so a fixed Secret is picked up at once).
    rule("", &["secrets"], READ),
    // Leader election, and the agents' Leases that say which nodes can take volumes.
    rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "list", "watch", "create", "update", "patch"],
    ),
    EVENTS,
];

/// The controller, cluster-wide: it checks that our CRDs are installed and established, and
/// serves the (cluster-scoped) VolumeSnapshotContents whose driver is ours.
pub const CONTROLLER_CLUSTER_RULES: &[Rule] = &[
    // Finalizer (JSON patch) and status (server-side apply); never update, create or delete.
    rule(
        "snapshot.storage.k8s.io",
        &["volumesnapshotcontents"],
        &["get", "list", "watch", "patch"],
    ),
    rule(
        "snapshot.storage.k8s.io",
        &["volumesnapshotcontents/status"],
        &["patch"],
    ),
    // A dynamic content's class, read when the content is reconciled (never watched).
    rule(
        "snapshot.storage.k8s.io",
        &["volumesnapshotclasses"],
        &["get"],
    ),
    // PVCs that ask for it (`recurring-job.bulwark.io/source`) give their volume their job
    // labels; their PV says which volume that is.
    rule("", &["persistentvolumeclaims"], READ),
    rule("", &["persistentvolumes"], &["get"]),
    // Events about cluster-scoped objects (VolumeSnapshotContents) go to namespace `default`,
    // as the CSI snapshotter sidecar's do.
    EVENTS,
    Rule {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["get"],
        names: &[
            "volumes.bulwark.io",
            "snapshots.bulwark.io",
            "backups.bulwark.io",
            "backupvolumes.bulwark.io",
            "backuptargets.bulwark.io",
            "backingimages.bulwark.io",
            "recurringjobs.bulwark.io",
        ],
    },
];

/// The CSI sidecars in the controller's pod (same account): what the upstream RBAC of
/// external-provisioner, external-snapshotter's csi-snapshotter and external-resizer grants
/// them, cluster-wide. (Their leader-election Leases fall under the controller's Role.)
pub const CSI_SIDECAR_RULES: &[Rule] = &[
    // csi-provisioner: PVs for PVCs; csi-resizer: PV growth.
    rule(
        "",
        &["persistentvolumes"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    rule(
        "",
        &["persistentvolumeclaims"],
        &["get", "list", "watch", "update", "patch"],
    ),
    rule("", &["persistentvolumeclaims/status"], &["patch", "update"]),
    rule("storage.k8s.io", &["storageclasses", "csinodes"], READ),
    rule("", &["nodes"], READ),
    // csi-resizer: whether a volume is in use by a pod.
    rule("", &["pods"], &["list", "watch"]),
    rule(
        "",
        &["events"],
        &["get", "list", "watch", "create", "update", "patch"],
    ),
    // csi-provisioner reads a PVC's VolumeSnapshot source; csi-snapshotter serves contents.
    rule(
        "snapshot.storage.k8s.io",
        &["volumesnapshots", "volumesnapshotclasses"],
        READ,
    ),
    rule(
        "snapshot.storage.k8s.io",
        &["volumesnapshotcontents"],
        &["get", "list", "watch", "update", "patch"],
    ),
    rule(
        "snapshot.storage.k8s.io",
        &["volumesnapshotcontents/status"],
        &["update", "patch"],
    ),
    rule(
        "storage.k8s.io",
        &["volumeattachments", "volumeattributesclasses"],
        READ,
    ),
];

/// `bulwark run --install-crds` only (the shipped Deployment does not use it: `kubectl apply -k
/// deploy/` installs the CRDs): server-side apply of our CRDs. Shipped as the ClusterRole
/// `bulwark-crd-installer`, bound to nobody; bind it to the controller's account to use the flag.
pub const CRD_INSTALLER_RULES: &[Rule] = &[
    Rule {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        // `create` cannot be narrowed to names: applying a missing CRD creates it.
        verbs: &["create"],
        names: &[],
    },
    Rule {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["get", "patch"],
        names: CRD_NAMES,
    },
];

const CRD_NAMES: &[&str] = &[
    "volumes.bulwark.io",
    "snapshots.bulwark.io",
    "backups.bulwark.io",
    "backupvolumes.bulwark.io",
    "backuptargets.bulwark.io",
    "backingimages.bulwark.io",
    "recurringjobs.bulwark.io",
];

/// The agent on every node, in the operator's namespace.
pub const AGENT_RULES: &[Rule] = &[
    // Volume data lifecycle: the finalizer is removed once the data is gone.
    rule(
        "bulwark.io",
        &["volumes"],
        &["get", "list", "watch", "patch"],
    ),
    // Snapshots the engine has but no object describes get objects; backups may create theirs.
    rule(
        "bulwark.io",
        &["snapshots"],
        &["get", "list", "watch", "create", "patch"],
    ),
    rule(
        "bulwark.io",
        &["backups"],
        &["get", "list", "watch", "patch"],
    ),
    rule("bulwark.io", &["backuptargets", "backingimages"], READ),
    rule(
        "bulwark.io",
        &[
            "volumes/status",
            "snapshots/status",
            "backups/status",
            "backingimages/status",
        ],
        &["patch"],
    ),
    rule("", &["secrets"], &["get"]),
    // The node's presence Lease (server-side apply creates it the first time).
    rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update", "patch"],
    ),
    EVENTS,
];

fn policy(rules: &[Rule]) -> Vec<PolicyRule> {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    rules
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.group.to_owned()]),
            resources: Some(strings(r.resources)),
            verbs: strings(r.verbs),
            resource_names: (!r.names.is_empty()).then(|| strings(r.names)),
            non_resource_urls: None,
        })
        .collect()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some([("app.kubernetes.io/part-of".to_owned(), "bulwark".to_owned())].into()),
        ..ObjectMeta::default()
    }
}

fn subject(account: &str) -> Option<Vec<Subject>> {
    Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: account.into(),
        namespace: Some(NAMESPACE.into()),
        api_group: None,
    }])
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

/// Append one manifest with its type header (k8s-openapi's types serialize without it).
fn push<T: serde::Serialize + k8s_openapi::Resource>(
    out: &mut String,
    object: &T,
) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(object)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), T::API_VERSION.into());
        map.insert("kind".into(), T::KIND.into());
    }
    out.push_str("---\n");
    out.push_str(&serde_saphyr::to_string(&value)?);
    Ok(())
}

/// `deploy/rbac.yaml`.
pub fn to_yaml() -> anyhow::Result<String> {
    let ns = Some(NAMESPACE);
    let mut out = String::from(
        "# Generated by `bulwark rbac` from operator/src/rbac.rs; do not edit (a test checks it).\n",
    );
    for account in [CONTROLLER, AGENT] {
        push(
            &mut out,
            &ServiceAccount {
                metadata: meta(account, ns),
                ..ServiceAccount::default()
            },
        )?;
    }
    push(
        &mut out,
        &Role {
            metadata: meta(CONTROLLER, ns),
            rules: Some(policy(CONTROLLER_RULES)),
        },
    )?;
    push(
        &mut out,
        &RoleBinding {
            metadata: meta(CONTROLLER, ns),
            role_ref: role_ref("Role", CONTROLLER),
            subjects: subject(CONTROLLER),
        },
    )?;
    push(
        &mut out,
        &ClusterRole {
            metadata: meta(CONTROLLER, None),
            rules: Some(policy(CONTROLLER_CLUSTER_RULES)),
            aggregation_rule: None,
        },
    )?;
    push(
        &mut out,
        &ClusterRoleBinding {
            metadata: meta(CONTROLLER, None),
            role_ref: role_ref("ClusterRole", CONTROLLER),
            subjects: subject(CONTROLLER),
        },
    )?;
    push(
        &mut out,
        &ClusterRole {
            metadata: meta(CSI_SIDECARS, None),
            rules: Some(policy(CSI_SIDECAR_RULES)),
            aggregation_rule: None,
        },
    )?;
    push(
        &mut out,
        &ClusterRoleBinding {
            metadata: meta(CSI_SIDECARS, None),
            role_ref: role_ref("ClusterRole", CSI_SIDECARS),
            subjects: subject(CONTROLLER),
        },
    )?;
    push(
        &mut out,
        &ClusterRole {
            metadata: meta("bulwark-crd-installer", None),
            rules: Some(policy(CRD_INSTALLER_RULES)),
            aggregation_rule: None,
        },
    )?;
    push(
        &mut out,
        &Role {
            metadata: meta(AGENT, ns),
            rules: Some(policy(AGENT_RULES)),
        },
    )?;
    push(
        &mut out,
        &RoleBinding {
            metadata: meta(AGENT, ns),
            role_ref: role_ref("Role", AGENT),
            subjects: subject(AGENT),
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_and_no_secret_writes() {
        for rule in CONTROLLER_RULES
            .iter()
            .chain(AGENT_RULES)
            .chain(CONTROLLER_CLUSTER_RULES)
        {
            assert!(
                !rule.verbs.contains(&"*") && !rule.resources.contains(&"*") && rule.group != "*"
            );
            if rule.resources.contains(&"secrets") {
                assert!(
                    rule.verbs
                        .iter()
                        .all(|v| ["get", "list", "watch"].contains(v))
                );
            }
        }
    }

    #[test]
    fn the_agent_cannot_create_or_delete_volumes_or_targets() {
        for rule in AGENT_RULES {
            for resource in ["volumes", "backuptargets", "backupvolumes"] {
                if rule.resources.contains(&resource) {
                    assert!(
                        !rule.verbs.contains(&"create") && !rule.verbs.contains(&"delete"),
                        "{resource}"
                    );
                }
            }
        }
    }
}

/// The request a component makes, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub verb: &'static str,
    pub name: Option<String>,
}

/// What RBAC checks for an API request (`method`, URL `path` and `query`), or None for a path
/// that is not a resource (e.g. `/version`).
pub fn access(method: &str, path: &str, query: &str) -> Option<Access> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return None,
    };
    Some(Access {
        group,
        resource: match sub {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        },
        verb,
        name: name.map(str::to_owned),
    })
}

/// Whether one of `rules` grants `access`.
pub fn allows(rules: &[Rule], access: &Access) -> bool {
    rules.iter().any(|r| {
        r.group == access.group
            && r.resources.contains(&access.resource.as_str())
            && r.verbs.contains(&access.verb)
            && (r.names.is_empty() || access.name.as_deref().is_some_and(|n| r.names.contains(&n)))
    })
}

#[cfg(test)]
mod access_tests {
    use super::*;

    #[test]
    fn requests_map_to_rbac_verbs_and_resources() {
        let a = |m, p, q| access(m, p, q).expect("a resource request");
        let status = a(
            "PATCH",
            "/apis/bulwark.io/v1beta1/namespaces/ns/volumes/v1/status",
            "fieldManager=x",
        );
        assert_eq!(
            (status.group.as_str(), status.resource.as_str(), status.verb),
            ("bulwark.io", "volumes/status", "patch")
        );
        assert_eq!(a("GET", "/api/v1/namespaces/ns/secrets/s", "").verb, "get");
        assert_eq!(
            a(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
                "labelSelector=x"
            )
            .verb,
            "list"
        );
        assert_eq!(
            a(
                "GET",
                "/apis/bulwark.io/v1beta1/namespaces/ns/volumes",
                "watch=true&timeoutSeconds=290"
            )
            .verb,
            "watch"
        );
        let crd = a(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/volumes.bulwark.io",
            "",
        );
        assert!(allows(CONTROLLER_CLUSTER_RULES, &crd));
        let other_crd = a(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/foo.example.com",
            "",
        );
        assert!(
            !allows(CONTROLLER_CLUSTER_RULES, &other_crd),
            "narrowed to our CRDs"
        );
        let delete_volume = a(
            "DELETE",
            "/apis/bulwark.io/v1beta1/namespaces/ns/volumes/v1",
            "",
        );
        assert!(!allows(AGENT_RULES, &delete_volume));
        assert_eq!(access("GET", "/version", ""), None);
    }
}
