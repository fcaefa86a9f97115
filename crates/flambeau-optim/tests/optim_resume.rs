//! Cross-resume with PyTorch: PyTorch's optimizer + scheduler state continues in flambeau, and
//! flambeau's continues in PyTorch, both landing on PyTorch's own uninterrupted run.

mod common;

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use common::optim_fixture::{grads_of, params, step_grads};
use common::pyjson::{parse_float, to_json, to_value};
use flambeau_optim::lr_scheduler::{
    CosineAnnealingLr, LinearLr, LrScheduler, Scheduler, SequentialLr, StepLr,
};
use flambeau_optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use flambeau_testkit::{assert_close, fixture, load_json, load_tensors, run_python, torch_python};

fn build(name: &str, ps: &[Var]) -> (Box<dyn Optimizer>, Box<dyn LrScheduler>) {
    let groups = vec![ParamGroup::new(ps.to_vec())];
    if name == "sgd_steplr" {
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-3,
            ..Default::default()
        };
        let mut opt: Box<dyn Optimizer> = Box::new(Sgd::new(groups, cfg).unwrap());
        let sch = Scheduler::new(
            StepLr {
                step_size: 2,
                gamma: 0.5,
            },
            opt.as_mut(),
        )
        .unwrap();
        (opt, Box::new(sch))
    } else {
        let cfg = AdamConfig {
            lr: 1e-2,
            weight_decay: 0.05,
            ..AdamConfig::adamw()
        };
        let mut opt: Box<dyn Optimizer> = Box::new(Adam::new(groups, cfg).unwrap());
        let warm = Scheduler::new(LinearLr::new(0.2, 1.0, 2).unwrap(), opt.as_mut()).unwrap();
        let cos = Scheduler::new(
            CosineAnnealingLr {
                t_max: 6,
                eta_min: 0.0,
            },
            opt.as_mut(),
        )
        .unwrap();
        let seq =
            SequentialLr::new(opt.as_mut(), vec![Box::new(warm), Box::new(cos)], vec![2]).unwrap();
        (opt, Box::new(seq))
    }
}

const CASES: [&str; 2] = ["sgd_steplr", "adamw_warmup_cosine"];

#[test]
fn pytorch_state_continues_in_flambeau() {
    let resume = load_json(&fixture("flambeau-optim", "optim/resume.json"));
    let grads = load_tensors(&fixture("flambeau-optim", "optim/grads.safetensors"));
    for name in CASES {
        let t = load_tensors(&fixture(
            "flambeau-optim",
            &format!("optim/resume_{name}.safetensors"),
        ));
        let (_vs, ps) = params(&t);
        let (mut opt, mut sch) = build(name, &ps);
        for (i, p) in ps.iter().enumerate() {
            p.set(&t[&format!("step3.{i}")]).unwrap();
        }
        opt.load_state_dict(&to_value(&resume[name]["optimizer"], &t))
            .unwrap();
        sch.load_state_dict(&to_value(&resume[name]["scheduler"], &t))
            .unwrap();
        for step in 3..6 {
            opt.step(&grads_of(&ps, &step_grads(&grads, step))).unwrap();
            sch.step(opt.as_mut()).unwrap();
        }
        for (i, p) in ps.iter().enumerate() {
            assert_close(
                &format!("{name} param {i}"),
                p.as_tensor(),
                &t[&format!("step6.{i}")],
                1e-6,
                1e-7,
            );
        }
        let lr: Vec<f64> = resume[name]["lr_after_6"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| parse_float(v.as_str().unwrap()))
            .collect();
        assert_eq!(sch.last_lr(), lr, "{name}");
    }
}

const PYTORCH_CONTINUES: &str = r#"
import json, sys
import torch
from safetensors.torch import load_file, save_file
from torch.optim import SGD, AdamW
from torch.optim import lr_scheduler as S

name, state_json, state_tensors, grads_path, out = sys.argv[1:6]
tensors = load_file(state_tensors)
grads = load_file(grads_path)

def decode(v):
    if isinstance(v, dict):
        if "__float__" in v: return float(v["__float__"])
        if "__tensor__" in v: return tensors[v["__tensor__"]]
        if "__tuple__" in v: return tuple(decode(x) for x in v["__tuple__"])
        if "__counter__" in v:
            import collections
            return collections.Counter({decode(k): c for k, c in v["__counter__"]})
        return {decode(k): decode(x) for k, x in v["__dict__"]}
    if isinstance(v, list): return [decode(x) for x in v]
    return v

state = json.load(open(state_json))
ps = [torch.nn.Parameter(tensors[f"param.{i}"].clone()) for i in range(3)]
if name == "sgd_steplr":
    opt = SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)
    sch = S.StepLR(opt, step_size=2, gamma=0.5)
else:
    opt = AdamW(ps, lr=1e-2, weight_decay=0.05)
    sch = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.2, total_iters=2), S.CosineAnnealingLR(opt, T_max=6)], milestones=[2])
opt.load_state_dict(decode(state["optimizer"]))
sch.load_state_dict(decode(state["scheduler"]))
for step in range(3, 6):
    for i, p in enumerate(ps):
        p.grad = grads[f"step{step}.{i}"].clone()
    opt.step()
    sch.step()
save_file({f"step6.{i}": p.detach().clone() for i, p in enumerate(ps)}, out)
print(json.dumps([repr(x) for x in sch.get_last_lr()]))
"#;

#[test]
fn flambeau_state_continues_in_pytorch() {
    let Some(python) = torch_python("flambeau_state_continues_in_pytorch") else {
        return;
    };
    let grads_path = fixture("flambeau-optim", "optim/grads.safetensors");
    let grads = load_tensors(&grads_path);
    let resume = load_json(&fixture("flambeau-optim", "optim/resume.json"));
    for name in CASES {
        let t = load_tensors(&fixture(
            "flambeau-optim",
            &format!("optim/resume_{name}.safetensors"),
        ));
        let (_vs, ps) = params(&t);
        let (mut opt, mut sch) = build(name, &ps);
        for step in 0..3 {
            opt.step(&grads_of(&ps, &step_grads(&grads, step))).unwrap();
            sch.step(opt.as_mut()).unwrap();
        }
        let dir =
            std::env::temp_dir().join(format!("flambeau-resume-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let state = serde_json::json!({
            "optimizer": to_json(&opt.state_dict(), &mut tensors, "opt"),
            "scheduler": to_json(&sch.state_dict(), &mut tensors, "sch"),
        });
        for (i, p) in ps.iter().enumerate() {
            tensors.insert(format!("param.{i}"), p.as_tensor().copy().unwrap());
        }
        let (json_path, st_path, out) = (
            dir.join("state.json"),
            dir.join("state.safetensors"),
            dir.join("out.safetensors"),
        );
        std::fs::write(&json_path, state.to_string()).unwrap();
        candle_core::safetensors::save(&tensors, &st_path).unwrap();
        let printed = run_python(
            &python,
            PYTORCH_CONTINUES,
            &[
                name,
                json_path.to_str().unwrap(),
                st_path.to_str().unwrap(),
                grads_path.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        let theirs = load_tensors(&out);
        for i in 0..3 {
            assert_close(
                &format!("{name} param {i} continued in PyTorch"),
                &theirs[&format!("step6.{i}")],
                &t[&format!("step6.{i}")],
                1e-6,
                1e-7,
            );
        }
        let lrs: Vec<String> = serde_json::from_str(printed.trim()).unwrap();
        let expected: Vec<String> = resume[name]["lr_after_6"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            lrs, expected,
            "{name}: PyTorch's lr after resuming flambeau's scheduler"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
