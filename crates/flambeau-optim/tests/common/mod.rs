//! Shared helpers for flambeau-optim's integration tests.
#![allow(dead_code)]

pub mod optim_fixture;
pub mod pyjson;
