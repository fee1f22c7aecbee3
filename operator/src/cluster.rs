//! A client for the cluster the configuration names.

use config::ClusterConfig;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub async fn client(config: &ClusterConfig) -> anyhow::Result<kube::Client> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kube_config = match (&config.kubeconfig, &config.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
        (None, None) => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot find a cluster: {e} (set --kubeconfig / KUBECONFIG or run inside a cluster)"
            )
        })?,
    };
    Ok(kube::Client::try_from(kube_config)?)
}
