//! Data-parallel training over CPU replicas against one device on the same global batches:
//! a model without batch statistics must follow the one-device run (1e-6), for SGD and AdamW,
//! on even and uneven splits (10 samples over 4 replicas: 3, 3, 3, 1; 6 over 4: three run).

use std::sync::Arc;

use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_core::{Value, VarBuilder, VarStore};
use flambeau_nn::loss::{cross_entropy, CrossEntropyOptions};
use flambeau_optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_parallel::{DataParallel, ReplicaGroup, ShardLoss};
use flambeau_testkit::max_abs;

mod mlp;
use mlp::{build, Mlp};

#[derive(Clone, Copy, Debug)]
enum Opt {
    Sgd,
    AdamW,
}

fn optimizer(kind: Opt, vs: &VarStore) -> Box<dyn Optimizer> {
    let groups = vec![ParamGroup::new(vs.parameters())];
    match kind {
        Opt::Sgd => Box::new(
            Sgd::new(
                groups,
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 1e-3,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        Opt::AdamW => Box::new(
            Adam::new(
                groups,
                AdamConfig {
                    lr: 1e-2,
                    ..AdamConfig::adamw()
                },
            )
            .unwrap(),
        ),
    }
}

/// `steps` global batches of `batch` samples.
fn batches(steps: usize, batch: usize) -> Vec<(Tensor, Tensor)> {
    (0..steps)
        .map(|s| {
            let x = Tensor::randn(0f32, 1.0, (batch, 12), &Device::Cpu).unwrap();
            let y: Vec<u32> = (0..batch).map(|i| ((i * 7 + s * 3) % 5) as u32).collect();
            (x, Tensor::new(y, &Device::Cpu).unwrap())
        })
        .collect()
}

fn loss_fn() -> ShardLoss {
    let opts = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    Arc::new(move |logits, labels| cross_entropy(logits, labels, &opts))
}

/// The model's state dict and the optimizer's state after training on `data`, with
/// `replicas` CPU replicas (0: the plain one-device loop, no group at all).
fn train(kind: Opt, replicas: usize, data: &[(Tensor, Tensor)]) -> (VarStore, Value, Vec<f64>) {
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 7);
    let model = build(vs.root()).unwrap();
    let mut opt = optimizer(kind, &vs);
    let loss = loss_fn();
    let mut group = (replicas > 0)
        .then(|| ReplicaGroup::new(&vs, build, &vec![Device::Cpu; replicas]).unwrap());
    let mut losses = Vec::new();
    for (x, y) in data {
        match group.as_mut() {
            Some(g) => {
                let out = g.step(&model, x, y, &loss).unwrap();
                assert_eq!(out.logits.dims(), [x.dim(0).unwrap(), 5]);
                opt.step(&out.grads).unwrap();
                losses.push(out.loss.to_scalar::<f64>().unwrap());
            }
            None => {
                let l = loss(&model.forward_t(x, true).unwrap(), y).unwrap();
                opt.step(&l.backward().unwrap()).unwrap();
                losses.push(l.to_scalar::<f32>().unwrap() as f64);
            }
        }
    }
    (vs, opt.state_dict(), losses)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).unwrap())
}

fn tensors(v: &Value, out: &mut Vec<Tensor>) {
    match v {
        Value::Tensor(t) => out.push(t.clone()),
        Value::Dict(d) => d.entries.iter().for_each(|(_, v)| tensors(v, out)),
        Value::List(l) | Value::Tuple(l) => l.iter().for_each(|v| tensors(v, out)),
        _ => {}
    }
}

fn assert_same_run(
    what: &str,
    a: &(VarStore, Value, Vec<f64>),
    b: &(VarStore, Value, Vec<f64>),
    tol: f64,
) {
    let (sa, sb) = (a.0.state_dict(), b.0.state_dict());
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, t) in sa.iter() {
        let d = max_diff(t, sb.get(k).unwrap());
        assert!(d <= tol, "{what}: parameter {k} differs by {d:e}");
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    tensors(&a.1, &mut ta);
    tensors(&b.1, &mut tb);
    assert_eq!(ta.len(), tb.len(), "{what}: optimizer state tensors");
    assert!(!ta.is_empty(), "{what}: the optimizer has state");
    for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
        let d = max_diff(x, y);
        assert!(
            d <= tol,
            "{what}: optimizer state tensor {i} differs by {d:e}"
        );
    }
    for (la, lb) in a.2.iter().zip(&b.2) {
        assert!((la - lb).abs() <= tol, "{what}: loss {la} vs {lb}");
    }
}

#[test]
fn replicas_follow_one_device_for_sgd_and_adamw() {
    for kind in [Opt::Sgd, Opt::AdamW] {
        for batch in [10, 12, 6] {
            let data = batches(4, batch);
            let one = train(kind, 0, &data);
            for replicas in [1, 2, 3, 4] {
                let what = format!("{kind:?}, batch {batch}, {replicas} replica(s)");
                let run = train(kind, replicas, &data);
                // One replica runs exactly the one-device arithmetic.
                let tol = if replicas == 1 { 0.0 } else { 1e-6 };
                assert_same_run(&what, &run, &one, tol);
            }
        }
    }
}

#[test]
fn shards_follow_torch_chunk() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let group = ReplicaGroup::new(&vs, build, &vec![Device::Cpu; 4]).unwrap();
    assert_eq!(group.shard_sizes(10), [3, 3, 3, 1]);
    assert_eq!(group.shard_sizes(6), [2, 2, 2]);
    assert_eq!(group.len(), 4);
}

/// A model that fails on a one-sample shard: the failing replica is named, nobody hangs.
struct FailsOnOne(Mlp);

impl ModuleT for FailsOnOne {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if x.dim(0)? == 1 {
            candle_core::bail!("a one-sample shard");
        }
        self.0.forward_t(x, train)
    }
}

#[test]
fn a_failing_replica_is_named_and_stops_the_step() {
    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let model = FailsOnOne(build(vs.root()).unwrap());
    let build_failing = |vb: VarBuilder| build(vb).map(FailsOnOne);
    let mut group = ReplicaGroup::new(&vs, build_failing, &vec![Device::Cpu; 4]).unwrap();
    let (x, y) = batches(1, 10).remove(0);
    let e = group
        .step(&model, &x, &y, &loss_fn())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("replica 3") && e.contains("a one-sample shard"),
        "{e}"
    );
    // The group is stopped for good: the next step fails at once instead of hanging.
    let e = group
        .step(&model, &x, &y, &loss_fn())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("stopped"), "{e}");
}

#[test]
fn data_parallel_forward_and_gradients_match_the_module() {
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 3);
    let model = build(vs.root()).unwrap();
    let (x, y) = batches(1, 10).remove(0);
    let loss = loss_fn();
    let l = loss(&model.forward_t(&x, true).unwrap(), &y).unwrap();
    let want = l.backward().unwrap();
    let want: Vec<Tensor> = vs
        .parameters()
        .iter()
        .map(|p| want.get(p.as_tensor()).unwrap().clone())
        .collect();
    let expected_out = model.forward_t(&x, false).unwrap();

    let dp = DataParallel::new(model, vs.clone(), build, &vec![Device::Cpu; 4]).unwrap();
    let out = dp.forward_t(&x, false).unwrap();
    assert_eq!(max_diff(&out, &expected_out), 0.0);
    let l = loss(&dp.forward_t(&x, true).unwrap(), &y).unwrap();
    let mut grads = l.backward().unwrap();
    dp.reduce_gradients(&mut grads).unwrap();
    for (p, w) in vs.parameters().iter().zip(&want) {
        let d = max_diff(grads.get(p.as_tensor()).unwrap(), w);
        assert!(d <= 1e-6, "gradient differs by {d:e}");
    }
}

#[test]
fn data_parallel_state_dict_has_module_keys_and_loads_either_form() {
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 3);
    let dp = DataParallel::new(
        build(vs.root()).unwrap(),
        vs,
        build,
        &[Device::Cpu, Device::Cpu],
    )
    .unwrap();
    let sd = dp.state_dict();
    let keys: Vec<&str> = sd.keys().collect();
    assert_eq!(
        keys,
        [
            "module.fc1.weight",
            "module.fc1.bias",
            "module.fc2.weight",
            "module.fc2.bias"
        ]
    );
    let other = VarStore::with_seed(&Device::Cpu, DType::F32, 99);
    let target = DataParallel::new(
        build(other.root()).unwrap(),
        other.clone(),
        build,
        &[Device::Cpu],
    )
    .unwrap();
    let plain = dp.vars().state_dict();
    for form in [&sd, &plain] {
        let report = target.load_state_dict(form, &Default::default()).unwrap();
        assert_eq!(report.loaded.len(), 4);
        let w = other.state_dict();
        assert_eq!(
            max_diff(
                w.get("fc1.weight").unwrap(),
                plain.get("fc1.weight").unwrap()
            ),
            0.0
        );
    }
}
