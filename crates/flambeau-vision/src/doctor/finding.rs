//! [`Finding`]: what about the file itself (not its keys) stops
//! `model.load_state_dict(torch.load(f))` — a TorchScript archive, a whole pickled model, a
//! training checkpoint, a GPU-saved file — and the exact text PyTorch answers with.

use flambeau_serialize::{FoundStateDict, Layout, Opened, Value};

/// Something about the file that PyTorch's plain `model.load_state_dict(torch.load(f))` trips on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Saved with tensors on a GPU: `torch.load` without `map_location` fails on a CPU-only
    /// machine (flambeau ignores the tags).
    GpuSaved {
        /// The location tags other than `cpu` (`cuda:0`, …).
        devices: Vec<String>,
    },
    /// A TorchScript archive (`torch.jit.save`): `torch.load` hands back a ScriptModule.
    TorchScript,
    /// A whole pickled `nn.Module` (`torch.save(model)`), at the top or under `key`.
    WholeModule {
        /// The module's class (`torchvision.models.resnet.ResNet`).
        class: String,
        /// The entry holding it, empty at the top level.
        key: String,
    },
    /// A training checkpoint: the model's weights are one entry among others.
    TrainingCheckpoint {
        /// The entry holding the weights (`model_state_dict`, `state_dict`, …).
        key: String,
        /// The convention the file follows, in words.
        layout: String,
        /// The file's top-level keys, in order (what PyTorch reports as unexpected).
        top_level_keys: Vec<String>,
    },
}

impl Finding {
    /// Everything notable about `opened` (whose state dict is `found`), most basic first.
    pub fn all(opened: &Opened, found: &FoundStateDict, locations: &[String]) -> Vec<Finding> {
        let mut out = Vec::new();
        let devices: Vec<String> = locations
            .iter()
            .filter(|l| l.as_str() != "cpu")
            .cloned()
            .collect();
        if !devices.is_empty() {
            out.push(Finding::GpuSaved { devices });
        }
        if opened.format == flambeau_serialize::Format::TorchScript {
            out.push(Finding::TorchScript);
            return out;
        }
        let holder = if found.location.is_empty() {
            Some(&opened.value)
        } else {
            opened.value.get(&found.location)
        };
        if let Some(Value::Object(o)) = holder {
            out.push(Finding::WholeModule {
                class: o.class.clone(),
                key: found.location.clone(),
            });
        }
        if let (false, Value::Dict(d)) = (found.location.is_empty(), &opened.value) {
            out.push(Finding::TrainingCheckpoint {
                key: found.location.clone(),
                layout: Layout::detect(d).describe().to_string(),
                top_level_keys: d.str_keys().map(str::to_string).collect(),
            });
        }
        out
    }

    /// A short name for scripts: `gpu_saved`, `torchscript`, `whole_module`,
    /// `training_checkpoint`.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::GpuSaved { .. } => "gpu_saved",
            Finding::TorchScript => "torchscript",
            Finding::WholeModule { .. } => "whole_module",
            Finding::TrainingCheckpoint { .. } => "training_checkpoint",
        }
    }

    /// What the finding is, in the user's terms.
    pub fn cause(&self) -> String {
        match self {
            Finding::GpuSaved { devices } => format!(
                "the tensors were saved on {}: `torch.load` without `map_location` fails on a machine without CUDA (flambeau reads them onto the CPU anyway).",
                devices.join(", ")
            ),
            Finding::TorchScript => "a TorchScript archive (torch.jit.save): code plus weights, which `torch.load` refuses; its state dict is what torch.jit.load(f).state_dict() returns.".into(),
            Finding::WholeModule { class, key } => format!(
                "a whole pickled model (torch.save(model)) of class {class}{}: `torch.load`'s default weights_only=True refuses the class, and a module is not a state dict.",
                if key.is_empty() { String::new() } else { format!(" under \"{key}\"") }
            ),
            Finding::TrainingCheckpoint { key, layout, .. } => format!(
                "a training checkpoint ({layout}): the model's weights are the entry \"{key}\", next to the optimizer's state and the like.",
            ),
        }
    }

    /// What PyTorch says on `model.load_state_dict(torch.load(f))` because of this finding, when
    /// it stops there (a training checkpoint's text depends on the model: see the report).
    pub fn pytorch_says(&self) -> Option<String> {
        match self {
            Finding::GpuSaved { .. } => Some("(on a machine without CUDA) RuntimeError: Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False. If you are running on a CPU-only machine, please use torch.load with map_location=torch.device('cpu') to map your storages to the CPU.".into()),
            Finding::TorchScript => Some("RuntimeError: Cannot use ``weights_only=True`` with TorchScript archives passed to ``torch.load``. …".into()),
            Finding::WholeModule { class, .. } => Some(format!("_pickle.UnpicklingError: Weights only load failed. … WeightsUnpickler error: Unsupported global: GLOBAL {class} was not an allowed global by default. …")),
            Finding::TrainingCheckpoint { .. } => None,
        }
    }
}
