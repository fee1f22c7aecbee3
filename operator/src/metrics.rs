//! Prometheus metrics (`bulwark_` prefix): reconciles, the objects' state as their status says
//! (refreshed from the caches, so series of deleted objects disappear), backup data-path
//! figures and backup-target requests. Labels come from small fixed sets or the names of
//! long-lived objects (volume, backup target, recurring job, backing image), never the names of
//! snapshots or backups (a volume makes thousands) and never error text: a volume's backup
//! series describe its latest backup, its snapshot series all its snapshots together.
//! `README.md` lists every metric; a test keeps that table equal to [`Metrics::catalog`].

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
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
    /// Everything registered, in registration order (for [`Metrics::catalog`]).
    collectors: Arc<Vec<Box<dyn Collector>>>,
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
    /// `{volume}`: bytes the volume's snapshots allocate, summed over them.
    pub snapshot_size: IntGaugeVec,
    /// `{image}`: Pending=1 Starting=2 InProgress=3 Ready=4 Failed=5 Unknown=6.
    pub backing_image_state: IntGaugeVec,
    /// `{volume}`: state of the volume's latest Backup: Pending=1 InProgress=2 Completed=3
    /// Error=4 Unknown=5.
    pub backup_state: IntGaugeVec,
    /// `{volume}`: size of the volume's latest completed backup.
    pub backup_size: IntGaugeVec,
    /// `{volume}`: seconds the volume's latest completed backup took (agent).
    pub backup_last_duration: GaugeVec,
    /// `{volume}`: bytes the volume's backups uploaded (agent).
    pub backup_uploaded: IntCounterVec,
    /// `{kind=full|incremental, result=completed|error}`.
    pub backup_duration: HistogramVec,
    /// `{kind, counter=read|changed|uploaded|deduplicated}`.
    pub backup_bytes: IntCounterVec,
    /// `{target}`: 1 when the last probe succeeded.
    pub backup_target_available: IntGaugeVec,
    /// `{operation, result=success|error}`: requests to backup stores.
    pub backup_target_requests: IntCounterVec,
    /// `{volume}`: seconds since the newest backup a standby volume has not restored yet (0
    /// once it has).
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

/// One metric as registered: what `README.md` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// With the `bulwark_` prefix.
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
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

/// Registers collectors and remembers them for the catalog.
struct Builder {
    registry: Registry,
    collectors: Vec<Box<dyn Collector>>,
}

impl Builder {
    fn add<C: Collector + Clone + 'static>(&mut self, c: C) -> Result<C, prometheus::Error> {
        self.registry.register(Box::new(c.clone()))?;
        self.collectors.push(Box::new(c.clone()));
        Ok(c)
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> Result<HistogramVec, prometheus::Error> {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )?)
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let mut b = Builder {
            registry: Registry::new_custom(Some("bulwark".into()), None)?,
            collectors: Vec::new(),
        };
        let reconciles = b.counter(
            "reconcile_total",
            "Reconciles by controller and result (success, error).",
            &["controller", "result"],
        )?;
        let reconcile_errors = b.counter(
            "reconcile_errors_total",
            "Failed reconciles by controller and error category.",
            &["controller", "category"],
        )?;
        let reconcile_duration = b.histogram(
            "reconcile_duration_seconds",
            "Time spent in one reconcile.",
            vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
            &["controller"],
        )?;
        let leader = b.add(IntGauge::new(
            "leader",
            "1 while this replica holds the controller lease.",
        )?)?;
        let build = b.gauge("build_info", "Version of the running binary.", &["version"])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let volume_capacity = b.gauge(
            "volume_capacity_bytes",
            "Volume size (spec.size).",
            &["volume"],
        )?;
        let volume_actual_size = b.gauge(
            "volume_actual_size_bytes",
            "Bytes the volume's layers allocate on its node.",
            &["volume"],
        )?;
        let volume_state = b.gauge(
            "volume_state",
            "Volume state: Pending=1 Creating=2 Restoring=3 Ready=4 Faulted=5 Deleting=6.",
            &["volume"],
        )?;
        let volume_last_backup = b.gauge(
            "volume_last_backup_timestamp_seconds",
            "Unix time of the volume's newest completed backup.",
            &["volume"],
        )?;
        let snapshot_size = b.gauge(
            "snapshot_size_bytes",
            "Bytes the layers of the volume's snapshots allocate, summed over its snapshots.",
            &["volume"],
        )?;
        let backing_image_state = b.gauge(
            "backing_image_state",
            "Backing image state: Pending=1 Starting=2 InProgress=3 Ready=4 Failed=5 Unknown=6.",
            &["image"],
        )?;
        let backup_state = b.gauge(
            "backup_state",
            "State of the volume's latest backup: Pending=1 InProgress=2 Completed=3 Error=4 Unknown=5.",
            &["volume"],
        )?;
        let backup_size = b.gauge(
            "backup_size_bytes",
            "Bytes of volume data the volume's latest completed backup holds.",
            &["volume"],
        )?;
        let backup_last_duration = b.add(GaugeVec::new(
            Opts::new(
                "backup_last_duration_seconds",
                "Time the volume's latest completed backup took (agent).",
            ),
            &["volume"],
        )?)?;
        let backup_uploaded = b.counter(
            "backup_uploaded_bytes_total",
            "Bytes the volume's backups uploaded (new blocks, compressed; agent).",
            &["volume"],
        )?;
        let backup_duration = b.histogram(
            "backup_duration_seconds",
            "Time one backup took, by kind and result (agent).",
            vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0],
            &["kind", "result"],
        )?;
        let backup_bytes = b.counter(
            "backup_bytes_total",
            "Bytes backups read, found changed, uploaded and deduplicated (agent).",
            &["kind", "counter"],
        )?;
        let backup_target_available = b.gauge(
            "backup_target_available",
            "1 when the backup target answered its last probe.",
            &["target"],
        )?;
        let backup_target_requests = b.counter(
            "backup_target_requests_total",
            "Backup-store operations by operation and result.",
            &["operation", "result"],
        )?;
        let dr_lag = b.gauge(
            "dr_lag_seconds",
            "Seconds since the newest backup a standby volume has not restored yet (0 once it has).",
            &["volume"],
        )?;
        let dr_track_failures = b.counter(
            "dr_track_failures_total",
            "Failed checks of standby volumes' backup volumes, by error category.",
            &["category"],
        )?;
        let dr_restore_failures = b.counter(
            "dr_restore_failures_total",
            "Failed DR restores, by volume (agent).",
            &["volume"],
        )?;
        let recurring_job_runs = b.counter(
            "recurring_job_runs_total",
            "Finished recurring-job runs by job, task and result.",
            &["job", "task", "result"],
        )?;
        let recurring_job_last_success = b.gauge(
            "recurring_job_last_success_timestamp_seconds",
            "Unix time of the job's last run that succeeded or had nothing to do.",
            &["job"],
        )?;
        let recurring_job_next_run = b.gauge(
            "recurring_job_next_run_timestamp_seconds",
            "Unix time of the job's next slot.",
            &["job"],
        )?;
        let recurring_job_schedule_lag = b.add(Histogram::with_opts(
            HistogramOpts::new(
                "recurring_job_schedule_lag_seconds",
                "Seconds between a recurring job's slot and the start of its run.",
            )
            .buckets(vec![0.01, 0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0]),
        )?)?;
        let recurring_job_volumes_skipped = b.counter(
            "recurring_job_volumes_skipped_total",
            "Volumes a recurring-job run skipped, by job and reason.",
            &["job", "reason"],
        )?;
        Ok(Metrics {
            registry: b.registry,
            collectors: Arc::new(b.collectors),
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
            backup_last_duration,
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

    /// Every registered metric: name (with the prefix), type, labels and help, in registration
    /// order.
    pub fn catalog(&self) -> Vec<Described> {
        let mut all = Vec::new();
        for collector in self.collectors.iter() {
            let kinds: Vec<MetricType> = collector
                .collect()
                .iter()
                .map(|f| f.get_field_type())
                .collect();
            for (i, desc) in collector.desc().into_iter().enumerate() {
                let kind = match kinds.get(i) {
                    Some(MetricType::COUNTER) => "counter",
                    Some(MetricType::GAUGE) => "gauge",
                    Some(MetricType::HISTOGRAM) => "histogram",
                    Some(MetricType::SUMMARY) => "summary",
                    _ => "untyped",
                };
                all.push(Described {
                    name: format!("bulwark_{}", desc.fq_name),
                    kind,
                    labels: desc.variable_labels.clone(),
                    help: desc.help.clone(),
                });
            }
        }
        all
    }

    /// Record one completed backup of `volume` of `kind` (full, incremental) that took
    /// `seconds`: the duration histogram, the bytes by kind, and the volume's series (its
    /// uploaded bytes and the duration of its latest backup).
    pub fn backup_completed(
        &self,
        volume: &str,
        kind: &str,
        seconds: f64,
        counters: &backupstore::BackupCounters,
    ) {
        self.backup_duration
            .with_label_values(&[kind, "completed"])
            .observe(seconds);
        for (counter, value) in [
            ("read", counters.bytes_read),
            ("changed", counters.bytes_changed),
            ("uploaded", counters.bytes_uploaded),
            ("deduplicated", counters.bytes_deduplicated),
        ] {
            self.backup_bytes
                .with_label_values(&[kind, counter])
                .inc_by(value);
        }
        self.backup_uploaded
            .with_label_values(&[volume])
            .inc_by(counters.bytes_uploaded);
        self.backup_last_duration
            .with_label_values(&[volume])
            .set(seconds);
    }

    /// Drop the series the agent keeps per volume, once the volume's data is deleted (series of
    /// deleted objects disappear).
    pub fn forget_volume(&self, volume: &str) {
        let _ = self.backup_uploaded.remove_label_values(&[volume]);
        let _ = self.backup_last_duration.remove_label_values(&[volume]);
        let _ = self.dr_restore_failures.remove_label_values(&[volume]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels may only name small fixed sets or long-lived objects (one series per volume,
    /// backup target, recurring job or backing image), never snapshots, backups or error text.
    #[test]
    fn every_label_is_bounded() {
        const BOUNDED: [&str; 13] = [
            "controller",
            "result",
            "category",
            "version",
            "volume",
            "image",
            "target",
            "kind",
            "counter",
            "operation",
            "job",
            "task",
            "reason",
        ];
        let catalog = Metrics::new().expect("metrics").catalog();
        assert!(catalog.len() > 20, "{catalog:?}");
        for metric in catalog {
            for label in &metric.labels {
                assert!(
                    BOUNDED.contains(&label.as_str()),
                    "{} has the label {label}, which is not from a bounded set",
                    metric.name
                );
            }
        }
    }

    /// What the agent records per backup stays one series per volume, and goes with the volume.
    #[test]
    fn many_backups_of_a_volume_are_one_series_that_goes_with_the_volume() {
        let metrics = Metrics::new().expect("metrics");
        let counters = backupstore::BackupCounters {
            bytes_read: 100,
            bytes_changed: 10,
            bytes_uploaded: 7,
            ..Default::default()
        };
        for n in 0..1000u32 {
            metrics.backup_completed("vol-1", "incremental", f64::from(n), &counters);
        }
        metrics.backup_completed("vol-2", "full", 3.0, &counters);
        metrics
            .dr_restore_failures
            .with_label_values(&["vol-1"])
            .inc();
        let series = |name: &str| {
            metrics
                .registry
                .gather()
                .iter()
                .filter(|f| f.name() == name)
                .map(|f| f.get_metric().len())
                .sum::<usize>()
        };
        assert_eq!(series("bulwark_backup_uploaded_bytes_total"), 2);
        assert_eq!(series("bulwark_backup_last_duration_seconds"), 2);
        assert_eq!(
            metrics.backup_uploaded.with_label_values(&["vol-1"]).get(),
            7000
        );
        assert_eq!(
            metrics
                .backup_last_duration
                .with_label_values(&["vol-1"])
                .get(),
            999.0
        );
        metrics.forget_volume("vol-1");
        let text = metrics.render();
        assert!(!text.contains("vol-1"), "{text}");
        assert!(
            text.contains("bulwark_backup_uploaded_bytes_total{volume=\"vol-2\"} 7"),
            "{text}"
        );
        assert!(
            text.contains(
                "bulwark_backup_bytes_total{counter=\"uploaded\",kind=\"incremental\"} 7000"
            ),
            "{text}"
        );
    }

    /// `README.md` has a table of every metric (name, type, labels, meaning), equal to what is
    /// registered here.
    #[test]
    fn the_readme_lists_every_metric_as_registered() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let documented: Vec<Vec<String>> = readme
            .lines()
            .filter(|l| l.starts_with("| `bulwark_"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|cell| cell.trim().to_owned())
                    .collect()
            })
            .collect();
        let registered: Vec<Vec<String>> = Metrics::new()
            .expect("metrics")
            .catalog()
            .into_iter()
            .map(|m| {
                let labels = if m.labels.is_empty() {
                    "—".to_owned()
                } else {
                    m.labels
                        .iter()
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![format!("`{}`", m.name), m.kind.to_owned(), labels, m.help]
            })
            .collect();
        let table: String = registered
            .iter()
            .map(|row| format!("| {} |\n", row.join(" | ")))
            .collect();
        assert_eq!(
            documented, registered,
            "README.md's metrics table differs from metrics.rs; the table as registered:\n{table}"
        );
    }
}
