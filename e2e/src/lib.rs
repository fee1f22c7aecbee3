//! End-to-end scenarios: the whole product driven through the Kubernetes API only, against the
//! cluster in `KUBECONFIG`. Every scenario is `#[ignore]`d and refuses to run unless
//! `BULWARK_E2E=1`. The operator under test is either the one deployed in the cluster
//! (`BULWARK_E2E_MODE=deployed`, objects in `bulwark-system`) or started by the harness as local
//! processes (`local`, the default: `bulwark run` plus one `bulwark agent` per simulated node,
//! each with its own data dir, in a fresh namespace deleted afterwards), so the suite also runs
//! against any bare API server. It never reaches into the operator's code.

pub mod csi;
pub mod harness;
pub mod objects;

pub use harness::{Cluster, Mode, Options, Target};
