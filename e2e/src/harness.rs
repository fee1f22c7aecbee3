//! The cluster under test and, in local mode, the operator processes the harness runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
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
    /// Serve CSI (local mode): `bulwark run` and the agents get sockets and a driver name of
    /// the scenario's own, and csi-provisioner, csi-snapshotter and csi-resizer (binaries in
    /// `BULWARK_E2E_CSI_SIDECARS`) run against them. The scenario plays kubelet (see
    /// [`crate::csi::Kubelet`]).
    pub csi: bool,
}

impl Default for Options {
    /// One agent; the target kind of `BULWARK_E2E_TARGET` (`file`, the default, or `s3`), so the
    /// whole suite runs against either.
    fn default() -> Self {
        Options {
            agents: 1,
            target: default_target(),
            csi: false,
        }
    }
}

fn default_target() -> Target {
    match std::env::var("BULWARK_E2E_TARGET").as_deref() {
        Ok("s3") => Target::S3,
        Ok("file") | Err(_) => Target::File,
        Ok(other) => panic!("BULWARK_E2E_TARGET={other:?}: use `file` or `s3`"),
    }
}

/// The Secret holding the S3 credentials of a local-mode S3 target.
const S3_SECRET: &str = "s3-credentials";
/// The Secret holding another cluster's S3 credentials (see [`Cluster::share_target_credentials`]).
const SHARED_S3_SECRET: &str = "e2e-shared-s3-credentials";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The topology key of the CSI driver: a volume's node.
pub const TOPOLOGY_KEY: &str = "topology.bulwark.io/node";

/// The longest the cleanup after a scenario may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest one request of the harness may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The operator processes of a local-mode cluster.
#[derive(Default)]
struct Processes {
    controller: Option<Child>,
    /// Indexed by node; `None` while killed.
    agents: Vec<Option<Child>>,
    /// The CSI sidecars, named.
    sidecars: Vec<(String, Child)>,
}

impl Processes {
    /// The first process that has exited, named.
    fn exited(&mut self, namespace: &str) -> Option<String> {
        let named = std::iter::once(("`bulwark run`".to_owned(), &mut self.controller)).chain(
            self.agents
                .iter_mut()
                .enumerate()
                .map(|(i, agent)| (format!("the `bulwark agent` of node e2e-node-{i}"), agent)),
        );
        for (name, child) in named {
            if let Some(child) = child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Some(format!("{name} (namespace {namespace}) exited: {status}"));
            }
        }
        for (name, child) in &mut self.sidecars {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(format!("{name} (namespace {namespace}) exited: {status}"));
            }
        }
        None
    }
}

fn s3_secret(s3: &SeaweedFs) -> Secret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": S3_SECRET},
        "stringData": {
            "AWS_ACCESS_KEY_ID": s3.credentials().access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.credentials().secret_access_key,
            "AWS_ENDPOINTS": s3.endpoint(),
        }
    }))
    .expect("a Secret")
}

/// SIGKILL, then reap.
fn kill(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The cluster in `KUBECONFIG` (or `kubeconfig`), a namespace for this scenario, and the
/// operator processes of local mode.
pub struct Cluster {
    pub client: kube::Client,
    /// What `client` was made from, for clients of other runtimes (see [`Cluster::clean_up`]).
    config: kube::Config,
    /// The kubeconfig file of a cluster other than `KUBECONFIG`'s, which the operator processes
    /// must use too.
    kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub mode: Mode,
    work: tempfile::TempDir,
    processes: Mutex<Processes>,
    target_url: String,
    _s3: Option<SeaweedFs>,
    /// The CSI driver name this cluster's operator serves, when it serves CSI.
    csi_driver: Option<String>,
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

/// Whether the CRDs are installed already (`BULWARK_CRDS=preinstalled`), so `bulwark run` is
/// not asked to install them: a Kubernetes 1.24 API server cannot compile the CEL transition
/// rules (`oldSelf`) of our CRDs, so there a copy without them is installed by hand, and
/// scenarios that need those rules say they are skipped.
pub fn crds_preinstalled() -> bool {
    std::env::var("BULWARK_CRDS").as_deref() == Ok("preinstalled")
}

/// The `bulwark` binary: `BULWARK_BIN`, or the workspace's debug build, built here once per
/// test process.
pub fn bulwark_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Ok(path) = std::env::var("BULWARK_BIN") {
        return PathBuf::from(path);
    }
    BUILT.get_or_init(build_bulwark).clone()
}

fn build_bulwark() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!(
        "building `bulwark` (cargo build -p operator --bin bulwark; set BULWARK_BIN to skip)"
    );
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "-p", "operator", "--bin", "bulwark"])
        .current_dir(&root);
    // `cargo test` gives this process the variables it gives the e2e crate (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...). Build scripts such as ring's rerun when those change, so passed
    // on they would rebuild half the dependency tree on every build, here and after.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_CFG_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["OUT_DIR", "CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE"].contains(&&*name)
        {
            cargo.env_remove(&*name);
        }
    }
    let status = cargo.status().expect("cargo runs");
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
        let mut config = config;
        // Every request of the harness fails in bounded time when the API server does not
        // answer (kube's default read timeout is minutes).
        config.connect_timeout = Some(REQUEST_TIMEOUT);
        config.read_timeout = Some(REQUEST_TIMEOUT);
        config.write_timeout = Some(REQUEST_TIMEOUT);
        let client = kube::Client::try_from(config.clone()).expect("a client");
        let mode = mode();
        assert!(
            !(options.csi && mode == Mode::Deployed),
            "CSI scenarios play kubelet beside local operator processes: run them with BULWARK_E2E_MODE=local (a deployed operator serves CSI to the cluster's own kubelet and sidecars)"
        );
        let work = tempfile::tempdir().expect("a work dir");
        let mut cluster = Cluster {
            client,
            config,
            kubeconfig: kubeconfig.map(Path::to_owned),
            namespace: "bulwark-system".into(),
            mode,
            work,
            processes: Mutex::default(),
            target_url: String::new(),
            _s3: None,
            csi_driver: None,
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
                secrets
                    .create(&PostParams::default(), &s3_secret(&s3))
                    .await
                    .expect("create the Secret");
                let url = s3.target_url("e2e").as_str().to_owned();
                cluster._s3 = Some(s3);
                url
            }
        };
        if options.csi {
            cluster.csi_driver = Some(format!("{}.csi.bulwark.io", cluster.namespace));
        }
        cluster.start_controller();
        for i in 0..options.agents {
            cluster.start_agent(i);
        }
        cluster.wait_for_crds().await;
        if options.csi {
            cluster.start_csi(options.agents).await;
        }
        if cluster._s3.is_some() {
            let targets: Api<crd_types::BackupTarget> = cluster.api();
            let target =
                crate::objects::backup_target("default", &cluster.target_url, Some(S3_SECRET));
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

    /// Gives `other` (e.g. the standby side of a DR scenario, which may have an S3 server of its
    /// own) the credentials of this cluster's target; the name of the Secret that holds them,
    /// for a BackupTarget of [`Self::target_url`] there, if the target needs one.
    pub async fn share_target_credentials(&self, other: &Cluster) -> Option<&'static str> {
        let s3 = self._s3.as_ref()?;
        let mut secret = s3_secret(s3);
        secret.metadata.name = Some(SHARED_S3_SECRET.to_owned());
        let secrets: Api<Secret> = other.api();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the shared S3 Secret on the other side");
        Some(SHARED_S3_SECRET)
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
        let child = self
            .operator_command()
            .arg("run")
            .args((!crds_preinstalled()).then_some("--install-crds"))
            .args(["--default-backup-target", &url])
            .args([
                "--namespace",
                &self.namespace,
                "--http-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(self.csi_flags(&self.controller_socket()))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bulwark run starts");
        self.processes().controller = Some(child);
    }

    /// `bulwark`, pointed at this cluster.
    fn operator_command(&self) -> Command {
        let mut command = Command::new(bulwark_binary());
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        command
    }

    /// The CSI driver name this cluster serves (an `Options::csi` cluster).
    pub fn csi_driver(&self) -> &str {
        self.csi_driver
            .as_deref()
            .expect("a cluster started with Options { csi: true, .. }")
    }

    /// The socket of `bulwark run`'s CSI Identity and Controller services.
    pub fn controller_socket(&self) -> PathBuf {
        self.work.path().join("csi/controller.sock")
    }

    /// The socket of node `i`'s CSI Identity and Node services (kubelet's side).
    pub fn node_socket(&self, i: usize) -> PathBuf {
        self.work.path().join(format!("node-{i}/csi.sock"))
    }

    /// A directory of the scenario's (kubelet's staging and pod directories).
    pub fn work_dir(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        std::fs::create_dir_all(&dir).expect("a work dir");
        dir
    }

    fn csi_flags(&self, socket: &Path) -> Vec<String> {
        match &self.csi_driver {
            Some(driver) => vec![
                format!("--csi-endpoint=unix://{}", socket.display()),
                format!("--csi-driver-name={driver}"),
            ],
            None => Vec::new(),
        }
    }

    /// The kubeconfig file the sidecars use (they take no other configuration).
    fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig
            .clone()
            .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
            .expect("CSI scenarios need KUBECONFIG (a file) for the sidecars")
    }

    /// What kubelet and a node's CSINode say: the simulated nodes exist, with our driver and its
    /// topology key; then the sidecars run against `bulwark run`'s socket.
    async fn start_csi(&mut self, agents: usize) {
        let driver = self.csi_driver().to_owned();
        let apply = PatchParams::apply("bulwark-e2e").force();
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let csi_nodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(self.client.clone());
        for i in 0..agents {
            let node = self.node(i);
            let object = serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": {TOPOLOGY_KEY: node, "bulwark.io/e2e": "true"}},
            });
            nodes
                .patch(&node, &apply, &Patch::Apply(&object))
                .await
                .expect("the simulated node's Node");
            let object = serde_json::json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
                "metadata": {"name": node, "labels": {"bulwark.io/e2e": "true"}},
                "spec": {"drivers": [{"name": driver, "nodeID": node, "topologyKeys": [TOPOLOGY_KEY]}]},
            });
            csi_nodes
                .patch(&node, &apply, &Patch::Apply(&object))
                .await
                .expect("the simulated node's CSINode");
        }
        let dir = std::env::var_os("BULWARK_E2E_CSI_SIDECARS").map(PathBuf::from).expect(
            "BULWARK_E2E_CSI_SIDECARS must name a directory holding csi-provisioner, csi-snapshotter and csi-resizer (built from kubernetes-csi/external-provisioner, external-snapshotter and external-resizer)",
        );
        let socket = self.controller_socket();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            self.assert_processes_alive();
            assert!(
                Instant::now() < deadline,
                "bulwark run never served {}",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let kubeconfig = self.kubeconfig_path();
        let common = [
            format!("--csi-address={}", socket.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-election=false".to_owned(),
            "--timeout=60s".to_owned(),
        ];
        let sidecars: [(&str, &[&str]); 3] = [
            (
                "csi-provisioner",
                &["--extra-create-metadata", "--feature-gates=Topology=true"],
            ),
            ("csi-snapshotter", &["--extra-create-metadata"]),
            ("csi-resizer", &[]),
        ];
        for (name, extra) in sidecars {
            let binary = dir.join(name);
            let child = Command::new(&binary)
                .args(&common)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
            self.processes().sidecars.push((name.to_owned(), child));
        }
    }

    /// Kill `bulwark run` without warning (SIGKILL).
    pub fn kill_controller(&mut self) {
        kill(self.processes().controller.take());
    }

    /// Start (or restart) the agent of node `i`.
    pub fn start_agent(&mut self, i: usize) {
        let data = self.work.path().join(format!("node-{i}"));
        let child = self
            .operator_command()
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
            .args(self.csi_flags(&self.node_socket(i)))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bulwark agent starts");
        let mut processes = self.processes();
        if processes.agents.len() <= i {
            processes.agents.resize_with(i + 1, || None);
        }
        processes.agents[i] = Some(child);
    }

    /// Kill the agent of node `i` without warning (SIGKILL).
    pub fn kill_agent(&mut self, i: usize) {
        kill(self.processes().agents.get_mut(i).and_then(Option::take));
    }

    fn processes(&self) -> std::sync::MutexGuard<'_, Processes> {
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails the scenario at once if an operator process it started has exited: nothing it
    /// waits for can happen any more.
    pub fn assert_processes_alive(&self) {
        if let Some(exited) = self.processes().exited(&self.namespace) {
            panic!("{exited}: see its log above");
        }
    }

    /// Poll `name` until `done` holds; fails the scenario with `what` after `timeout`, or at
    /// once when an operator process of this cluster has exited. Every request is bounded too,
    /// so an API server that stops answering fails the scenario in time.
    pub async fn wait_for<K, F>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
        timeout: Duration,
        done: F,
    ) -> K
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        F: Fn(&K) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            self.assert_processes_alive();
            match tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(name)).await {
                Ok(Ok(Some(object))) if done(&object) => return object,
                Ok(Ok(found)) => last = found,
                Ok(Err(error)) => eprintln!("{name}: {error}"),
                Err(_) => eprintln!("{name}: no answer within {REQUEST_TIMEOUT:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not {what} after {timeout:?}; last seen: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
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
        while !matches!(
            tokio::time::timeout(REQUEST_TIMEOUT, volumes.list(&Default::default())).await,
            Ok(Ok(_))
        ) {
            self.assert_processes_alive();
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
        let namespace = self.namespace.clone();
        if self.mode != Mode::Local {
            // The operator's own namespace: delete what this scenario made, and the artifacts
            // its recurring jobs made, and leave the rest alone.
            self.clean_up(move |client| delete_scenario_objects(client, namespace));
            return;
        }
        let processes = std::mem::take(
            self.processes
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        kill(processes.controller);
        let agents = processes.agents.len();
        processes.agents.into_iter().for_each(kill);
        // A killed agent leaves its FUSE mount behind, dead: detach it (lazily, as a pod's
        // loop device may still hold it) so test runs do not pile mounts up.
        for i in 0..agents {
            let mount = self.work.path().join(format!("node-{i}/mnt"));
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&mount)
                .stderr(Stdio::null())
                .status();
        }
        for (_, sidecar) in processes.sidecars {
            kill(Some(sidecar));
        }
        if self.csi_driver.is_some() {
            let namespace = namespace.clone();
            self.clean_up(move |client| delete_csi_objects(client, namespace));
        }
        // Finalizers of our kinds would keep the namespace alive with nobody left to remove
        // them: drop them, then delete the namespace.
        self.clean_up(move |client| delete_namespace(client, namespace));
    }
}

impl Cluster {
    /// Runs `cleanup` to its end, or for [`CLEANUP_TIMEOUT`] at most, from `Drop`, which cannot
    /// await. It runs on a runtime of its own in a thread of its own, with a client of its own:
    /// `self.client` hands its requests to a task of the scenario's runtime, which is blocked
    /// right here until the cleanup ends, so using it would never return.
    fn clean_up<F, Fut>(&self, cleanup: F)
    where
        F: FnOnce(kube::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let config = self.config.clone();
        let namespace = self.namespace.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = kube::Client::try_from(config) else {
                    return;
                };
                if tokio::time::timeout(CLEANUP_TIMEOUT, cleanup(client))
                    .await
                    .is_err()
                {
                    eprintln!(
                        "cleaning up namespace {namespace} took over {CLEANUP_TIMEOUT:?}: left as it is"
                    );
                }
            });
        });
        let _ = thread.join();
    }
}

/// The cluster-scoped objects of a CSI scenario: the PVs of its namespace's PVCs (nobody is left
/// to release them), its StorageClass and VolumeSnapshotClasses (named after the namespace,
/// by convention), and the simulated nodes' Node and CSINode objects.
async fn delete_csi_objects(client: kube::Client, namespace: String) {
    use k8s_openapi::api::core::v1::{Node, PersistentVolume};
    use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
    let no_finalizers = serde_json::json!({"metadata": {"finalizers": null}});
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    if let Ok(list) = pvs.list(&ListParams::default()).await {
        for pv in list.items {
            let claimed_here = pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.namespace.as_deref())
                == Some(namespace.as_str());
            if let (true, Some(name)) = (claimed_here, pv.metadata.name) {
                let _ = pvs.delete(&name, &DeleteParams::default()).await;
                let _ = pvs
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&no_finalizers),
                    )
                    .await;
            }
        }
    }
    let classes: Api<StorageClass> = Api::all(client.clone());
    let _ = classes.delete(&namespace, &DeleteParams::default()).await;
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass");
    let snapshot_classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let selector = ListParams::default().labels(&format!("bulwark.io/e2e-namespace={namespace}"));
    if let Ok(list) = snapshot_classes.list(&selector).await {
        for class in list.items {
            if let Some(name) = class.metadata.name {
                let _ = snapshot_classes
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        }
    }
    let e2e = ListParams::default().labels("bulwark.io/e2e=true");
    let csi_nodes: Api<CSINode> = Api::all(client.clone());
    let _ = csi_nodes
        .delete_collection(&DeleteParams::default(), &e2e)
        .await;
    let nodes: Api<Node> = Api::all(client);
    let _ = nodes
        .delete_collection(&DeleteParams::default(), &e2e)
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// An API server on loopback that answers every request with 404, as a server would for a
    /// namespace that is gone.
    fn answering_not_found() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"gone"}"#;
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{status}",
                    status.len()
                );
            }
        });
        format!("http://{address}")
    }

    /// A scenario's cluster is dropped on the scenario's own (single-threaded) runtime, whose
    /// thread then waits for the cleanup: the cleanup must not need that runtime. Before it had
    /// a client of its own, every scenario hung here once it had finished.
    #[tokio::test]
    async fn dropping_the_cluster_in_the_scenarios_runtime_returns() {
        let config = kube::Config::new(answering_not_found().parse().expect("a URL"));
        let client = kube::Client::try_from(config.clone()).expect("a client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        assert!(namespaces.get_opt("any").await.expect("answered").is_none());
        let cluster = Cluster {
            client,
            config,
            namespace: "bulwark-e2e-gone".into(),
            mode: Mode::Local,
            work: tempfile::tempdir().expect("a work dir"),
            kubeconfig: None,
            processes: Mutex::default(),
            target_url: String::new(),
            _s3: None,
            csi_driver: None,
        };
        let (dropped, watched) = std::sync::mpsc::channel::<()>();
        // Half the cleanup's own bound: a cleanup that only ends by timing out fails here.
        std::thread::spawn(move || {
            if watched.recv_timeout(CLEANUP_TIMEOUT / 2)
                == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                eprintln!(
                    "dropping the Cluster did not return within {:?}",
                    CLEANUP_TIMEOUT / 2
                );
                std::process::exit(1);
            }
        });
        drop(cluster);
        dropped.send(()).expect("the watchdog waits");
    }
}
