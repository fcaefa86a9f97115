//! [`DataParallel`]: `nn.DataParallel` — a model whose forward splits the batch over devices,
//! and whose `state_dict()` carries PyTorch's `module.` prefix.

use candle_core::backprop::GradStore;
use candle_core::{Device, ModuleT, Tensor};
use flambeau_core::{LoadOptions, LoadReport, StateDict, VarStore};

use flambeau_kernels::device::transfer;

use crate::replicate::{copy_state, replicate, BuildModel, Replica};
use crate::{gather, parallel_apply, scatter, Error, Result};

/// The prefix `nn.DataParallel` (and DDP) put in front of every key: the wrapped model is
/// its `module` attribute.
pub const MODULE_PREFIX: &str = "module.";

/// A model run over several devices as `nn.DataParallel` runs it: each forward scatters the
/// batch (`torch.chunk` sizes), brings the replicas up to date with the base model, runs them
/// concurrently and gathers the outputs on the output device. The base model is the replica on
/// the first device, so its buffer updates (BatchNorm running statistics) are the ones kept.
///
/// Train through it with [`DataParallel::reduce_gradients`] after `backward`: the replicas'
/// gradients are summed into the base parameters (PyTorch's Broadcast backward), giving the
/// whole batch's gradient.
pub struct DataParallel<M> {
    module: M,
    vars: VarStore,
    replicas: Vec<Replica<M>>,
    devices: Vec<Device>,
    output_device: Device,
}

impl<M: ModuleT + Sync> DataParallel<M> {
    /// Wraps `module` (its parameters in `vars`, on `devices[0]`) over `devices`; `build` is the
    /// constructor that made it, used to build the replicas on the other devices. At most one
    /// entry may be a CUDA device ([`Error::UnorderedGpus`]): for several GPUs, or several
    /// replicas on one, use [`ReplicaGroup`](crate::ReplicaGroup).
    pub fn new(
        module: M,
        vars: VarStore,
        build: impl BuildModel<M>,
        devices: &[Device],
    ) -> Result<Self> {
        let Some(first) = devices.first() else {
            return Err(Error::NoDevices);
        };
        if !first.same_device(vars.device()) {
            return Err(Error::BaseDevice {
                expected: format!("{first:?}"),
                found: format!("{:?}", vars.device()),
            });
        }
        let gpus = devices.iter().filter(|d| d.is_cuda()).count();
        if gpus > 1 {
            return Err(Error::UnorderedGpus { devices: gpus });
        }
        let replicas = replicate(&vars, &build, &devices[1..])?;
        Ok(Self {
            module,
            vars,
            replicas,
            devices: devices.to_vec(),
            output_device: first.clone(),
        })
    }

    /// Gathers the outputs on `device` instead of the first device.
    pub fn with_output_device(mut self, device: Device) -> Self {
        self.output_device = device;
        self
    }

    /// The forward over the devices: with one device, the module itself.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if self.devices.len() == 1 {
            return Ok(self
                .module
                .forward_t(x, train)?
                .to_device(&self.output_device)?);
        }
        let inputs = scatter(x, &self.devices, 0)?;
        // PyTorch replicates at every forward: the replicas see the base model as it is now.
        for r in &self.replicas[..inputs.len() - 1] {
            copy_state(&self.vars, &r.vars)?;
        }
        let modules: Vec<&M> = std::iter::once(&self.module)
            .chain(self.replicas.iter().map(|r| &r.model))
            .collect();
        let outputs = parallel_apply(&modules, &inputs, train)?;
        gather(&outputs, &self.output_device, 0)
    }

    /// Adds each replica parameter's gradient to the base parameter's (summing in device
    /// order), so that `grads` holds the whole batch's gradient for an optimizer over the base
    /// model's parameters.
    pub fn reduce_gradients(&self, grads: &mut GradStore) -> Result<()> {
        let base = self.vars.named_parameters();
        let replicas: Vec<_> = self
            .replicas
            .iter()
            .map(|r| r.vars.named_parameters())
            .collect();
        for (i, (_, p)) in base.iter().enumerate() {
            let mut sum = grads.get(p.as_tensor()).cloned();
            for r in &replicas {
                let Some(g) = grads.remove(r[i].1.as_tensor()) else {
                    continue;
                };
                let g = transfer(&g, p.device())?;
                sum = Some(match sum {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
            if let Some(s) = sum {
                grads.insert(p.as_tensor(), s);
            }
        }
        Ok(())
    }

    /// The state dict `nn.DataParallel` saves: the module's, every key under `module.`.
    pub fn state_dict(&self) -> StateDict {
        self.vars.state_dict().add_prefix(MODULE_PREFIX)
    }

    /// Loads a state dict saved from `nn.DataParallel` (`module.` keys) or from the bare model.
    pub fn load_state_dict(
        &self,
        sd: &StateDict,
        opts: &LoadOptions,
    ) -> flambeau_core::Result<LoadReport> {
        self.vars.load_state_dict(&sd.strip_wrappers(), opts)
    }

    /// The wrapped model (PyTorch's `.module`).
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped model's parameters and buffers.
    pub fn vars(&self) -> &VarStore {
        &self.vars
    }

    /// The devices, the first holding the base model.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The wrapped model and its store, without the replicas.
    pub fn into_inner(self) -> (M, VarStore) {
        (self.module, self.vars)
    }
}

impl<M: ModuleT + Sync> ModuleT for DataParallel<M> {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        DataParallel::forward_t(self, x, train).map_err(candle_core::Error::wrap)
    }
}
