//! [`ResNet::seeded`]: a freshly initialised ResNet whose weights a seed decides.

use candle_core::{DType, Device};
use flambeau_core::VarStore;

use super::resnet::{ResNet, ResNetConfig};
use crate::Result;

impl ResNet {
    /// A new ResNet of `config` with torchvision's initialisation drawn from `seed` (f32, on
    /// `device`), and the store that owns its weights: the same seed gives the same weights.
    ///
    /// ```
    /// use candle_core::Device;
    /// use flambeau_vision::models::{ResNet, ResNetConfig};
    /// # fn main() -> flambeau_vision::Result<()> {
    /// let (vs, model) = ResNet::seeded(ResNetConfig::by_name("resnet18", 10)?, &Device::Cpu, 0)?;
    /// assert_eq!(model.config().num_classes, 10);
    /// assert!(vs.state_dict().contains_key("fc.weight"));
    /// # Ok(()) }
    /// ```
    pub fn seeded(config: ResNetConfig, device: &Device, seed: u64) -> Result<(VarStore, Self)> {
        let vs = VarStore::with_seed(device, DType::F32, seed);
        let model = ResNet::new(vs.root(), config)?;
        Ok((vs, model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_decides_the_weights() {
        let config = || ResNetConfig::by_name("resnet18", 3).unwrap();
        let weight = |seed| {
            let (vs, _) = ResNet::seeded(config(), &Device::Cpu, seed).unwrap();
            let w = vs.state_dict().get("conv1.weight").unwrap().clone();
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(weight(1), weight(1));
        assert_ne!(weight(1), weight(2));
    }
}
