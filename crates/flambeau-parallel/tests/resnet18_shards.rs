//! Two SGD steps of a ResNet-18 trained over 2 and over 4 CPU replicas (the uneven
//! 10 = 3 + 3 + 3 + 1 split), against PyTorch computing DistributedDataParallel's arithmetic:
//! batch norm per shard, rank 0's running statistics kept, the shards' losses weighted by their
//! share of the batch and the gradients summed in rank order (xtask/fixtures/parallel.py).
//! In float64 on both sides: in float32 a ReLU input within ~1e-6 of zero may round either way,
//! and in layer4 (few positions per channel) one such flip moves a gradient by percents.

use std::sync::Arc;

use candle_core::{DType, Device};
use flambeau_core::{LoadOptions, StateDict, VarBuilder, VarStore};
use flambeau_nn::loss::{cross_entropy, CrossEntropyOptions};
use flambeau_optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_parallel::{ReplicaGroup, ShardLoss};
use flambeau_testkit::{assert_close, large_fixture, load_tensors, max_abs};
use flambeau_vision::models::{ResNet, ResNetConfig};

#[test]
fn resnet18_over_2_and_4_replicas_matches_pytorch_per_shard_batch_norm() {
    let (Some(init), Some(steps)) = (
        large_fixture("resnet18_shards_init.safetensors"),
        large_fixture("resnet18_shards.safetensors"),
    ) else {
        return;
    };
    let t = load_tensors(&steps);
    let init: StateDict = load_tensors(&init).into_iter().collect();
    let options = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let loss: ShardLoss = Arc::new(move |logits, labels| cross_entropy(logits, labels, &options));
    let build = |vb: VarBuilder| ResNet::new(vb, ResNetConfig::resnet18(10));
    for replicas in [2, 4] {
        let vs = VarStore::new(&Device::Cpu, DType::F64);
        let model = build(vs.root()).unwrap();
        vs.load_state_dict(&init, &LoadOptions::default()).unwrap();
        let mut group = ReplicaGroup::new(&vs, build, &vec![Device::Cpu; replicas]).unwrap();
        let config = SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            ..Default::default()
        };
        let mut opt = Sgd::new(vec![ParamGroup::new(vs.parameters())], config).unwrap();
        for step in 0..2 {
            let out = group
                .step(
                    &model,
                    &t[&format!("x{step}")],
                    &t[&format!("y{step}")],
                    &loss,
                )
                .unwrap();
            opt.step(&out.grads).unwrap();
            let expected = t[&format!("r{replicas}.loss{step}")]
                .to_scalar::<f64>()
                .unwrap();
            let loss = out.loss.to_scalar::<f64>().unwrap();
            assert!(
                (loss - expected).abs() < 1e-9,
                "{replicas} replicas, loss of step {step}: {loss} vs PyTorch {expected}"
            );
        }
        for (k, v) in vs.state_dict().iter() {
            let expected = &t[&format!("r{replicas}.after.{k}")];
            let what = format!("{replicas} replicas: {k} after two steps");
            if k.ends_with("num_batches_tracked") {
                assert_eq!(v.to_scalar::<i64>().unwrap(), 2, "{what}");
            } else {
                assert_close(&what, v, expected, 1e-8, 1e-8 * max_abs(expected));
            }
        }
    }
}
