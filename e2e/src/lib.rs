//! End-to-end scenarios: the whole product driven through the Kubernetes API only, against the
//! cluster in `KUBECONFIG`. Every scenario is `#[ignore]`d, refuses to run unless
//! `BULWARK_E2E=1`, and works in a fresh namespace it deletes afterwards. (Scenarios land with
//! the operator controllers.)
