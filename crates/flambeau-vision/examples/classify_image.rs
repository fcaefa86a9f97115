//! Classify an image with ResNet weights that PyTorch trained.
//!
//! ```text
//! cargo run --release -p flambeau-vision --example classify_image -- WEIGHTS IMAGE [ARCH] [CLASSES]
//! ```
//! `WEIGHTS` is anything `torch.save` wrote (a bare state_dict, a DataParallel one, a training
//! checkpoint) or a `.safetensors` file; `ARCH` defaults to the one recognised in the weights; the
//! number of classes is read from the weights' `fc.weight`. `CLASSES` is an optional text file with one name per line.
//! Nothing is downloaded: export weights from torchvision yourself, e.g.
//! `torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), "resnet18.pth")`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor, D};
use flambeau_core::VarStore;
use flambeau_vision::data::{Dataset, ImageFolder, Normalize};
use flambeau_vision::models::{ResNet, ResNetCheckpoint, ResNetConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(weights), Some(image)) = (args.first(), args.get(1)) else {
        bail!("usage: classify_image WEIGHTS IMAGE [ARCH] [CLASSES]");
    };
    let device = Device::Cpu;
    // Any accepted file: .pth (zip or legacy), .safetensors, DataParallel / torch.compile
    // wrappers, whole training checkpoints; the architecture and class count are recognised.
    let ckpt = ResNetCheckpoint::open(weights, &device)?;
    let arch = match args.get(2) {
        Some(a) => a.clone(),
        None => ckpt
            .arch
            .clone()
            .context("cannot tell which ResNet the weights hold: pass ARCH")?,
    };
    let vs = VarStore::new(&device, DType::F32);
    let model = ResNet::new(vs.root(), ResNetConfig::by_name(&arch, ckpt.classes()?)?)?;
    let report = ckpt.load_into(&vs)?;
    eprintln!("loaded {} tensors from {weights}", report.loaded.len());

    // ImageFolder does the decoding and resizing; point it at a one-image folder view.
    let dir = tempfile_dir(image)?;
    let mut sample = ImageFolder::new(&dir, 224)?.get(0)?;
    std::fs::remove_dir_all(&dir).ok();
    Normalize::imagenet().apply(&mut sample);
    let x = Tensor::from_vec(sample.pixels, (1, 3, sample.height, sample.width), &device)?;
    let probs = candle_nn::ops::softmax(&model.forward_t(&x, false)?, D::Minus1)?.squeeze(0)?;
    let probs: Vec<f32> = probs.to_vec1()?;
    let names: Option<Vec<String>> = args
        .get(3)
        .map(|p| std::fs::read_to_string(p).map(|s| s.lines().map(String::from).collect()))
        .transpose()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    for &c in order.iter().take(5) {
        let name = names
            .as_ref()
            .and_then(|n| n.get(c))
            .map_or_else(|| format!("class {c}"), Clone::clone);
        println!("{:6.2}%  {name}", 100.0 * probs[c]);
    }
    Ok(())
}

/// A temporary `root/image/<file>` tree so that ImageFolder can read a single file.
fn tempfile_dir(image: &str) -> Result<std::path::PathBuf> {
    let src = std::path::Path::new(image);
    let root = std::env::temp_dir().join(format!("flambeau-classify-{}", std::process::id()));
    let class = root.join("image");
    std::fs::create_dir_all(&class)?;
    let name = src.file_name().context("IMAGE must be a file")?;
    std::fs::copy(src, class.join(name)).with_context(|| format!("reading {image}"))?;
    Ok(root)
}
