//! # flambeau-vision
//!
//! torchvision-compatible models and the data they train on:
//! - [`models::resnet`]: ResNet-18/34/50/101/152, `wide_resnet50_2`, `resnext50_32x4d` with
//!   torchvision's architecture, parameter names, order and initialisation, so a torchvision
//!   `state_dict` loads strictly with nothing renamed.
//! - [`data`]: an embedded procedural dataset (no download), CIFAR-10's binary format, image
//!   folders, standard augmentation, and a [`data::DataLoader`] with background batch
//!   preparation and a resumable, seeded order.
//! - [`doctor`]: why a checkpoint will not load into a model, and the fix, checked
//!   (`flambeau doctor`).

pub mod data;
pub mod doctor;
pub mod error;
pub mod models;

pub use error::{Error, Result};
