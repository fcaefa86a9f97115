//! `Checkpoint` and `CheckpointManager`: the layouts training scripts save (written here by hand
//! and, when PyTorch is installed, by real PyTorch scripts), and the run directory's files.

use candle_core::{Device, Tensor};
use flambeau_core::{Dict, DictKind, StateDict, Value};
use flambeau_serialize::{Checkpoint, CheckpointManager, Layout, LoadConfig};
use flambeau_testkit::{run_python, torch_python};

fn weights() -> StateDict {
    let mut sd = StateDict::new();
    let w = Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap();
    sd.insert("fc.weight", w.reshape((2, 3)).unwrap());
    sd.insert(
        "fc.bias",
        Tensor::new(&[0.5f32, -0.5], &Device::Cpu).unwrap(),
    );
    sd
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    let mut d = Dict::new(DictKind::Plain);
    for (k, v) in entries {
        d.insert(k, v);
    }
    Value::Dict(d)
}

fn optimizer_state(lr: f64) -> Value {
    let mut group = Dict::new(DictKind::Plain);
    group.insert("lr", lr);
    group.insert("params", Value::List(vec![Value::Int(0), Value::Int(1)]));
    dict(vec![
        ("state", Value::Dict(Dict::new(DictKind::Plain))),
        ("param_groups", Value::List(vec![Value::Dict(group)])),
    ])
}

fn keys(d: &Dict) -> Vec<&str> {
    d.str_keys().collect()
}

#[test]
fn tutorial_layout_round_trips_through_a_file() {
    let mut ckpt = Checkpoint::new(weights());
    ckpt.optimizer = Some(optimizer_state(0.1));
    ckpt.scheduler = Some(dict(vec![("last_epoch", Value::Int(4))]));
    ckpt.epoch = 3;
    ckpt.global_step = 120;
    ckpt.loss = Some(0.25);
    ckpt.best_metric = Some(0.875);
    ckpt.data_state = Some(dict(vec![
        ("seed", Value::Int(7)),
        ("batch", Value::Int(2)),
    ]));
    ckpt.extra.insert("arch", "resnet18");
    ckpt.extra.insert("note", "warm restart");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.pth");
    ckpt.save(&path).unwrap();

    // On disk: the tutorial's keys first, then flambeau's, then the extras in order.
    let raw = flambeau_serialize::load(&path, &LoadConfig::default()).unwrap();
    let expected = [
        "epoch",
        "global_step",
        "model_state_dict",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "loss",
        "best_metric",
        "data_state",
    ];
    assert_eq!(Checkpoint::STATE_KEYS, expected);
    assert_eq!(
        keys(raw.as_dict().unwrap()),
        [expected.as_slice(), &["arch", "note"]].concat()
    );

    let back = Checkpoint::load(&path, &LoadConfig::default()).unwrap();
    assert_eq!(back.layout, Layout::Tutorial);
    assert_eq!((back.epoch, back.global_step), (3, 120));
    assert_eq!((back.loss, back.best_metric), (Some(0.25), Some(0.875)));
    assert_eq!(
        back.model.keys().collect::<Vec<_>>(),
        ["fc.weight", "fc.bias"]
    );
    let w = back.model.get("fc.weight").unwrap();
    assert_eq!(w.to_vec2::<f32>().unwrap(), [[0., 1., 2.], [3., 4., 5.]]);
    let opt = back.optimizer.unwrap();
    let lr = &opt.get("param_groups").unwrap().as_seq().unwrap()[0];
    assert_eq!(lr.get("lr").and_then(Value::as_f64), Some(0.1));
    let sched = back.scheduler.unwrap();
    assert_eq!(sched.get("last_epoch").and_then(Value::as_i64), Some(4));
    let data = back.data_state.unwrap();
    assert_eq!(data.get("batch").and_then(Value::as_i64), Some(2));
    assert_eq!(keys(&back.extra), ["arch", "note"]);
}

#[test]
fn imagenet_example_layout_counts_finished_epochs_and_keeps_best_acc1() {
    let best = Tensor::new(&[71.5f32], &Device::Cpu).unwrap(); // often saved as a tensor
    let file = dict(vec![
        ("epoch", Value::Int(5)),
        ("arch", "resnet50".into()),
        ("state_dict", weights().to_value()),
        ("best_acc1", Value::Tensor(best.squeeze(0).unwrap())),
        ("optimizer", optimizer_state(0.01)),
        ("scheduler", dict(vec![("last_epoch", Value::Int(5))])),
    ]);
    let ckpt = Checkpoint::from_value(&file).unwrap();
    assert_eq!(ckpt.layout, Layout::ImageNetExample);
    assert_eq!(
        ckpt.epoch, 4,
        "the file's epoch 5 = five finished, last index 4"
    );
    assert_eq!(ckpt.best_metric, Some(71.5));
    assert!(ckpt.optimizer.is_some() && ckpt.scheduler.is_some());
    assert_eq!(keys(&ckpt.extra), ["arch"]);
    assert_eq!(ckpt.model.len(), 2);
}

#[test]
fn torchvision_references_layout_keeps_args() {
    let file = dict(vec![
        ("model", weights().to_value()),
        ("optimizer", optimizer_state(0.5)),
        ("lr_scheduler", dict(vec![("last_epoch", Value::Int(10))])),
        ("epoch", Value::Int(9)),
        ("args", dict(vec![("lr", Value::Float(0.5))])),
    ]);
    let ckpt = Checkpoint::from_value(&file).unwrap();
    assert_eq!(ckpt.layout, Layout::TorchvisionReferences);
    assert_eq!(ckpt.epoch, 9);
    assert_eq!(
        ckpt.scheduler
            .unwrap()
            .get("last_epoch")
            .and_then(Value::as_i64),
        Some(10)
    );
    assert_eq!(keys(&ckpt.extra), ["args"]);
}

#[test]
fn lightning_layout_resumes_the_first_optimizer_and_scheduler() {
    let file = dict(vec![
        ("epoch", Value::Int(2)),
        ("global_step", Value::Int(300)),
        ("pytorch-lightning_version", "2.4.0".into()),
        ("state_dict", weights().to_value()),
        (
            "optimizer_states",
            Value::List(vec![optimizer_state(0.3), optimizer_state(0.7)]),
        ),
        ("lr_schedulers", Value::List(vec![])),
    ]);
    let ckpt = Checkpoint::from_value(&file).unwrap();
    assert_eq!(ckpt.layout, Layout::Lightning);
    assert_eq!((ckpt.epoch, ckpt.global_step), (2, 300));
    let opt = ckpt.optimizer.unwrap();
    let group = &opt.get("param_groups").unwrap().as_seq().unwrap()[0];
    assert_eq!(group.get("lr").and_then(Value::as_f64), Some(0.3));
    assert!(ckpt.scheduler.is_none());
    assert_eq!(keys(&ckpt.extra), ["pytorch-lightning_version"]);
}

#[test]
fn weights_alone_give_a_checkpoint_with_nothing_trained() {
    for file in [
        weights().to_value(),
        dict(vec![("state_dict", weights().to_value())]),
    ] {
        let ckpt = Checkpoint::from_value(&file).unwrap();
        assert_eq!(ckpt.layout, Layout::WeightsOnly);
        assert_eq!((ckpt.epoch, ckpt.model.len()), (-1, 2));
        assert!(ckpt.optimizer.is_none() && ckpt.extra.is_empty());
    }
}

#[test]
fn files_without_weights_or_with_odd_fields_get_clear_errors() {
    let error_of = |entries| {
        Checkpoint::from_value(&dict(entries))
            .unwrap_err()
            .to_string()
    };
    let err = error_of(vec![
        ("weights_v2", Value::Int(3)),
        ("notes", "hello".into()),
    ]);
    assert!(
        err.contains("top-level keys: weights_v2 (int), notes (str)"),
        "{err}"
    );

    let err = error_of(vec![
        ("model_state_dict", "not weights".into()),
        ("epoch", Value::Int(1)),
    ]);
    assert!(
        err.contains("`model_state_dict` of this PyTorch tutorial layout"),
        "{err}"
    );

    let err = error_of(vec![
        ("model_state_dict", weights().to_value()),
        ("epoch", "three".into()),
    ]);
    assert!(
        err.contains("`epoch` should be a number, the file has a str"),
        "{err}"
    );
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn at_epoch(epoch: i64) -> Checkpoint {
    let mut c = Checkpoint::new(weights());
    c.epoch = epoch;
    c.global_step = 10 * (epoch + 1);
    c
}

#[test]
fn manager_keeps_last_best_and_the_last_k_epochs() {
    let dir = tempfile::tempdir().unwrap();
    // A process killed mid-save leaves a temporary file; the next run removes it.
    std::fs::write(dir.path().join(".last.pth.tmp-4242"), b"torn").unwrap();
    let m = CheckpointManager::new(dir.path(), 2).unwrap();
    assert!(m.latest().is_none());
    for epoch in 0..5 {
        m.save_epoch(&at_epoch(epoch), epoch == 1).unwrap();
    }
    assert_eq!(
        names(dir.path()),
        ["best.pth", "epoch-0004.pth", "epoch-0005.pth", "last.pth"]
    );
    let cfg = LoadConfig::default();
    assert_eq!(
        Checkpoint::load(m.latest().unwrap(), &cfg).unwrap().epoch,
        4
    );
    // best.pth outlives the pruned epoch file it was saved as.
    assert_eq!(Checkpoint::load(m.best_path(), &cfg).unwrap().epoch, 1);

    // A mid-epoch save replaces last.pth only; the epoch file it pointed at is untouched.
    m.save_last(&at_epoch(5)).unwrap();
    assert_eq!(Checkpoint::load(m.last_path(), &cfg).unwrap().epoch, 5);
    assert_eq!(Checkpoint::load(m.epoch_path(4), &cfg).unwrap().epoch, 4);
}

#[test]
fn manager_with_keep_zero_writes_only_last_and_best() {
    let dir = tempfile::tempdir().unwrap();
    let m = CheckpointManager::new(dir.path(), 0).unwrap();
    m.save_epoch(&at_epoch(0), true).unwrap();
    m.save_epoch(&at_epoch(1), false).unwrap();
    assert_eq!(names(dir.path()), ["best.pth", "last.pth"]);
    let cfg = LoadConfig::default();
    assert_eq!(Checkpoint::load(m.best_path(), &cfg).unwrap().epoch, 0);
    assert_eq!(Checkpoint::load(m.last_path(), &cfg).unwrap().epoch, 1);
}

/// Real PyTorch writes the three common layouts; flambeau recognises each and reads the same
/// epoch, metric and optimizer settings.
#[test]
fn layouts_written_by_pytorch_are_recognised() {
    let Some(python) = torch_python("layouts_written_by_pytorch_are_recognised") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, argparse, torch
d = sys.argv[1]
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
model(torch.randn(2, 3, 8, 8)).sum().backward()
opt.step(); sched.step()
torch.save({'epoch': 3, 'model_state_dict': model.state_dict(),
            'optimizer_state_dict': opt.state_dict(), 'loss': torch.tensor(0.5)}, f'{d}/tutorial.pth')
torch.save({'epoch': 4, 'arch': 'tiny', 'state_dict': model.state_dict(),
            'best_acc1': torch.tensor(61.25), 'optimizer': opt.state_dict(),
            'scheduler': sched.state_dict()}, f'{d}/imagenet.pth')
torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict(),
            'lr_scheduler': sched.state_dict(), 'epoch': 7,
            'args': argparse.Namespace(lr=0.1, epochs=90)}, f'{d}/references.pth')
print("ok")
"#;
    let out = run_python(&python, script, &[dir.path().to_str().unwrap()]);
    assert!(out.contains("ok"), "{out}");
    // The Namespace in `args` (which torch.load's weights_only default refuses) loads as an
    // inert object.
    let cfg = LoadConfig::default();
    let cases = [
        ("tutorial.pth", Layout::Tutorial, 3, Some(0.5), None),
        (
            "imagenet.pth",
            Layout::ImageNetExample,
            3,
            None,
            Some(61.25),
        ),
        (
            "references.pth",
            Layout::TorchvisionReferences,
            7,
            None,
            None,
        ),
    ];
    for (file, layout, epoch, loss, best) in cases {
        let ckpt = Checkpoint::load(dir.path().join(file), &cfg).unwrap();
        assert_eq!(ckpt.layout, layout, "{file}");
        assert_eq!(ckpt.epoch, epoch, "{file}");
        assert_eq!((ckpt.loss, ckpt.best_metric), (loss, best), "{file}");
        assert_eq!(
            ckpt.model.len(),
            7,
            "{file}: conv w/b + bn w/b/mean/var/num_batches"
        );
        let opt = ckpt.optimizer.unwrap();
        let group = &opt.get("param_groups").unwrap().as_seq().unwrap()[0];
        assert_eq!(group.get("momentum").and_then(Value::as_f64), Some(0.9));
        assert_eq!(opt.get("state").unwrap().as_dict().unwrap().len(), 4);
    }
}
