//! `bulwark crd`: every CRD as YAML (what `deploy/crds.yaml` holds).

pub fn print() -> anyhow::Result<()> {
    let yaml = crd_types::crds::to_yaml()?;
    print!("{yaml}");
    Ok(())
}
