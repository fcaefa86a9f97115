//! The top-level layouts training scripts save, and how to recognise them.

use flambeau_core::Dict;

/// Every key people save the optimizer's state under.
const OPTIMIZER_KEYS: [&str; 3] = ["optimizer_state_dict", "optimizer", "optimizer_states"];

/// Every key people save the scheduler's state under.
const SCHEDULER_KEYS: [&str; 5] = [
    "scheduler_state_dict",
    "scheduler",
    "lr_scheduler",
    "lr_scheduler_state_dict",
    "lr_schedulers",
];

/// `keys` with `own` moved to the front.
fn ordered<const N: usize>(own: &'static str, keys: [&'static str; N]) -> [&'static str; N] {
    let mut out = keys;
    if let Some(i) = out.iter().position(|k| *k == own) {
        out[..=i].rotate_right(1);
    }
    out
}

/// Which convention a training checkpoint follows. They differ in key names and in what
/// `epoch` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The PyTorch tutorial ("Saving and loading a general checkpoint"), which flambeau writes:
    /// `model_state_dict`, `optimizer_state_dict`, `scheduler_state_dict`, `epoch` (the index of
    /// the last finished epoch), `loss`.
    Tutorial,
    /// pytorch/examples' ImageNet script: `state_dict`, `optimizer`, `scheduler`, `best_acc1`,
    /// `arch`, and `epoch` = the number of finished epochs.
    ImageNetExample,
    /// torchvision's reference scripts: `model`, `optimizer`, `lr_scheduler`, `epoch` (index of
    /// the last finished epoch), `args`.
    TorchvisionReferences,
    /// PyTorch Lightning: `state_dict`, `optimizer_states` and `lr_schedulers` (lists), `epoch`,
    /// `global_step`.
    Lightning,
    /// Only model weights (a bare state dict, or a dict without training state).
    WeightsOnly,
}

impl Layout {
    /// Recognises the layout of a top-level dict.
    pub fn detect(d: &Dict) -> Layout {
        let has = |k: &str| d.get(k).is_some();
        if has("model_state_dict") {
            Layout::Tutorial
        } else if has("optimizer_states")
            || has("lr_schedulers")
            || has("pytorch-lightning_version")
        {
            Layout::Lightning
        } else if has("state_dict") && (has("optimizer") || has("best_acc1") || has("arch")) {
            Layout::ImageNetExample
        } else if has("model") && (has("optimizer") || has("lr_scheduler") || has("args")) {
            Layout::TorchvisionReferences
        } else {
            Layout::WeightsOnly
        }
    }

    /// The key of the model's state dict.
    pub(crate) fn model_key(self) -> &'static str {
        match self {
            Layout::Tutorial => "model_state_dict",
            Layout::ImageNetExample | Layout::Lightning => "state_dict",
            Layout::TorchvisionReferences => "model",
            Layout::WeightsOnly => "",
        }
    }

    /// The keys the optimizer's state may be under, this layout's own first (Lightning keeps a
    /// list; the first is used). Scripts mix conventions, so every layout looks under all.
    pub(crate) fn optimizer_keys(self) -> [&'static str; 3] {
        let own = match self {
            Layout::Tutorial | Layout::WeightsOnly => "optimizer_state_dict",
            Layout::ImageNetExample | Layout::TorchvisionReferences => "optimizer",
            Layout::Lightning => "optimizer_states",
        };
        ordered(own, OPTIMIZER_KEYS)
    }

    /// The keys the scheduler's state may be under, this layout's own first (Lightning keeps a
    /// list; the first is used). The mixed layout `model_state_dict` / `optimizer_state_dict` /
    /// `lr_scheduler` is common, so every layout looks under all.
    pub(crate) fn scheduler_keys(self) -> [&'static str; 5] {
        let own = match self {
            Layout::Tutorial | Layout::WeightsOnly => "scheduler_state_dict",
            Layout::ImageNetExample => "scheduler",
            Layout::TorchvisionReferences => "lr_scheduler",
            Layout::Lightning => "lr_schedulers",
        };
        ordered(own, SCHEDULER_KEYS)
    }

    /// The key of the best validation metric, if the layout has one.
    pub(crate) fn best_metric_key(self) -> &'static str {
        match self {
            Layout::ImageNetExample => "best_acc1",
            _ => "best_metric",
        }
    }

    /// Converts the file's `epoch` to the index of the last finished epoch.
    pub(crate) fn last_finished_epoch(self, file_epoch: i64) -> i64 {
        match self {
            Layout::ImageNetExample => file_epoch - 1,
            _ => file_epoch,
        }
    }

    /// A short description for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Tutorial => "PyTorch tutorial layout (model_state_dict/optimizer_state_dict)",
            Layout::ImageNetExample => {
                "pytorch/examples ImageNet layout (state_dict/optimizer/best_acc1)"
            }
            Layout::TorchvisionReferences => {
                "torchvision references layout (model/optimizer/lr_scheduler/args)"
            }
            Layout::Lightning => {
                "PyTorch Lightning layout (state_dict/optimizer_states/lr_schedulers)"
            }
            Layout::WeightsOnly => "model weights only",
        }
    }
}
