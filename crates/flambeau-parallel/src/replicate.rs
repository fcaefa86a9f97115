//! `replicate`: the model built again on other devices, with the base model's parameters and
//! buffers copied in.

use candle_core::Device;
use flambeau_core::{VarBuilder, VarStore};
use flambeau_kernels::device::transfer;

use crate::{Error, Result};

/// A copy of a model on one device, with its own store.
pub struct Replica<M> {
    /// The model, built by the same constructor as the base model.
    pub model: M,
    /// Its parameters and buffers.
    pub vars: VarStore,
}

/// How a replica is built: the constructor that built the base model, given a builder on the
/// replica's device (e.g. `|vb| resnet18(vb, 10)`).
pub trait BuildModel<M>: Fn(VarBuilder) -> std::result::Result<M, Self::Error> {
    /// What the constructor fails with.
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<M, E, F> BuildModel<M> for F
where
    F: Fn(VarBuilder) -> std::result::Result<M, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Error = E;
}

/// The model built by `build` on each of `devices`, each holding a copy of `base`'s parameters
/// and buffers (PyTorch's `replicate`, for the devices after the first: there the base model
/// itself is the replica, sharing its storage).
pub fn replicate<M>(
    base: &VarStore,
    build: &impl BuildModel<M>,
    devices: &[Device],
) -> Result<Vec<Replica<M>>> {
    devices
        .iter()
        .map(|device| {
            let vars = VarStore::new(device, base.dtype());
            vars.set_model_name(base.model_name());
            let model = build(vars.root()).map_err(|e| Error::Build {
                device: format!("{device:?}"),
                source: e.into(),
            })?;
            copy_state(base, &vars)?;
            Ok(Replica { model, vars })
        })
        .collect()
}

/// Copies every parameter and buffer (persistent or not) of `from` into the entry of the same
/// name in `to`, across devices.
pub fn copy_state(from: &VarStore, to: &VarStore) -> Result<()> {
    let targets = to.entries();
    let targets = flambeau_core::var_store::entries_by_name(&targets);
    for e in from.entries() {
        let Some(target) = targets.get(e.name.as_str()) else {
            return Err(Error::ReplicaLayout {
                device: format!("{:?}", to.device()),
                name: e.name,
            });
        };
        target
            .var
            .set(&transfer(e.var.as_tensor(), target.var.device())?)?;
    }
    Ok(())
}
