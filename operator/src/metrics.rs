//! Prometheus metrics (`bulwark_` prefix). Controllers record reconciles here; later issues add
//! volume, backup, target, recurring-job and DR series to the same registry.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
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

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}
