//! Prints every CRD as YAML (the same text `bulwark crd` prints).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", crd_types::crds::to_yaml()?);
    Ok(())
}
