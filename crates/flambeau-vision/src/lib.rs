//! flambeau-vision (being built).
