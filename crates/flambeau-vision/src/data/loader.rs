//! [`DataLoader`]: batches prepared in background threads, in a seeded order that a checkpoint
//! can store ([`LoaderState`]: three integers) and replay exactly.
//!
//! The order of epoch `e` is a shuffle seeded by `(seed, e)`, and the augmentation of the sample
//! at position `p` of that order is seeded by `(seed, e, p)`: nothing depends on which thread
//! prepared what, so a run stopped after any batch resumes bit-identically.
//!
//! A [sharded](DataLoader::sharded) loader reads one rank's part of every epoch as PyTorch's
//! `DistributedSampler` does: the order padded (from its start) to a multiple of the world size,
//! rank `r` taking positions `r, r + W, r + 2W, …`. So batch `k` of the W ranks (batch size `b`
//! each) holds exactly the positions of batch `k` of one loader with batch size `W·b`, with the
//! same augmentation.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use flambeau_kernels::device::Handoff;
use rayon::prelude::*;

use super::rng::{derive, SplitMix64};
use super::transforms::{Augment, Normalize};
use super::{Dataset, Sample};
use crate::{Error, Result};

/// How batches are made.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Examples per batch.
    pub batch_size: usize,
    /// Shuffle every epoch (seeded).
    pub shuffle: bool,
    /// Drop the last, smaller batch.
    pub drop_last: bool,
    /// Training augmentation, if any.
    pub augment: Option<Augment>,
    /// Normalisation, if any.
    pub normalize: Option<Normalize>,
    /// Seed of the order and the augmentation.
    pub seed: u64,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            drop_last: false,
            augment: None,
            normalize: None,
            seed: 0,
            prefetch: 2,
        }
    }
}

/// Where the loader is in its stream of batches: store it in a checkpoint to resume the exact
/// data order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoaderState {
    /// Seed of the order and the augmentation.
    pub seed: u64,
    /// The current epoch (0-based).
    pub epoch: u64,
    /// The next batch of that epoch.
    pub batch: u64,
}

/// One batch: images `[N, C, H, W]` f32 and labels `[N]` u32 on the loader's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images.
    pub images: Tensor,
    /// Class indices.
    pub labels: Tensor,
    /// Dataset indices of the examples, in batch order.
    pub indices: Vec<usize>,
}

/// Batches from a [`Dataset`].
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
    device: Device,
    state: LoaderState,
    /// `(rank, world)` when this loader reads one rank's shard.
    shard: Option<(usize, usize)>,
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("len", &self.dataset.len())
            .field("config", &self.config)
            .field("state", &self.state)
            .finish()
    }
}

impl DataLoader {
    /// A loader over `dataset` producing batches on `device`.
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig, device: &Device) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::Config("batch_size must be positive".into()));
        }
        if dataset.is_empty() {
            return Err(Error::Config("the dataset is empty".into()));
        }
        let state = LoaderState {
            seed: config.seed,
            epoch: 0,
            batch: 0,
        };
        Ok(Self {
            dataset,
            config,
            device: device.clone(),
            state,
            shard: None,
        })
    }

    /// This loader reading only rank `rank`'s shard of a group of `world` ranks (see the module
    /// docs): every rank gets `ceil(len / world)` examples per epoch.
    pub fn sharded(mut self, rank: usize, world: usize) -> Result<Self> {
        if rank >= world {
            return Err(Error::Config(format!(
                "rank {rank} is not a rank of a group of {world}"
            )));
        }
        self.shard = (world > 1).then_some((rank, world));
        Ok(self)
    }

    /// `(rank, world)` of a sharded loader.
    pub fn shard(&self) -> Option<(usize, usize)> {
        self.shard
    }

    /// Examples this loader reads per epoch (its shard's, padded, when sharded).
    pub fn examples(&self) -> usize {
        match self.shard {
            Some((_, world)) => self.dataset.len().div_ceil(world),
            None => self.dataset.len(),
        }
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let (n, b) = (self.examples(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// True when an epoch has no batch (drop_last with fewer examples than a batch).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// Where the loader is (save it in a checkpoint).
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Resumes from a saved position.
    pub fn set_state(&mut self, state: LoaderState) {
        self.state = state;
    }

    /// The order of the examples in epoch `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            SplitMix64::new(derive(&[self.state.seed, epoch])).shuffle(&mut order);
        }
        order
    }

    /// The positions of the epoch's order this loader reads, in turn: all of them, or a
    /// shard's (positions past the end wrap to the start, as `DistributedSampler` pads).
    fn positions(&self) -> Vec<usize> {
        match self.shard {
            Some((rank, world)) => {
                let padded = self.examples() * world;
                (rank..padded).step_by(world).collect()
            }
            None => (0..self.dataset.len()).collect(),
        }
    }

    /// The remaining batches of the current epoch, prepared in the background. Each batch taken
    /// advances [`state`](Self::state); after the last one the loader moves to the next epoch.
    pub fn epoch(&mut self) -> EpochIter<'_> {
        let epoch = self.state.epoch;
        let total = self.len() as u64;
        let order = Arc::new((self.order(epoch), self.positions()));
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let dataset = Arc::clone(&self.dataset);
        let config = self.config.clone();
        let seed = self.state.seed;
        let start = self.state.batch.min(total);
        let device = self.device.clone();
        // The copy to the device happens here too, so on a GPU the next batch is uploaded
        // while the training thread runs the current step; the batch travels as a `Handoff`, so
        // the training thread's kernels wait for the upload on the GPU, whatever stream each
        // thread uses (docs/src/gpu.md, "Streams, hand-offs and host reads").
        let handle = std::thread::spawn(move || {
            for b in start..total {
                let batch = make_batch(&*dataset, &config, &order, seed, epoch, b as usize)
                    .and_then(|host| upload(host, &device));
                if tx.send(batch).is_err() {
                    break; // the consumer stopped early
                }
            }
        });
        EpochIter {
            loader: self,
            rx,
            handle: Some(handle),
            remaining: total - start,
        }
    }
}

/// A batch as prepared on a worker: pixels, labels, dataset indices and `[C, H, W]`.
type HostBatch = (Vec<f32>, Vec<u32>, Vec<usize>, [usize; 3]);

/// Loads, augments and normalises batch `b` of the epoch in parallel over its examples:
/// `positions[b·size..]` of the epoch's `order`, wrapping past its end.
fn make_batch(
    dataset: &dyn Dataset,
    config: &LoaderConfig,
    (order, positions): &(Vec<usize>, Vec<usize>),
    seed: u64,
    epoch: u64,
    b: usize,
) -> Result<HostBatch> {
    let lo = b * config.batch_size;
    let hi = (lo + config.batch_size).min(positions.len());
    let index = |pos: usize| order[pos % order.len()];
    let samples: Vec<Sample> = positions[lo..hi]
        .par_iter()
        .map(|&pos| {
            let mut s = dataset.get(index(pos))?;
            if let Some(aug) = &config.augment {
                let mut rng = SplitMix64::new(derive(&[seed, epoch, pos as u64, 1]));
                aug.apply(&mut s, &mut rng);
            }
            if let Some(norm) = &config.normalize {
                norm.apply(&mut s);
            }
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let first = &samples[0];
    let chw = [first.channels, first.height, first.width];
    let mut pixels = Vec::with_capacity(samples.len() * chw.iter().product::<usize>());
    let mut labels = Vec::with_capacity(samples.len());
    let indices: Vec<usize> = positions[lo..hi].iter().map(|&p| index(p)).collect();
    for (s, &i) in samples.iter().zip(&indices) {
        if [s.channels, s.height, s.width] != chw {
            return Err(Error::Dataset(format!(
                "example {} is {}x{}x{}, the batch's first is {}x{}x{}: images in a batch must share a size",
                i, s.channels, s.height, s.width, chw[0], chw[1], chw[2]
            )));
        }
        pixels.extend_from_slice(&s.pixels);
        labels.push(s.label);
    }
    Ok((pixels, labels, indices, chw))
}

/// A prepared batch as tensors on `device`, uploaded by this thread for another.
fn upload(
    (pixels, labels, indices, [c, h, w]): HostBatch,
    device: &Device,
) -> Result<Handoff<Batch>> {
    let n = labels.len();
    let batch = Batch {
        images: Tensor::from_vec(pixels, (n, c, h, w), &Device::Cpu)?.to_device(device)?,
        labels: Tensor::from_vec(labels, n, &Device::Cpu)?.to_device(device)?,
        indices,
    };
    Ok(Handoff::new(batch, device)?)
}

/// The batches of one epoch (see [`DataLoader::epoch`]).
pub struct EpochIter<'a> {
    loader: &'a mut DataLoader,
    rx: Receiver<Result<Handoff<Batch>>>,
    handle: Option<JoinHandle<()>>,
    remaining: u64,
}

impl EpochIter<'_> {
    /// Batches left in this epoch.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl Iterator for EpochIter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
            return None;
        }
        let msg = self.rx.recv().ok()?;
        self.remaining -= 1;
        let state = &mut self.loader.state;
        state.batch += 1;
        if self.remaining == 0 {
            state.epoch += 1;
            state.batch = 0;
        }
        Some(msg.and_then(|h| Ok(h.receive(&self.loader.device)?)))
    }
}
