//! `ReplicaGroup::with_backend` with the host backend: the same group as `ReplicaGroup::new`.

use std::sync::Arc;

use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_core::{Init, VarBuilder, VarStore};
use flambeau_parallel::{Backend, ReplicaGroup, ShardLoss, NCCL_AVAILABLE};

struct Scale(Tensor);

impl ModuleT for Scale {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.0)
    }
}

fn build(vb: VarBuilder) -> flambeau_core::Result<Scale> {
    Ok(Scale(vb.param("w", 1, Init::Const(2.0))?))
}

#[test]
fn host_backend_gives_the_whole_batch_gradient_over_uneven_shards() -> anyhow::Result<()> {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let model = build(vs.root())?;
    let x = Tensor::arange(1f32, 11.0, &Device::Cpu)?; // 10 samples over 4 ranks: 3, 3, 3, 1
    let y = Tensor::arange(0f32, 10.0, &Device::Cpu)?;
    let loss: ShardLoss = Arc::new(|p, t| (p - t)?.sqr()?.mean_all());
    let mut group =
        ReplicaGroup::with_backend(&vs, build, &vec![Device::Cpu; 4], Backend::default())?;
    assert_eq!(group.shard_sizes(10), [3, 3, 3, 1]);
    let out = group.step(&model, &x, &y, &loss)?;

    let whole = loss(&model.forward_t(&x, true)?, &y)?;
    let want = whole.backward()?;
    let w = &vs.parameters()[0];
    let got = out.grads.get(w.as_tensor()).expect("a gradient for w");
    let want = want.get(w.as_tensor()).expect("a gradient for w");
    let (got, want) = (got.to_vec1::<f32>()?[0], want.to_vec1::<f32>()?[0]);
    assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
    let whole = whole.to_scalar::<f32>()? as f64;
    let loss = out.loss.to_scalar::<f64>()?;
    assert!((loss - whole).abs() <= 1e-5 * whole, "{loss} vs {whole}");
    Ok(())
}

#[test]
fn nccl_available_follows_the_feature() {
    assert_eq!(NCCL_AVAILABLE, cfg!(feature = "nccl"));
}
