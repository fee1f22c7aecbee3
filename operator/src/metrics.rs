//! Prometheus metrics (`bulwark_` prefix): reconciles, the objects' state as their status says
//! (refreshed from the caches, so series of deleted objects disappear), backup data-path
//! figures and backup-target requests. Labels come from small fixed sets or object names,
//! never error text.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Error categories: a small fixed set, never error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The API server refused or failed a request.
    Kubernetes,
    /// The backup store refused or failed a request.
    Store,
    /// An object is invalid; the user must fix it.
    Invalid,
    /// A referenced object does not exist (yet).
    NotFound,
    /// Local data work failed (engine, disk).
    Data,
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Kubernetes => "kubernetes",
            ErrorCategory::Store => "store",
            ErrorCategory::Invalid => "invalid",
            ErrorCategory::NotFound => "not_found",
            ErrorCategory::Data => "data",
        }
    }
}

/// The process's metrics and the registry `/metrics` serves.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: HistogramVec,
    pub leader: IntGauge,
    /// `{volume}`: spec.size in bytes.
    pub volume_capacity: IntGaugeVec,
    /// `{volume}`: bytes allocated on the node.
    pub volume_actual_size: IntGaugeVec,
    /// `{volume}`: Pending=1 Creating=2 Restoring=3 Ready=4 Faulted=5 Deleting=6.
    pub volume_state: IntGaugeVec,
    /// `{volume}`: Unix time of the newest completed backup.
    pub volume_last_backup: IntGaugeVec,
    /// `{volume, snapshot}`.
    pub snapshot_size: IntGaugeVec,
    /// `{image}`: Pending=1 Starting=2 InProgress=3 Ready=4 Failed=5 Unknown=6.
    pub backing_image_state: IntGaugeVec,
    /// `{volume, backup}`: Pending=1 InProgress=2 Completed=3 Error=4 Unknown=5.
    pub backup_state: IntGaugeVec,
    /// `{volume, backup}`.
    pub backup_size: IntGaugeVec,
    /// `{volume, backup}`.
    pub backup_uploaded: IntGaugeVec,
    /// `{kind=full|incremental, result=completed|error}`.
    pub backup_duration: HistogramVec,
    /// `{kind, counter=read|changed|uploaded|deduplicated}`.
    pub backup_bytes: IntCounterVec,
    /// `{target}`: 1 when the last probe succeeded.
    pub backup_target_available: IntGaugeVec,
    /// `{operation, result=success|error}`: requests to backup stores.
    pub backup_target_requests: IntCounterVec,
    /// `{volume}`: seconds between the newest backup and the one a standby volume holds.
    pub dr_lag: IntGaugeVec,
    /// `{category}`: failed checks of a standby volume's backup volume.
    pub dr_track_failures: IntCounterVec,
    /// `{volume}`: failed DR restores (full or incremental) on this node.
    pub dr_restore_failures: IntCounterVec,
    /// `{job, task, result=Succeeded|PartiallyFailed|Failed|Skipped}`: finished recurring-job runs.
    pub recurring_job_runs: IntCounterVec,
    /// `{job}`: Unix time of the job's last run that ended Succeeded or Skipped.
    pub recurring_job_last_success: IntGaugeVec,
    /// `{job}`: Unix time of the job's next slot (`status.nextRunAt`).
    pub recurring_job_next_run: IntGaugeVec,
    /// Seconds between a slot and the moment its run started.
    pub recurring_job_schedule_lag: Histogram,
    /// `{job, reason}`: volumes a run skipped (Unchanged, BelowThreshold, Standby, Restoring, Detached).
    pub recurring_job_volumes_skipped: IntCounterVec,
}

/// The `bulwark_backing_image_state` value of `state`.
pub fn backing_image_state_value(state: crd_types::backing_image::BackingImageState) -> i64 {
    use crd_types::backing_image::BackingImageState::*;
    match state {
        Pending => 1,
        Starting => 2,
        InProgress => 3,
        Ready => 4,
        Failed => 5,
        Unknown => 6,
    }
}

/// Series families refreshed wholesale from the caches (see `controllers::object_metrics`).
pub fn volume_state_value(state: crd_types::volume::VolumeState) -> i64 {
    use crd_types::volume::VolumeState::*;
    match state {
        Pending => 1,
        Creating => 2,
        Restoring => 3,
        Ready => 4,
        Faulted => 5,
        Deleting => 6,
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("bulwark".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new(
                "reconcile_total",
                "Reconciles by controller and result (success, error).",
            ),
            &["controller", "result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciles by controller and error category.",
            ),
            &["controller", "category"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time spent in one reconcile.")
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            &["controller"],
        )?;
        let leader = IntGauge::new("leader", "1 while this replica holds the controller lease.")?;
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Version of the running binary."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let volume_capacity = gauge(
            "volume_capacity_bytes",
            "Volume size (spec.size).",
            &["volume"],
        )?;
        let volume_actual_size = gauge(
            "volume_actual_size_bytes",
            "Bytes the volume's layers allocate on its node.",
            &["volume"],
        )?;
        let volume_state = gauge(
            "volume_state",
            "Volume state: Pending=1 Creating=2 Restoring=3 Ready=4 Faulted=5 Deleting=6.",
            &["volume"],
        )?;
        let volume_last_backup = gauge(
            "volume_last_backup_timestamp_seconds",
            "Unix time of the volume's newest completed backup.",
            &["volume"],
        )?;
        let snapshot_size = gauge(
            "snapshot_size_bytes",
            "Bytes the snapshot's layer allocates.",
            &["volume", "snapshot"],
        )?;
        let backing_image_state = gauge(
            "backing_image_state",
            "Backing image state: Pending=1 Starting=2 InProgress=3 Ready=4 Failed=5 Unknown=6.",
            &["image"],
        )?;
        let backup_state = gauge(
            "backup_state",
            "Backup state: Pending=1 InProgress=2 Completed=3 Error=4 Unknown=5.",
            &["volume", "backup"],
        )?;
        let backup_size = gauge(
            "backup_size_bytes",
            "Bytes of volume data the backup holds.",
            &["volume", "backup"],
        )?;
        let backup_uploaded = gauge(
            "backup_uploaded_bytes",
            "Bytes the backup uploaded (new blocks, compressed).",
            &["volume", "backup"],
        )?;
        let backup_target_available = gauge(
            "backup_target_available",
            "1 when the backup target answered its last probe.",
            &["target"],
        )?;
        let backup_duration = HistogramVec::new(
            HistogramOpts::new("backup_duration_seconds", "Time one backup took.")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0]),
            &["kind", "result"],
        )?;
        let backup_bytes = IntCounterVec::new(
            Opts::new(
                "backup_bytes_total",
                "Bytes backups read, found changed, uploaded and deduplicated.",
            ),
            &["kind", "counter"],
        )?;
        let backup_target_requests = IntCounterVec::new(
            Opts::new(
                "backup_target_requests_total",
                "Backup-store operations by operation and result.",
            ),
            &["operation", "result"],
        )?;
        let dr_lag = gauge(
            "dr_lag_seconds",
            "Seconds between the newest backup in the store and the one a standby volume holds.",
            &["volume"],
        )?;
        let dr_track_failures = IntCounterVec::new(
            Opts::new(
                "dr_track_failures_total",
                "Failed checks of standby volumes' backup volumes, by error category.",
            ),
            &["category"],
        )?;
        let dr_restore_failures = IntCounterVec::new(
            Opts::new(
                "dr_restore_failures_total",
                "Failed DR restores, by volume.",
            ),
            &["volume"],
        )?;
        registry.register(Box::new(dr_track_failures.clone()))?;
        registry.register(Box::new(dr_restore_failures.clone()))?;
        let recurring_job_runs = IntCounterVec::new(
            Opts::new(
                "recurring_job_runs_total",
                "Finished recurring-job runs by job, task and result.",
            ),
            &["job", "task", "result"],
        )?;
        let recurring_job_last_success = gauge(
            "recurring_job_last_success_timestamp_seconds",
            "Unix time of the job's last run that succeeded or had nothing to do.",
            &["job"],
        )?;
        let recurring_job_next_run = gauge(
            "recurring_job_next_run_timestamp_seconds",
            "Unix time of the job's next slot.",
            &["job"],
        )?;
        let recurring_job_schedule_lag = Histogram::with_opts(
            HistogramOpts::new(
                "recurring_job_schedule_lag_seconds",
                "Seconds between a recurring job's slot and the start of its run.",
            )
            .buckets(vec![0.01, 0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0]),
        )?;
        let recurring_job_volumes_skipped = IntCounterVec::new(
            Opts::new(
                "recurring_job_volumes_skipped_total",
                "Volumes a recurring-job run skipped, by job and reason.",
            ),
            &["job", "reason"],
        )?;
        registry.register(Box::new(recurring_job_runs.clone()))?;
        registry.register(Box::new(recurring_job_schedule_lag.clone()))?;
        registry.register(Box::new(recurring_job_volumes_skipped.clone()))?;
        registry.register(Box::new(backup_duration.clone()))?;
        registry.register(Box::new(backup_bytes.clone()))?;
        registry.register(Box::new(backup_target_requests.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(build))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            leader,
            volume_capacity,
            volume_actual_size,
            volume_state,
            volume_last_backup,
            snapshot_size,
            backing_image_state,
            backup_state,
            backup_size,
            backup_uploaded,
            backup_duration,
            backup_bytes,
            backup_target_available,
            backup_target_requests,
            dr_lag,
            dr_track_failures,
            dr_restore_failures,
            recurring_job_runs,
            recurring_job_last_success,
            recurring_job_next_run,
            recurring_job_schedule_lag,
            recurring_job_volumes_skipped,
        })
    }

    /// Record one reconcile of `controller` that took `seconds` and ended as `outcome`.
    pub fn reconciled(&self, controller: &str, seconds: f64, outcome: Result<(), ErrorCategory>) {
        self.reconcile_duration
            .with_label_values(&[controller])
            .observe(seconds);
        let result = if outcome.is_ok() { "success" } else { "error" };
        self.reconciles
            .with_label_values(&[controller, result])
            .inc();
        if let Err(category) = outcome {
            self.reconcile_errors
                .with_label_values(&[controller, category.as_str()])
                .inc();
        }
    }

    /// Run one reconcile of `controller` and record its duration and outcome (errors by the
    /// category `category` gives them).
    pub async fn timed<T, E>(
        &self,
        controller: &str,
        reconcile: impl std::future::Future<Output = Result<T, E>>,
        category: impl Fn(&E) -> ErrorCategory,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let result = reconcile.await;
        let outcome = result.as_ref().map(|_| ()).map_err(&category);
        self.reconciled(controller, started.elapsed().as_secs_f64(), outcome);
        result
    }

    /// Count one backup-store `operation` (list, inspect, backup, restore, delete, probe).
    pub fn store_request<T, E>(&self, operation: &str, result: &Result<T, E>) {
        let result = if result.is_ok() { "success" } else { "error" };
        self.backup_target_requests
            .with_label_values(&[operation, result])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}
