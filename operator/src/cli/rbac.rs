//! `bulwark rbac`: the ServiceAccounts, Roles and bindings (what `deploy/rbac.yaml` holds).

pub fn print() -> anyhow::Result<()> {
    print!("{}", crate::rbac::to_yaml()?);
    Ok(())
}
