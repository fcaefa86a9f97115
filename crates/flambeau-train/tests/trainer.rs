//! The Trainer in-process, as a library user drives it: a tiny linear classifier on the
//! synthetic shapes, stopped mid-epoch (by `max_steps` or by a stop request from a callback),
//! resumed from the run directory, and compared bit for bit with an uninterrupted run.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use flambeau_core::{Value, VarBuilder, VarStore};
use flambeau_nn::Linear;
use flambeau_optim::lr_scheduler::{Scheduler, StepLr};
use flambeau_optim::{ParamGroup, Sgd, SgdConfig};
use flambeau_parallel::{HostCollective, ProcessGroup, ReplicaGroup};
use flambeau_serialize::{Checkpoint, CheckpointManager, LoadConfig};
use flambeau_testkit::{assert_close_value, assert_same_value};
use flambeau_train::{
    BatchEnd, Callback, EpochEnd, FitOutcome, Resume, StopReason, StopSignal, Trainer,
    TrainerConfig,
};
use flambeau_vision::data::{Augment, DataLoader, LoaderConfig, Normalize, Synthetic};

/// Four batches per epoch, two epochs.
const EPOCHS: u64 = 2;

/// The user's own model: flattened pixels into a linear layer.
struct Tiny {
    fc: Linear,
}

impl ModuleT for Tiny {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward(&x.flatten_from(1)?)
    }
}

/// A trainer over `dir`, at the start of a run; `weights_seed` only matters for new runs.
fn trainer(dir: &Path, weights_seed: u64, max_steps: Option<u64>) -> Trainer<Tiny> {
    trainer_with(dir, weights_seed, max_steps, 0.01, false)
}

/// [`trainer`] with a learning rate and [`TrainerConfig::overwrite`].
fn trainer_with(
    dir: &Path,
    weights_seed: u64,
    max_steps: Option<u64>,
    lr: f64,
    overwrite: bool,
) -> Trainer<Tiny> {
    trainer_on(
        dir,
        weights_seed,
        max_steps,
        lr,
        overwrite,
        &Data::default(),
    )
}

/// The training data of a run: examples, batch size, and the shard a rank reads.
struct Data {
    examples: usize,
    batch_size: usize,
    shard: Option<(usize, usize)>,
}

impl Default for Data {
    fn default() -> Self {
        Self {
            examples: 64,
            batch_size: 16,
            shard: None,
        }
    }
}

/// [`trainer_with`] on `data`.
fn trainer_on(
    dir: &Path,
    weights_seed: u64,
    max_steps: Option<u64>,
    lr: f64,
    overwrite: bool,
    data: &Data,
) -> Trainer<Tiny> {
    let device = Device::Cpu;
    let vs = VarStore::with_seed(&device, DType::F32, weights_seed);
    let model = Tiny {
        fc: Linear::new(vs.root().pp("fc"), 3 * 32 * 32, 10, true).unwrap(),
    };
    let mut opt = Box::new(
        Sgd::new(
            vec![ParamGroup::new(vs.parameters())],
            SgdConfig {
                lr,
                momentum: 0.9,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let sched = Scheduler::new(
        StepLr {
            step_size: 1,
            gamma: 0.5,
        },
        opt.as_mut(),
    )
    .unwrap();
    let config = LoaderConfig {
        batch_size: data.batch_size,
        shuffle: true,
        augment: Some(Augment::default()),
        normalize: Some(Normalize::cifar10()),
        seed: 3,
        ..Default::default()
    };
    let val_config = LoaderConfig {
        shuffle: false,
        augment: None,
        ..config.clone()
    };
    let mut train = DataLoader::new(
        Arc::new(Synthetic::train(data.examples, 3)),
        config,
        &device,
    )
    .unwrap();
    if let Some((rank, world)) = data.shard {
        train = train.sharded(rank, world).unwrap();
    }
    let val = DataLoader::new(Arc::new(Synthetic::val(16, 3)), val_config, &device).unwrap();
    let manager = CheckpointManager::new(dir, 2).unwrap();
    let config = TrainerConfig {
        epochs: EPOCHS,
        max_steps,
        overwrite,
        ..Default::default()
    };
    Trainer::new(model, vs, opt, train, val, manager, config)
        .with_scheduler(Box::new(sched), false)
        .with_extra("arch", "tiny")
}

/// A new trainer resumed from the run directory's latest checkpoint, as `--resume auto` does.
fn resumed(dir: &Path) -> Trainer<Tiny> {
    let mut t = trainer(dir, 99, None);
    let (_, ckpt) = Resume::Auto
        .open(t.manager(), &Device::Cpu)
        .unwrap()
        .expect("a checkpoint to resume");
    t.resume(&ckpt).unwrap();
    t
}

/// Model, optimizer, scheduler, counters, data position and metrics equal.
fn assert_same_run(a: &Path, b: &Path) {
    let load = |d: &Path| flambeau_serialize::load(d.join("last.pth"), &LoadConfig::default());
    let (x, y) = (load(a).unwrap(), load(b).unwrap());
    for key in Checkpoint::STATE_KEYS {
        assert_same_value(x.get(key).unwrap(), y.get(key).unwrap(), key);
    }
    let csv = |d: &Path| -> Vec<String> {
        std::fs::read_to_string(d.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string()) // all but the seconds
            .collect()
    };
    assert_eq!(csv(a), csv(b));
}

fn straight_run() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let outcome = trainer(dir.path(), 0, None).fit(&mut ()).unwrap();
    assert_eq!(outcome, FitOutcome::Finished);
    dir
}

#[test]
fn stopping_mid_epoch_and_resuming_equals_a_straight_run_bit_for_bit() {
    let straight = straight_run();
    let dir = tempfile::tempdir().unwrap();
    let outcome = trainer(dir.path(), 0, Some(3)).fit(&mut ()).unwrap();
    let FitOutcome::Stopped {
        reason,
        position,
        steps,
        checkpoint,
    } = outcome
    else {
        panic!("not stopped: {outcome:?}");
    };
    assert_eq!(
        (reason, position.epoch, position.batch, steps),
        (StopReason::MaxSteps, 0, 3, 3)
    );
    assert_eq!(checkpoint, dir.path().join("last.pth"));

    let mut t = resumed(dir.path());
    assert_eq!(
        (t.position().epoch, t.position().batch, t.global_step()),
        (0, 3, 3)
    );
    assert_eq!(t.fit(&mut ()).unwrap(), FitOutcome::Finished);
    assert_eq!(t.history().len(), 2);
    assert_same_run(straight.path(), dir.path());

    // Everything done: nothing to train, nothing changed.
    assert_eq!(
        resumed(dir.path()).fit(&mut ()).unwrap(),
        FitOutcome::NothingToDo { epochs: 2 }
    );
}

/// Requests the stop during the second epoch's first batch; counts what it is told.
#[derive(Default)]
struct StopInEpochTwo {
    signal: StopSignal,
    batches: Vec<(u64, u64)>,
    epochs: Vec<(u64, bool)>,
    evals: usize,
}

impl Callback for StopInEpochTwo {
    fn on_batch_end(&mut self, b: &BatchEnd) {
        let so_far = b.read().unwrap();
        assert!(so_far.mean_loss.is_finite() && b.lr > 0.0);
        assert!((0.0..=1.0).contains(&so_far.accuracy) && so_far.images_per_second > 0.0);
        self.batches.push((b.batch, b.batches));
        if self.epochs.len() == 1 {
            self.signal.request();
        }
    }

    fn on_eval_end(&mut self) {
        self.evals += 1;
    }

    fn on_epoch_end(&mut self, e: &EpochEnd) {
        assert_eq!(e.images, 64.0);
        self.epochs.push((e.record.epoch, e.is_best));
    }
}

#[test]
fn a_stop_request_saves_and_the_run_resumes_exactly_with_callbacks_told_everything() {
    let straight = straight_run();
    let dir = tempfile::tempdir().unwrap();
    let mut listener = StopInEpochTwo::default();
    let mut t = trainer(dir.path(), 0, None).with_stop_signal(listener.signal.clone());
    let outcome = t.fit(&mut listener).unwrap();
    assert!(
        matches!(
            outcome,
            FitOutcome::Stopped {
                reason: StopReason::Interrupted,
                position: flambeau_vision::data::LoaderState {
                    epoch: 1,
                    batch: 1,
                    ..
                },
                steps: 5,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(listener.batches, [(1, 4), (2, 4), (3, 4), (4, 4), (1, 4)]);
    assert_eq!(listener.epochs, [(1, true)]);
    assert_eq!(listener.evals, 1);
    // The mid-epoch checkpoint carries the epoch's running sums and the history.
    let ckpt = Checkpoint::load(dir.path().join("last.pth"), &LoadConfig::default()).unwrap();
    assert!(ckpt.extra.get("epoch_progress").is_some());
    assert_eq!(ckpt.extra.get("arch").and_then(Value::as_str), Some("tiny"));
    assert_eq!(ckpt.global_step, 5);

    resumed(dir.path()).fit(&mut ()).unwrap();
    assert_same_run(straight.path(), dir.path());
}

#[test]
fn resuming_with_other_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    trainer(dir.path(), 0, Some(3)).fit(&mut ()).unwrap();
    let (_, mut ckpt) = Resume::Path(dir.path().join("last.pth"))
        .open(
            &CheckpointManager::new(dir.path(), 2).unwrap(),
            &Device::Cpu,
        )
        .unwrap()
        .unwrap();
    // Pretend the run stopped at a batch this data does not have.
    let mut state = ckpt.data_state.take().unwrap();
    if let Value::Dict(d) = &mut state {
        d.insert("batch", 9i64);
    }
    ckpt.data_state = Some(state);
    let err = trainer(dir.path(), 0, None).resume(&ckpt).unwrap_err();
    assert!(
        err.to_string()
            .contains("stopped at batch 9 of an epoch, but this data has 4 batches per epoch"),
        "{err}"
    );
}

#[test]
fn a_new_run_never_overwrites_an_existing_one() {
    let dir = straight_run();
    let last = std::fs::read(dir.path().join("last.pth")).unwrap();
    let csv = std::fs::read(dir.path().join("metrics.csv")).unwrap();
    let err = trainer(dir.path(), 1, None).fit(&mut ()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("already holds a run"), "{msg}");
    assert!(
        msg.contains("--resume auto") && msg.contains("--force"),
        "{msg}"
    );
    assert_eq!(std::fs::read(dir.path().join("last.pth")).unwrap(), last);
    assert_eq!(std::fs::read(dir.path().join("metrics.csv")).unwrap(), csv);
    // Asked for, it starts over.
    let outcome = trainer_with(dir.path(), 1, None, 0.01, true)
        .fit(&mut ())
        .unwrap();
    assert_eq!(outcome, FitOutcome::Finished);
    assert_ne!(std::fs::read(dir.path().join("last.pth")).unwrap(), last);
}

#[test]
fn a_run_directory_appears_with_the_first_checkpoint() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("run");
    let t = trainer(&dir, 0, Some(1));
    assert!(
        !dir.exists(),
        "a run that never saved must leave no directory"
    );
    drop(t);
    trainer(&dir, 0, Some(1)).fit(&mut ()).unwrap();
    assert!(dir.join("last.pth").is_file());
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    // A finished run, then a new one over it (asked for) whose learning rate overflows the
    // weights: it stops at the end of its first epoch without saving.
    let dir = straight_run();
    let good = std::fs::read(dir.path().join("last.pth")).unwrap();
    let err = trainer_with(dir.path(), 0, None, 1e38, true)
        .fit(&mut ())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("training diverged by step 4"), "{msg}");
    assert!(msg.contains("is not finite"), "{msg}");
    assert_eq!(std::fs::read(dir.path().join("last.pth")).unwrap(), good);
}

/// [`trainer`] training over `replicas` CPU replicas (1: the plain loop, no replica group).
fn on_replicas(t: Trainer<Tiny>, replicas: usize) -> Trainer<Tiny> {
    if replicas == 1 {
        return t;
    }
    let build =
        |vb: VarBuilder| Linear::new(vb.pp("fc"), 3 * 32 * 32, 10, true).map(|fc| Tiny { fc });
    let group = ReplicaGroup::new(t.var_store(), build, &vec![Device::Cpu; replicas]).unwrap();
    t.with_replicas(group)
}

#[test]
fn a_run_moves_between_replica_counts_as_a_one_device_run_would() {
    let straight = straight_run();
    let dir = tempfile::tempdir().unwrap();
    // Two replicas for 3 steps (batch 16: 8 + 8), one for 3 more (into epoch 2), then three
    // replicas (6 + 6 + 4) to the end.
    let outcome = on_replicas(trainer(dir.path(), 0, Some(3)), 2)
        .fit(&mut ())
        .unwrap();
    assert!(
        matches!(outcome, FitOutcome::Stopped { steps: 3, .. }),
        "{outcome:?}"
    );
    for (replicas, max_steps) in [(1, Some(6)), (3, None)] {
        let mut t = on_replicas(trainer(dir.path(), 99, max_steps), replicas);
        let (_, ckpt) = Resume::Auto
            .open(t.manager(), &Device::Cpu)
            .unwrap()
            .unwrap();
        // Checkpoints hold the model under its plain keys, whatever the replica count.
        assert!(
            ckpt.model.contains_key("fc.weight"),
            "{:?}",
            ckpt.model.keys().collect::<Vec<_>>()
        );
        t.resume(&ckpt).unwrap();
        t.fit(&mut ()).unwrap();
    }
    let load = |d: &Path| flambeau_serialize::load(d.join("last.pth"), &LoadConfig::default());
    let (x, y) = (load(dir.path()).unwrap(), load(straight.path()).unwrap());
    for key in Checkpoint::STATE_KEYS {
        assert_close_value(x.get(key).unwrap(), y.get(key).unwrap(), key, 1e-5);
    }
}

/// A run of `world` processes (threads here, meeting through [`HostCollective`] as processes
/// meet through MPI or NCCL), each with per-rank batch `24 / world` — the one-process run with
/// batch 24, as rank 0 writes it into `dir`. Resumes when `dir` holds a run.
fn run_processes(dir: &Path, world: usize, max_steps: Option<u64>) {
    let handles = HostCollective::group(world);
    std::thread::scope(|scope| {
        for (rank, handle) in handles.into_iter().enumerate() {
            scope.spawn(move || {
                let data = Data {
                    examples: 96,
                    batch_size: 24 / world,
                    shard: Some((rank, world)),
                };
                let mut t = trainer_on(dir, rank as u64, max_steps, 0.01, false, &data);
                let group = ProcessGroup::new(t.var_store(), Box::new(handle));
                t = t.with_process_group(group);
                if let Some((_, ckpt)) = Resume::Auto.open(t.manager(), &Device::Cpu).unwrap() {
                    t.resume(&ckpt).unwrap();
                }
                t.fit(&mut ()).unwrap()
            });
        }
    });
}

/// The one-process run with batch 24 the multi-process runs must follow.
fn one_process_batch_24() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = Data {
        examples: 96,
        batch_size: 24,
        shard: None,
    };
    trainer_on(dir.path(), 0, None, 0.01, false, &data)
        .fit(&mut ())
        .unwrap();
    dir
}

fn assert_close_run(a: &Path, b: &Path) {
    let load = |d: &Path| flambeau_serialize::load(d.join("last.pth"), &LoadConfig::default());
    let (x, y) = (load(a).unwrap(), load(b).unwrap());
    for key in Checkpoint::STATE_KEYS {
        assert_close_value(x.get(key).unwrap(), y.get(key).unwrap(), key, 1e-5);
    }
}

#[test]
fn processes_follow_the_one_process_run_and_resume_on_other_world_sizes() {
    let reference = one_process_batch_24();
    for world in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        run_processes(dir.path(), world, None);
        assert_close_run(dir.path(), reference.path());
        let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert_eq!(
            csv.lines().count(),
            3,
            "a header and two epochs, written once:\n{csv}"
        );
    }
    // 2 processes for 3 steps, 1 for 3 more (into epoch 2), then 3 to the end.
    let dir = tempfile::tempdir().unwrap();
    run_processes(dir.path(), 2, Some(3));
    run_processes(dir.path(), 1, Some(6));
    run_processes(dir.path(), 3, None);
    assert_close_run(dir.path(), reference.path());
}

/// One rank's stop request stops every rank after the same step (the first step is one the
/// ranks agree on stopping at), and the run resumes from rank 0's checkpoint.
#[test]
fn a_stop_request_on_one_rank_stops_every_rank_after_the_same_step() {
    let reference = one_process_batch_24();
    let dir = tempfile::tempdir().unwrap();
    let world = 2;
    let handles = HostCollective::group(world);
    let outcomes: Vec<FitOutcome> = std::thread::scope(|scope| {
        let runs: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(rank, handle)| {
                let dir = dir.path();
                scope.spawn(move || {
                    let data = Data {
                        examples: 96,
                        batch_size: 24 / world,
                        shard: Some((rank, world)),
                    };
                    let signal = StopSignal::new();
                    if rank == 1 {
                        signal.request();
                    }
                    let t = trainer_on(dir, rank as u64, None, 0.01, false, &data);
                    let group = ProcessGroup::new(t.var_store(), Box::new(handle));
                    let mut t = t.with_process_group(group).with_stop_signal(signal);
                    t.fit(&mut ()).unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for o in &outcomes {
        assert!(
            matches!(
                o,
                FitOutcome::Stopped {
                    reason: StopReason::Interrupted,
                    position: flambeau_vision::data::LoaderState {
                        epoch: 0,
                        batch: 1,
                        ..
                    },
                    steps: 1,
                    ..
                }
            ),
            "{outcomes:?}"
        );
    }
    run_processes(dir.path(), world, None);
    assert_close_run(dir.path(), reference.path());
}

/// The Trainer across real processes under `mpirun` (feature `mpi`): `run_processes` with MPI
/// in place of threads. `cargo test -p flambeau-train --features mpi --test trainer`.
#[cfg(feature = "mpi")]
mod under_mpirun {
    use std::process::Command;

    use flambeau_parallel::Launch;

    use super::*;

    /// Set in the ranks `mpirun` starts: the run directory, and the steps to stop after.
    const RANK_DIR: &str = "FLAMBEAU_MPI_TRAINER_DIR";
    const RANK_MAX_STEPS: &str = "FLAMBEAU_MPI_TRAINER_MAX_STEPS";

    /// One rank of `mpirun -np W` (a no-op outside mpirun): per-rank batch `24 / W`.
    #[test]
    fn rank_program() {
        let Ok(dir) = std::env::var(RANK_DIR) else {
            return;
        };
        let launch = Launch::detect().unwrap();
        let (rank, world) = launch.rank_and_world();
        let max_steps: Option<u64> = std::env::var(RANK_MAX_STEPS)
            .ok()
            .map(|s| s.parse().unwrap());
        let data = Data {
            examples: 96,
            batch_size: 24 / world,
            shard: Some((rank, world)),
        };
        let mut t = trainer_on(Path::new(&dir), rank as u64, max_steps, 0.01, false, &data);
        let group = launch
            .join(t.var_store(), std::time::Duration::from_secs(60))
            .unwrap()
            .expect("a group under mpirun");
        t = t.with_process_group(group);
        if let Some((_, ckpt)) = Resume::Auto.open(t.manager(), &Device::Cpu).unwrap() {
            t.resume(&ckpt).unwrap();
        }
        t.fit(&mut ()).unwrap();
    }

    /// `mpirun -np np` of [`rank_program`] on `dir`; false (after a loud skip) without mpirun.
    fn mpirun(np: usize, dir: &Path, max_steps: Option<u64>) -> bool {
        let found = Command::new("mpirun")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            flambeau_testkit::skip("mpirun is not installed (cargo xtask mpi setup): the Trainer did not run under MPI");
            return false;
        }
        let mut c = flambeau_testkit::mpirun(np);
        c.arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "under_mpirun::rank_program",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RANK_DIR, dir);
        if let Some(m) = max_steps {
            c.env(RANK_MAX_STEPS, m.to_string());
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "mpirun -np {np} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        true
    }

    #[test]
    fn mpi_processes_follow_the_one_process_run_and_resume_on_other_world_sizes() {
        let reference = one_process_batch_24();
        for np in [2, 3] {
            let dir = tempfile::tempdir().unwrap();
            if !mpirun(np, dir.path(), None) {
                return;
            }
            assert_close_run(dir.path(), reference.path());
        }
        // 2 processes for 3 steps, 1 (in-process, alone) for 3 more, then 3 to the end.
        let dir = tempfile::tempdir().unwrap();
        mpirun(2, dir.path(), Some(3));
        let data = Data {
            examples: 96,
            batch_size: 24,
            shard: None,
        };
        let mut t = trainer_on(dir.path(), 99, Some(6), 0.01, false, &data);
        let (_, ckpt) = Resume::Auto
            .open(t.manager(), &Device::Cpu)
            .unwrap()
            .unwrap();
        t.resume(&ckpt).unwrap();
        t.fit(&mut ()).unwrap();
        mpirun(3, dir.path(), None);
        assert_close_run(dir.path(), reference.path());
    }
}
