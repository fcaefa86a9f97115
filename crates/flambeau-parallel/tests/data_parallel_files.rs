//! `DataParallel` files and PyTorch's `nn.DataParallel`, both ways: a real `module.`-prefixed
//! file loads into `DataParallel` and into the bare model; flambeau's `DataParallel` state dict
//! loads strictly into `nn.DataParallel`, and the bare model's into the bare module.

use candle_core::{DType, Device, ModuleT, Tensor};
use flambeau_core::{LoadOptions, VarStore};
use flambeau_parallel::DataParallel;
use flambeau_serialize::{load_state_dict_file, save_state_dict, LoadConfig};
use flambeau_testkit::{assert_close, fixture, load_tensors, run_python, torch_python};

mod mlp;
use mlp::{build, Mlp};

fn data_parallel(devices: usize) -> DataParallel<Mlp> {
    let vs = VarStore::with_seed(&Device::Cpu, DType::F32, 11);
    DataParallel::new(
        build(vs.root()).unwrap(),
        vs,
        build,
        &vec![Device::Cpu; devices],
    )
    .unwrap()
}

#[test]
fn a_pytorch_data_parallel_file_loads_into_data_parallel_and_the_bare_model() {
    let sd = load_state_dict_file(
        fixture("flambeau-parallel", "parallel/mlp_data_parallel.pth"),
        &LoadConfig::default(),
    )
    .unwrap();
    assert!(sd.keys().all(|k| k.starts_with("module.")));
    let io = load_tensors(&fixture("flambeau-parallel", "parallel/mlp_io.safetensors"));

    let dp = data_parallel(3);
    dp.load_state_dict(&sd, &LoadOptions::default()).unwrap();
    assert_close(
        "DataParallel output",
        &dp.forward_t(&io["x"], false).unwrap(),
        &io["y"],
        1e-6,
        1e-6,
    );

    let vs = VarStore::new(&Device::Cpu, DType::F32);
    let bare = build(vs.root()).unwrap();
    vs.load_state_dict(&sd.strip_wrappers(), &LoadOptions::default())
        .unwrap();
    assert_close(
        "bare output",
        &bare.forward_t(&io["x"], false).unwrap(),
        &io["y"],
        1e-6,
        1e-6,
    );
}

const LOAD_IN_PYTORCH: &str = r#"
import sys, torch, torch.nn as nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 5)
    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))
dp_file, bare_file, x_file = sys.argv[1:]
dp = nn.DataParallel(Mlp())
dp.load_state_dict(torch.load(dp_file))            # strict, torch.load's defaults
bare = Mlp()
bare.load_state_dict(torch.load(bare_file))
sd = torch.load(dp_file)
consume_prefix_in_state_dict_if_present(sd, "module.")
again = Mlp()
again.load_state_dict(sd)
x = torch.load(x_file)["x"]
with torch.no_grad():
    outs = [m(x) for m in (dp, bare, again)]
print(" ".join(f"{v:.7e}" for v in outs[0].flatten().tolist()))
assert all(torch.equal(outs[0], o) for o in outs[1:])
"#;

#[test]
fn flambeau_data_parallel_files_load_into_pytorch() {
    let Some(python) = torch_python("flambeau_data_parallel_files_load_into_pytorch") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dp = data_parallel(2);
    let (dp_file, bare_file, x_file) = (
        dir.path().join("dp.pth"),
        dir.path().join("bare.pth"),
        dir.path().join("x.pth"),
    );
    save_state_dict(&dp.state_dict(), &dp_file).unwrap();
    save_state_dict(&dp.vars().state_dict(), &bare_file).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 12), &Device::Cpu).unwrap();
    let mut io = flambeau_core::StateDict::new();
    io.insert("x", x.clone());
    save_state_dict(&io, &x_file).unwrap();
    let printed = run_python(
        &python,
        LOAD_IN_PYTORCH,
        &[
            dp_file.to_str().unwrap(),
            bare_file.to_str().unwrap(),
            x_file.to_str().unwrap(),
        ],
    );
    let theirs: Vec<f32> = printed
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let ours = dp.forward_t(&x, false).unwrap();
    let theirs = Tensor::from_vec(theirs, ours.dims(), &Device::Cpu).unwrap();
    assert_close(
        "PyTorch's output of flambeau's file",
        &ours,
        &theirs,
        1e-5,
        1e-6,
    );
}
