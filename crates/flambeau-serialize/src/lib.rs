//! flambeau-serialize (being built).
