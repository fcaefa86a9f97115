//! Build a small PyTorch-named model, try to load a checkpoint that was saved from
//! `nn.DataParallel`, read PyTorch's error plus flambeau's diagnosis, apply the fix, and then
//! fine-tune-style load a checkpoint with a different classification head.
//!
//! Run: `cargo run --release --example strict_load_diagnosis`

use anyhow::Result;
use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau::nn::{
    AdaptiveAvgPool2d, BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, Flatten, Linear, ReLU,
};
use flambeau::{KeyRule, LoadOptions, VarBuilder, VarStore};

/// `conv → bn → relu → pool → fc`, registered in PyTorch's order with PyTorch's names.
struct TinyNet {
    conv: Conv2d,
    bn: BatchNorm2d,
    fc: Linear,
}

impl TinyNet {
    fn new(vb: VarBuilder, classes: usize) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv1"), 3, 8, 3, conv_cfg)?,
            bn: BatchNorm2d::new(vb.pp("bn1"), 8, BatchNormConfig::default())?,
            fc: Linear::new(vb.pp("fc"), 8, classes, true)?,
        })
    }
}

impl ModuleT for TinyNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xs = self.bn.forward_t(&self.conv.forward_t(xs, train)?, train)?;
        let xs = ReLU.forward_t(&xs, train)?;
        let xs = AdaptiveAvgPool2d::new((1, 1)).forward_t(&xs, train)?;
        self.fc
            .forward_t(&Flatten::default().forward_t(&xs, train)?, train)
    }
}

fn model(classes: usize, seed: u64) -> Result<(VarStore, TinyNet)> {
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, seed);
    vs.set_model_name("TinyNet");
    let net = TinyNet::new(vs.root(), classes)?;
    Ok((vs, net))
}

fn main() -> Result<()> {
    // A "checkpoint" as a DataParallel training run saves it: every key starts with `module.`.
    let (trained, _) = model(10, 1)?;
    let checkpoint = trained.state_dict().add_prefix("module.");
    println!(
        "checkpoint keys: {:?}\n",
        checkpoint.keys().collect::<Vec<_>>()
    );

    let (vs, net) = model(10, 2)?;
    println!("== strict load, as `model.load_state_dict(torch.load(path))` would do it\n");
    match vs.load_state_dict(&checkpoint, &LoadOptions::default()) {
        Ok(_) => anyhow::bail!("the DataParallel checkpoint should not load as it is"),
        Err(err) => println!("{err}\n"),
    }

    println!("== the suggested fix\n");
    let fixed = LoadOptions::default().rule(KeyRule::strip_prefix("module."));
    let report = vs.load_state_dict(&checkpoint, &fixed)?;
    println!("{report}  ({} tensors loaded)\n", report.loaded.len());

    let x = Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &Device::Cpu)?;
    let logits = net.forward_t(&x, false)?;
    println!("logits of 2 images: {:?}\n", logits.dims());

    println!("== fine-tuning: a checkpoint trained for 100 classes into a 10-class model\n");
    let (imagenet_like, _) = model(100, 3)?;
    let (finetune, _) = model(10, 4)?;
    if let Err(err) = finetune.load_state_dict(&imagenet_like.state_dict(), &LoadOptions::default())
    {
        println!("{err}\n");
    }
    let report = finetune.load_state_dict(
        &imagenet_like.state_dict(),
        &LoadOptions::default().skip_shape_mismatch(true),
    )?;
    for m in &report.skipped_shape_mismatches {
        println!(
            "kept the new head's {}: {:?} in the checkpoint, {:?} in the model",
            m.key, m.checkpoint, m.model
        );
    }
    println!("{report}");
    Ok(())
}
