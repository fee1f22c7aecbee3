//! (skeleton: filled by the volume work)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Context;

pub async fn run(_ctx: Arc<Context>, stop: CancellationToken) {
    stop.cancelled().await;
}
