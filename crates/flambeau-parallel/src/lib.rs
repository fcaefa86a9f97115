//! flambeau-parallel (being built).
