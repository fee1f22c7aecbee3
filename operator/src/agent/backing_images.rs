//! (skeleton: filled by the backing-images work)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::AgentContext;

pub async fn run(_ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
