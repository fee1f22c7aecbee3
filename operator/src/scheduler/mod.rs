//! (skeleton: filled by the scheduler/mod work)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::controllers::Context;

pub async fn run(_ctx: Arc<Context>, stop: CancellationToken) {
    stop.cancelled().await;
}
