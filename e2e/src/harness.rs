//! The cluster under test and, in local mode, the operator processes the harness runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backupstore::testing::SeaweedFs;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

/// Where the operator under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The operator deployed in the cluster (`make deploy`); objects go to `bulwark-system`.
    Deployed,
    /// `bulwark run` and `bulwark agent`s started here, in a fresh namespace.
    Local,
}

/// The backup target of a local-mode run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A temporary directory (`file://`).
    File,
    /// A SeaweedFS S3 server on 127.0.0.1 with a credential Secret.
    S3,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated nodes, one agent each (local mode).
    pub agents: usize,
    pub target: Target,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agents: 1,
            target: Target::File,
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The cluster in `KUBECONFIG` (or `kubeconfig`), a namespace for this scenario, and the
/// operator processes of local mode.
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    pub mode: Mode,
    work: tempfile::TempDir,
    controller: Option<Child>,
    agents: Vec<Option<Child>>,
    target_url: String,
    _s3: Option<SeaweedFs>,
}

/// Why a scenario refuses to run with `BULWARK_E2E` set to `value`, if it does.
pub fn refusal(value: Option<&str>) -> Option<&'static str> {
    (value != Some("1")).then_some(
        "refusing to run: end-to-end scenarios create and delete namespaces and objects in the \
         cluster in KUBECONFIG; set BULWARK_E2E=1 to allow it",
    )
}

/// Refuse to touch a cluster unless asked to.
pub fn require_opt_in() {
    if let Some(why) = refusal(std::env::var("BULWARK_E2E").ok().as_deref()) {
        panic!("{why}");
    }
}

fn mode() -> Mode {
    match std::env::var("BULWARK_E2E_MODE").as_deref() {
        Ok("deployed") => Mode::Deployed,
        Ok("local") | Err(_) => Mode::Local,
        Ok(other) => panic!("BULWARK_E2E_MODE={other:?}: use `local` or `deployed`"),
    }
}

/// The `bulwark` binary: `BULWARK_BIN`, or the workspace's debug build (built here if needed).
pub fn bulwark_binary() -> PathBuf {
    if let Ok(path) = std::env::var("BULWARK_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-q", "-p", "operator", "--bin", "bulwark"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p operator failed");
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    target.join("debug/bulwark")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// Connect with `KUBECONFIG`, make a namespace and, in local mode, start the operator.
    pub async fn start(options: Options) -> Cluster {
        Self::start_with(None, options).await
    }

    /// As [`Cluster::start`], against the cluster of kubeconfig file `kubeconfig` (DR scenarios
    /// use a second one), sharing `target_url` when given.
    pub async fn start_with(kubeconfig: Option<&Path>, options: Options) -> Cluster {
        require_opt_in();
        let config = match kubeconfig {
            Some(path) => {
                let file =
                    kube::config::Kubeconfig::read_from(path).expect("a readable kubeconfig");
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .expect("a usable kubeconfig")
            }
            None => kube::Config::infer()
                .await
                .expect("KUBECONFIG points at a cluster"),
        };
        let client = kube::Client::try_from(config).expect("a client");
        let mode = mode();
        let work = tempfile::tempdir().expect("a work dir");
        let mut cluster = Cluster {
            client,
            namespace: "bulwark-system".into(),
            mode,
            work,
            controller: None,
            agents: Vec::new(),
            target_url: String::new(),
            _s3: None,
        };
        if mode == Mode::Deployed {
            // The installed operator's `default` target is the store the scenarios use.
            let targets: Api<crd_types::BackupTarget> = cluster.api();
            if let Ok(Some(target)) = targets.get_opt("default").await {
                cluster.target_url = target.spec.backup_target_url;
            }
            return cluster;
        }
        cluster.namespace = format!(
            "bulwark-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(cluster.namespace.clone()),
                labels: Some([("bulwark.io/e2e".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the scenario's namespace");
        cluster.target_url = match options.target {
            Target::File => {
                let dir = cluster.work.path().join("store");
                std::fs::create_dir_all(&dir).expect("store dir");
                format!("file://{}", dir.display())
            }
            Target::S3 => {
                let s3 = SeaweedFs::start().await.expect("SeaweedFS starts");
                let secrets: Api<Secret> =
                    Api::namespaced(cluster.client.clone(), &cluster.namespace);
                let secret: Secret = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "s3-credentials"},
                    "stringData": {
                        "AWS_ACCESS_KEY_ID": s3.credentials().access_key_id,
                        "AWS_SECRET_ACCESS_KEY": s3.credentials().secret_access_key,
                        "AWS_ENDPOINTS": s3.endpoint(),
                    }
                }))
                .expect("a Secret");
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("create the Secret");
                let url = s3.target_url("e2e").as_str().to_owned();
                cluster._s3 = Some(s3);
                url
            }
        };
        cluster.start_controller();
        for i in 0..options.agents {
            cluster.agents.push(None);
            cluster.start_agent(i);
        }
        cluster.wait_for_crds().await;
        if cluster._s3.is_some() {
            let targets: Api<crd_types::BackupTarget> = cluster.api();
            let target = crate::objects::backup_target(
                "default",
                &cluster.target_url,
                Some("s3-credentials"),
            );
            targets
                .create(&PostParams::default(), &target)
                .await
                .expect("create the S3 BackupTarget");
        }
        cluster
    }

    /// The URL of the scenarios' backup target (local mode: the harness's; deployed mode: the
    /// installed operator's `default` target).
    pub fn target_url(&self) -> &str {
        &self.target_url
    }

    /// Name of simulated node `i`.
    pub fn node(&self, i: usize) -> String {
        format!("e2e-node-{i}")
    }

    /// The file through which node `i` serves `volume` (local mode).
    pub fn volume_file(&self, i: usize, volume: &str) -> PathBuf {
        assert_eq!(
            self.mode,
            Mode::Local,
            "writing data through volume files needs local mode"
        );
        self.work.path().join(format!("node-{i}/mnt/{volume}"))
    }

    /// Start (or restart) `bulwark run`.
    pub fn start_controller(&mut self) {
        let url = if self._s3.is_some() {
            String::new()
        } else {
            self.target_url.clone()
        };
        let child = Command::new(bulwark_binary())
            .args(["run", "--install-crds", "--default-backup-target", &url])
            .args([
                "--namespace",
                &self.namespace,
                "--http-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bulwark run starts");
        self.controller = Some(child);
    }

    /// Kill `bulwark run` without warning (SIGKILL).
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start (or restart) the agent of node `i`.
    pub fn start_agent(&mut self, i: usize) {
        let data = self.work.path().join(format!("node-{i}"));
        let child = Command::new(bulwark_binary())
            .args([
                "agent",
                "--node-name",
                &self.node(i),
                "--data-dir",
                &data.display().to_string(),
            ])
            .args([
                "--namespace",
                &self.namespace,
                "--http-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bulwark agent starts");
        self.agents[i] = Some(child);
    }

    /// Kill the agent of node `i` without warning (SIGKILL).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut child) = self.agents[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn wait_for_crds(&self) {
        let volumes: Api<crd_types::Volume> = self.api();
        let deadline = Instant::now() + Duration::from_secs(60);
        while volumes.list(&Default::default()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the CRDs were never installed by bulwark run"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.mode != Mode::Local {
            // The operator's own namespace: delete what this scenario made, and the artifacts
            // its recurring jobs made, and leave the rest alone.
            let client = self.client.clone();
            let namespace = self.namespace.clone();
            let cleanup = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(delete_scenario_objects(client, namespace));
            });
            let _ = cleanup.join();
            return;
        }
        self.kill_controller();
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
        // Finalizers of our kinds would keep the namespace alive with nobody left to remove
        // them: drop them, then delete the namespace (from a thread: Drop cannot await).
        let client = self.client.clone();
        let namespace = self.namespace.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(delete_namespace(client, namespace));
        });
        let _ = cleanup.join();
    }
}

async fn drop_finalizers<K>(client: &kube::Client, namespace: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = api.list(&Default::default()).await else {
        return;
    };
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    for object in list.items {
        if let Some(name) = object.meta().name.clone() {
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

async fn delete_labelled<K>(client: &kube::Client, namespace: &str, selector: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let _ = api
        .delete_collection(
            &DeleteParams::default(),
            &kube::api::ListParams::default().labels(selector),
        )
        .await;
}

async fn delete_scenario_objects(client: kube::Client, namespace: String) {
    let mine = format!("{}=true", crate::objects::E2E_LABEL);
    delete_labelled::<crd_types::RecurringJob>(&client, &namespace, &mine).await;
    // Artifacts of the scenarios' recurring jobs (the only jobs with that label).
    delete_labelled::<crd_types::Snapshot>(&client, &namespace, "RecurringJob=every-minute").await;
    delete_labelled::<crd_types::Backup>(&client, &namespace, &mine).await;
    delete_labelled::<crd_types::Snapshot>(&client, &namespace, &mine).await;
    delete_labelled::<crd_types::Volume>(&client, &namespace, &mine).await;
    delete_labelled::<crd_types::BackingImage>(&client, &namespace, &mine).await;
    delete_labelled::<crd_types::BackupTarget>(&client, &namespace, &mine).await;
}

async fn delete_namespace(client: kube::Client, namespace: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    drop_finalizers::<crd_types::Volume>(&client, &namespace).await;
    drop_finalizers::<crd_types::Snapshot>(&client, &namespace).await;
    drop_finalizers::<crd_types::Backup>(&client, &namespace).await;
    drop_finalizers::<crd_types::BackupVolume>(&client, &namespace).await;
    drop_finalizers::<crd_types::BackingImage>(&client, &namespace).await;
}
