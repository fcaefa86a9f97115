//! [`VarStore`] and [`VarBuilder`]: parameters and buffers under the names PyTorch gives them.
//!
//! The store keeps a tree of modules in registration order; each module has its own parameters,
//! buffers and children, so `state_dict()` and `parameters()` come out in exactly PyTorch's order
//! (a module's parameters, then its persistent buffers, then each child in turn). Trainable tensors
//! live in a [`candle_nn::VarMap`] under their full names, so candle-nn code can train them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{Error, Init, Result, StateDict};

/// PyTorch's default CPU generator seed (`torch.initial_seed()` in a fresh process).
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

/// Whether an entry of the store is trainable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A trainable parameter (in the VarMap, handed to optimizers).
    Parameter,
    /// A buffer: state that is saved (when persistent) but never trained.
    Buffer {
        /// Persistent buffers appear in `state_dict()`; non-persistent ones do not.
        persistent: bool,
    },
}

/// One named tensor of the store, as listed by [`VarStore::entries`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// Full dotted name, e.g. `layer1.0.bn1.running_mean`.
    pub name: String,
    /// Parameter or buffer.
    pub kind: EntryKind,
    /// The variable; updating it in place (`Var::set`) updates the model.
    pub var: Var,
}

#[derive(Default)]
struct Node {
    /// local name → index into `Inner::params`
    params: Vec<(String, usize)>,
    /// local name → index into `Inner::buffers`
    buffers: Vec<(String, usize)>,
    /// local name → index into `Inner::nodes`
    children: Vec<(String, usize)>,
    /// `_version` of the module class, written to `_metadata` (BatchNorm: 2).
    version: u32,
}

impl Node {
    fn has_local(&self, name: &str) -> bool {
        self.params.iter().any(|(n, _)| n == name)
            || self.buffers.iter().any(|(n, _)| n == name)
            || self.children.iter().any(|(n, _)| n == name)
    }
}

struct Buffer {
    var: Var,
    persistent: bool,
}

struct Inner {
    nodes: Vec<Node>,
    params: Vec<Var>,
    buffers: Vec<Buffer>,
    rng: StdRng,
    model_name: String,
}

/// The parameters and buffers of a model, with PyTorch's names and order.
///
/// Cloning a `VarStore` is cheap and yields a handle to the same store.
#[derive(Clone)]
pub struct VarStore {
    inner: Arc<Mutex<Inner>>,
    varmap: VarMap,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for VarStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarStore")
            .field("model_name", &self.model_name())
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .field("entries", &self.entries().len())
            .finish()
    }
}

impl VarStore {
    /// An empty store whose parameters are created on `device` with `dtype`, initialised from
    /// PyTorch's default seed.
    pub fn new(device: &Device, dtype: DType) -> Self {
        Self::with_seed(device, dtype, DEFAULT_SEED)
    }

    /// An empty store whose random initialisations are drawn from `seed`.
    pub fn with_seed(device: &Device, dtype: DType, seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                nodes: vec![Node {
                    version: 1,
                    ..Node::default()
                }],
                params: Vec::new(),
                buffers: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
                model_name: "Module".to_string(),
            })),
            varmap: VarMap::new(),
            device: device.clone(),
            dtype,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the tree half-built (every mutation is a
        // single push), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The builder for the root module.
    pub fn root(&self) -> VarBuilder {
        VarBuilder {
            store: self.clone(),
            path: Vec::new(),
        }
    }

    /// The device new tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of new floating-point parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The candle-nn `VarMap` holding every trainable parameter once, under its first name.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The class name used in error messages (`Error(s) in loading state_dict for ResNet:`).
    pub fn model_name(&self) -> String {
        self.lock().model_name.clone()
    }

    /// Sets the class name used in error messages.
    pub fn set_model_name(&self, name: impl Into<String>) {
        self.lock().model_name = name.into();
    }

    /// Runs `f` with the store's random generator (initialisations, dropout masks).
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    /// Every named tensor in PyTorch's `state_dict` order, non-persistent buffers included, and a
    /// shared parameter listed under each of its names.
    pub fn entries(&self) -> Vec<Entry> {
        let inner = self.lock();
        let mut out = Vec::new();
        walk(&inner, 0, &mut String::new(), &mut |prefix, node| {
            for (name, idx) in &node.params {
                out.push(Entry {
                    name: format!("{prefix}{name}"),
                    kind: EntryKind::Parameter,
                    var: inner.params[*idx].clone(),
                });
            }
            for (name, idx) in &node.buffers {
                let b = &inner.buffers[*idx];
                out.push(Entry {
                    name: format!("{prefix}{name}"),
                    kind: EntryKind::Buffer {
                        persistent: b.persistent,
                    },
                    var: b.var.clone(),
                });
            }
        });
        out
    }

    /// `named_parameters()`: each parameter once, under its first name, in PyTorch's order.
    /// This order is what an optimizer's `params: [0, 1, …]` indexes.
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        let mut seen = std::collections::HashSet::new();
        self.entries()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Parameter && seen.insert(e.var.id()))
            .map(|e| (e.name, e.var))
            .collect()
    }

    /// `parameters()`: the variables of [`named_parameters`](Self::named_parameters).
    pub fn parameters(&self) -> Vec<Var> {
        self.named_parameters()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// `named_buffers()`: every buffer (persistent or not) once, in PyTorch's order.
    pub fn named_buffers(&self) -> Vec<(String, Var)> {
        let mut seen = std::collections::HashSet::new();
        self.entries()
            .into_iter()
            .filter(|e| matches!(e.kind, EntryKind::Buffer { .. }) && seen.insert(e.var.id()))
            .map(|e| (e.name, e.var))
            .collect()
    }

    /// `state_dict()`: parameters and persistent buffers in PyTorch's order. The tensors share
    /// storage with the model (as PyTorch's do): copy them if the model will keep training and you
    /// need a snapshot. Module versions travel in [`StateDict::metadata`].
    pub fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for e in self.entries() {
            if e.kind != (EntryKind::Buffer { persistent: false }) {
                sd.insert(e.name, e.var.as_tensor().clone());
            }
        }
        sd.set_metadata(self.module_versions());
        sd
    }

    /// `(prefix, version)` of every module, root first (`""`), as PyTorch's `_metadata` has them.
    pub fn module_versions(&self) -> Vec<(String, u32)> {
        let inner = self.lock();
        let mut out = Vec::new();
        walk(&inner, 0, &mut String::new(), &mut |prefix, node| {
            out.push((prefix.trim_end_matches('.').to_string(), node.version));
        });
        out
    }

    /// The variable behind a full name.
    pub fn get(&self, name: &str) -> Option<Var> {
        self.entries()
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.var)
    }
}

/// One module of the tree as `load_state_dict` walks it (PyTorch's `_load_from_state_dict`).
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// Dotted prefix with its trailing dot (`"layer1.0."`), `""` for the root.
    pub prefix: String,
    /// Local names of its parameters and persistent buffers (what PyTorch calls `local_state`).
    pub local_state: Vec<String>,
    /// Local names of its child modules.
    pub children: Vec<String>,
    /// The class `_version` (BatchNorm: 2).
    pub version: u32,
}

impl VarStore {
    /// Every module in pre-order (root first), as PyTorch's `load` recursion visits them.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        let inner = self.lock();
        let mut out = Vec::new();
        walk(&inner, 0, &mut String::new(), &mut |prefix, node| {
            let persistent = node
                .buffers
                .iter()
                .filter(|(_, i)| inner.buffers[*i].persistent)
                .map(|(n, _)| n.clone());
            out.push(ModuleInfo {
                prefix: prefix.to_string(),
                local_state: node
                    .params
                    .iter()
                    .map(|(n, _)| n.clone())
                    .chain(persistent)
                    .collect(),
                children: node.children.iter().map(|(n, _)| n.clone()).collect(),
                version: node.version,
            });
        });
        out
    }
}

/// Pre-order walk: `visit(prefix, node)` for the node, then each child with `prefix` + `name.`.
fn walk(inner: &Inner, node: usize, prefix: &mut String, visit: &mut impl FnMut(&str, &Node)) {
    let n = &inner.nodes[node];
    visit(prefix, n);
    for (name, child) in &n.children {
        let len = prefix.len();
        prefix.push_str(name);
        prefix.push('.');
        walk(inner, *child, prefix, visit);
        prefix.truncate(len);
    }
}

/// Builds parameters and buffers at a dotted path: `vb.pp("layer1").pp(0).pp("conv1")` creates
/// `layer1.0.conv1.weight`. Modules are registered in the order their first tensor is created,
/// which is why constructors must create children in the order PyTorch's `__init__` does.
#[derive(Clone, Debug)]
pub struct VarBuilder {
    store: VarStore,
    path: Vec<String>,
}

impl VarBuilder {
    /// The builder of a child module (`pp` = push prefix).
    pub fn pp<S: ToString>(&self, name: S) -> VarBuilder {
        let mut path = self.path.clone();
        path.push(name.to_string());
        VarBuilder {
            store: self.store.clone(),
            path,
        }
    }

    /// The store this builder writes to.
    pub fn store(&self) -> &VarStore {
        &self.store
    }

    /// The device new tensors are created on.
    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// The dtype of new floating-point parameters.
    pub fn dtype(&self) -> DType {
        self.store.dtype()
    }

    /// The dotted prefix of this module, without a trailing dot (`""` for the root).
    pub fn prefix(&self) -> String {
        self.path.join(".")
    }

    /// The full name `name` would get here.
    pub fn full_name(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix(), name)
        }
    }

    /// Finds or creates the module node for this builder's path.
    fn node(&self, inner: &mut Inner) -> Result<usize> {
        let mut node = 0;
        for seg in &self.path {
            check_segment(seg)?;
            let existing = inner.nodes[node]
                .children
                .iter()
                .find(|(n, _)| n == seg)
                .map(|(_, c)| *c);
            node = match existing {
                Some(c) => c,
                None => {
                    if inner.nodes[node].has_local(seg) {
                        return Err(Error::DuplicateName {
                            name: self.full_name_upto(seg),
                        });
                    }
                    inner.nodes.push(Node {
                        version: 1,
                        ..Node::default()
                    });
                    let id = inner.nodes.len() - 1;
                    inner.nodes[node].children.push((seg.clone(), id));
                    id
                }
            };
        }
        Ok(node)
    }

    fn full_name_upto(&self, seg: &str) -> String {
        let pos = self.path.iter().position(|s| s == seg).unwrap_or(0);
        self.path[..=pos].join(".")
    }

    /// Creates a trainable parameter of the store's dtype, initialised by `init`, and returns its
    /// variable (its `as_tensor()` is what forward passes use).
    pub fn param_var(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        check_segment(name)?;
        let shape = shape.into();
        let mut inner = self.store.lock();
        let node = self.node(&mut inner)?;
        if inner.nodes[node].has_local(name) {
            return Err(Error::DuplicateName {
                name: self.full_name(name),
            });
        }
        crate::device_dtypes::check(&self.full_name(name), self.dtype(), self.device())?;
        let tensor = init.tensor(&shape, self.dtype(), self.device(), &mut inner.rng)?;
        let var = Var::from_tensor(&tensor)?;
        let idx = inner.params.len();
        inner.params.push(var.clone());
        inner.nodes[node].params.push((name.to_string(), idx));
        drop(inner);
        self.store
            .varmap
            .data()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.full_name(name), var.clone());
        Ok(var)
    }

    /// Like [`param_var`](Self::param_var), returning the tensor.
    pub fn param(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        Ok(self.param_var(name, shape, init)?.as_tensor().clone())
    }

    /// Registers `var` (already a parameter somewhere in this store) under a second name, like
    /// PyTorch's `self.f3 = self.fc`: both names appear in `state_dict()`, `parameters()` lists it
    /// once. A variable the store does not know yet becomes a new parameter.
    pub fn share_param(&self, name: &str, var: &Var) -> Result<()> {
        check_segment(name)?;
        let mut inner = self.store.lock();
        let node = self.node(&mut inner)?;
        if inner.nodes[node].has_local(name) {
            return Err(Error::DuplicateName {
                name: self.full_name(name),
            });
        }
        let idx = match inner.params.iter().position(|v| v.id() == var.id()) {
            Some(i) => i,
            None => {
                inner.params.push(var.clone());
                let i = inner.params.len() - 1;
                self.store
                    .varmap
                    .data()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(self.full_name(name), var.clone());
                i
            }
        };
        inner.nodes[node].params.push((name.to_string(), idx));
        Ok(())
    }

    /// Registers a buffer holding `value` (its dtype is kept: `num_batches_tracked` is i64), moved
    /// to the store's device. Persistent buffers are saved and loaded; non-persistent ones are not.
    pub fn buffer(&self, name: &str, value: Tensor, persistent: bool) -> Result<Var> {
        check_segment(name)?;
        crate::device_dtypes::check(&self.full_name(name), value.dtype(), self.device())?;
        let value = value.to_device(self.device())?;
        let var = Var::from_tensor(&value)?;
        let mut inner = self.store.lock();
        let node = self.node(&mut inner)?;
        if inner.nodes[node].has_local(name) {
            return Err(Error::DuplicateName {
                name: self.full_name(name),
            });
        }
        inner.buffers.push(Buffer {
            var: var.clone(),
            persistent,
        });
        let idx = inner.buffers.len() - 1;
        inner.nodes[node].buffers.push((name.to_string(), idx));
        Ok(var)
    }

    /// Registers this module (creating it if needed) with the class `_version` PyTorch writes to
    /// `_metadata` (BatchNorm: 2; every other built-in module: 1).
    pub fn set_module_version(&self, version: u32) -> Result<()> {
        let mut inner = self.store.lock();
        let node = self.node(&mut inner)?;
        inner.nodes[node].version = version;
        Ok(())
    }

    /// Runs `f` with the store's random generator.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        self.store.with_rng(f)
    }
}

fn check_segment(seg: &str) -> Result<()> {
    if seg.is_empty() || seg.contains('.') {
        return Err(Error::InvalidName {
            segment: seg.to_string(),
        });
    }
    Ok(())
}

/// Looks a name up in a list of entries (helper for loaders that work on a snapshot).
pub fn entries_by_name(entries: &[Entry]) -> HashMap<&str, &Entry> {
    entries.iter().map(|e| (e.name.as_str(), e)).collect()
}
