//! The `cargo xtask bench train` workloads in plain candle (candle-nn layers, candle's own
//! conv/pool/batch-norm and autograd), for comparison; prints one JSON line.
//!
//! `bench_train_candle ARCH train|eval BATCH SIZE STEPS`
//!
//! Plain candle cannot back-propagate a max-pool whose kernel differs from its stride, so in
//! training the stem's 3×3/2 max-pool is a 2×2/2 one (the same output shape); its SGD has no
//! momentum. Everything else is torchvision's ResNet.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{
    batch_norm, conv2d_no_bias, linear, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear,
    Optimizer, VarBuilder, VarMap, SGD,
};

const WARMUP: usize = 3;

struct Block {
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

fn conv_bn(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
) -> Result<(Conv2d, BatchNorm)> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    Ok((
        conv2d_no_bias(cin, cout, k, cfg, vb.pp("conv"))?,
        batch_norm(cout, BatchNormConfig::default(), vb.pp("bn"))?,
    ))
}

impl Block {
    /// Basic (two 3×3) or bottleneck (1×1, 3×3, 1×1 ×4) block.
    fn new(
        vb: VarBuilder,
        cin: usize,
        width: usize,
        stride: usize,
        bottleneck: bool,
    ) -> Result<Self> {
        let (convs, cout) = if bottleneck {
            let out = width * 4;
            (
                vec![
                    conv_bn(vb.pp("a"), cin, width, 1, 1)?,
                    conv_bn(vb.pp("b"), width, width, 3, stride)?,
                    conv_bn(vb.pp("c"), width, out, 1, 1)?,
                ],
                out,
            )
        } else {
            (
                vec![
                    conv_bn(vb.pp("a"), cin, width, 3, stride)?,
                    conv_bn(vb.pp("b"), width, width, 3, 1)?,
                ],
                width,
            )
        };
        let downsample = (stride != 1 || cin != cout)
            .then(|| conv_bn(vb.pp("down"), cin, cout, 1, stride))
            .transpose()?;
        Ok(Self { convs, downsample })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            y = bn.forward_t(&conv.forward(&y)?, train)?;
            if i != last {
                y = y.relu()?;
            }
        }
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

struct ResNet {
    stem: (Conv2d, BatchNorm),
    blocks: Vec<Block>,
    fc: Linear,
}

impl ResNet {
    fn new(vb: VarBuilder, arch: &str) -> Result<Self> {
        let (layers, bottleneck) = match arch {
            "resnet18" => ([2, 2, 2, 2], false),
            "resnet34" => ([3, 4, 6, 3], false),
            "resnet50" => ([3, 4, 6, 3], true),
            other => bail!("plain candle bench: no {other}"),
        };
        let stem_cfg = Conv2dConfig {
            padding: 3,
            stride: 2,
            ..Default::default()
        };
        let stem = (
            conv2d_no_bias(3, 64, 7, stem_cfg, vb.pp("conv1"))?,
            batch_norm(64, BatchNormConfig::default(), vb.pp("bn1"))?,
        );
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, &count) in layers.iter().enumerate() {
            let width = 64 << stage;
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let vb = vb.pp(format!("layer{}.{i}", stage + 1));
                blocks.push(Block::new(vb, cin, width, stride, bottleneck)?);
                cin = if bottleneck { width * 4 } else { width };
            }
        }
        let fc = linear(cin, 10, vb.pp("fc"))?;
        Ok(Self { stem, blocks, fc })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self
            .stem
            .1
            .forward_t(&self.stem.0.forward(x)?, train)?
            .relu()?;
        // After a ReLU, zero padding is the same as PyTorch's -inf padding.
        let mut y = if train {
            y.max_pool2d_with_stride(2, 2)?
        } else {
            y.pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2)?
        };
        for b in &self.blocks {
            y = b.forward(&y, train)?;
        }
        self.fc.forward(&y.mean((2, 3))?)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [arch, mode, batch, size, steps] = args.as_slice() else {
        bail!("usage: bench_train_candle ARCH train|eval BATCH SIZE STEPS");
    };
    let (batch, size, steps): (usize, usize, usize) = (
        batch.parse().context("BATCH")?,
        size.parse().context("SIZE")?,
        steps.parse().context("STEPS")?,
    );
    let train = mode == "train";
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = ResNet::new(VarBuilder::from_varmap(&varmap, DType::F32, &device), arch)?;
    let mut opt = SGD::new(varmap.all_vars(), 0.01)?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, batch, &device)?;
    let mut times = Vec::new();
    for i in 0..WARMUP + steps {
        let t0 = Instant::now();
        let logits = model.forward(&x, train)?;
        if train {
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
        } else {
            logits.flatten_all()?.to_vec1::<f32>()?;
        }
        if i >= WARMUP {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step = median(times);
    println!(r#"{{"img_s":{},"step_s":{step}}}"#, batch as f64 / step);
    Ok(())
}
