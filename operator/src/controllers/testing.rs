//! The mock API server of kube's `tower-test` pattern: tests script the exact requests a
//! reconcile must make and the answers the API server gives.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use tower_test::mock::{self, Handle, SendResponse};

/// The server side of a mock client.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One request the code under test made, ready to be answered.
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    send: SendResponse<Response<Body>>,
}

impl Recorded {
    pub fn respond(self, response: Response<Body>) {
        self.send.send_response(response);
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl ApiServer {
    /// Answer every request like an API server that holds no objects, until `quiet` passes
    /// without a request or `deadline` passes: lists are empty, watches end at once, reads of
    /// one object are 404, creates and applies echo the body. Every request must be granted by
    /// the RBAC of the component whose test runs (see [`check_rbac`]). Returns what was asked,
    /// as `METHOD path?query`.
    pub async fn serve_empty(mut self, deadline: std::time::Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        while let Ok(Some((request, send))) =
            tokio::time::timeout_at(until, self.handle.next_request()).await
        {
            let (parts, body) = request.into_parts();
            let body = body
                .collect_bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            let recorded = Recorded {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: None,
                body,
                send,
            };
            check_rbac(&recorded);
            seen.push(format!(
                "{} {}?{}",
                recorded.method, recorded.path, recorded.query
            ));
            let access =
                crate::rbac::access(recorded.method.as_str(), &recorded.path, &recorded.query);
            let response = match access.as_ref().map(|a| (a.verb, a.resource.clone())) {
                Some(("list", resource)) => json_response(
                    StatusCode::OK,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "List",
                        "metadata": {"resourceVersion": "1"}, "items": [],
                        "_resource": resource,
                    }),
                ),
                Some(("watch", _)) => Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::empty())
                    .expect("valid response"),
                Some(("create" | "patch", _)) => {
                    let mut object = recorded.json();
                    if object.get("metadata").is_none() {
                        object["metadata"] = serde_json::json!({});
                    }
                    json_response(StatusCode::OK, object)
                }
                _ => not_found(),
            };
            recorded.respond(response);
        }
        seen
    }

    /// A client talking to a new mock server (default namespace `default`).
    pub fn start() -> (kube::Client, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), ApiServer { handle })
    }

    /// The next request, which must have this method and path.
    pub async fn expect(&mut self, method: Method, path: &str) -> Recorded {
        let (request, send) = self
            .handle
            .next_request()
            .await
            .expect("the code under test sent a request");
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.expect("request body").to_vec();
        let recorded = Recorded {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            send,
        };
        assert_eq!(
            (&recorded.method, recorded.path.as_str()),
            (&method, path),
            "unexpected request"
        );
        check_rbac(&recorded);
        recorded
    }
}

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(&body).expect("JSON serializes"),
        ))
        .expect("valid response")
}

/// The API server's failure answer (a `Status` object) with this code and reason.
pub fn status(code: u16, reason: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code).expect("a valid HTTP status");
    json_response(
        status,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "code": code, "message": format!("{reason} (mock API server)")
        }),
    )
}

/// The API server's answer for an object that does not exist.
pub fn not_found() -> Response<Body> {
    status(404, "NotFound")
}

/// A controller [`Context`](super::Context) on a mock API server: configuration from the
/// defaults of `bulwark run`, empty caches, Events kept in memory.
pub fn context() -> (
    super::Context,
    ApiServer,
    std::sync::Arc<std::sync::Mutex<Vec<crate::events::Published>>>,
) {
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        common: config::CommonArgs,
        #[command(flatten)]
        controller: config::ControllerArgs,
    }
    let args = <Args as clap::Parser>::parse_from(["bulwark"]);
    let config = config::ControllerConfig::from_args(&args.common, &args.controller)
        .expect("the defaults are valid");
    let (client, server) = ApiServer::start();
    let (events, published) = crate::events::Events::memory();
    let ctx = super::Context {
        client,
        config: std::sync::Arc::new(config),
        metrics: crate::metrics::Metrics::new().expect("metrics register"),
        caches: crate::caches::Caches::empty(),
        events,
        stores: std::sync::Arc::new(crate::stores::Stores::default()),
    };
    (ctx, server, published)
}

/// Every request a test sees must be one the RBAC of `deploy/rbac.yaml` grants: the agent's rules
/// for tests of `agent::…`, the controller's for the rest (tests run on a thread named after
/// them, and the mock answers on that thread). So a new API call without its RBAC row fails here,
/// not in a cluster.
fn check_rbac(recorded: &Recorded) {
    use crate::rbac::{
        AGENT_RULES, CONTROLLER_CLUSTER_RULES, CONTROLLER_RULES, CRD_INSTALLER_RULES, access,
        allows,
    };
    let Some(access) = access(recorded.method.as_str(), &recorded.path, &recorded.query) else {
        return;
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or_default();
    let (component, granted) = if !test.contains("::") {
        // Not on a thread named after its test (e.g. `--test-threads=1` on some libtest
        // versions): any component's grant will do.
        (
            "operator",
            [
                AGENT_RULES,
                CONTROLLER_RULES,
                CONTROLLER_CLUSTER_RULES,
                CRD_INSTALLER_RULES,
            ]
            .iter()
            .any(|rules| allows(rules, &access)),
        )
    } else if test.starts_with("agent::") {
        ("agent", allows(AGENT_RULES, &access))
    } else if test.starts_with("crds::") {
        ("CRD installer", allows(CRD_INSTALLER_RULES, &access))
    } else {
        (
            "controller",
            allows(CONTROLLER_RULES, &access) || allows(CONTROLLER_CLUSTER_RULES, &access),
        )
    };
    assert!(
        granted,
        "the {component} made {} {} ({access:?}), which operator/src/rbac.rs does not grant it: add the row and regenerate deploy/rbac.yaml",
        recorded.method, recorded.path
    );
}
