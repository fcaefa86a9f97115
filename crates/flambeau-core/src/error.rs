//! The error type of flambeau-core.

use thiserror::Error;

/// Everything that can go wrong in flambeau-core outside `load_state_dict` (which has its own,
/// richer error type).
#[derive(Debug, Error)]
pub enum Error {
    /// An error from Candle itself (shape errors, device errors, …).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A parameter or buffer was registered twice under the same name.
    #[error("duplicate name `{name}`: a parameter or buffer with this name is already registered")]
    DuplicateName {
        /// The full dotted name.
        name: String,
    },

    /// A name was looked up that the store does not have.
    #[error("no parameter or buffer named `{name}`")]
    UnknownName {
        /// The full dotted name.
        name: String,
    },

    /// A path segment or local name that PyTorch could not produce (empty or containing `.`).
    #[error("invalid name segment `{segment}`: names must be non-empty and contain no `.`")]
    InvalidName {
        /// The offending segment.
        segment: String,
    },

    /// A regular expression given to a key rule did not compile.
    #[error("invalid regular expression `{pattern}`: {source}")]
    Regex {
        /// The pattern as given.
        pattern: String,
        /// What the regex engine said.
        #[source]
        source: regex::Error,
    },

    /// A value had another type than the one needed (e.g. a `Value` that is not a dict of tensors).
    #[error("{0}")]
    Type(String),

    /// A key rule mapped two or more keys onto one; applying it would keep one tensor and
    /// silently drop the others.
    #[error("{rule} maps several keys onto one, which would drop tensors: {}; drop the unwanted keys first (KeyRule::drop) or make the rule more specific", describe_collisions(.collisions))]
    KeyCollision {
        /// The rule, as the Rust expression that builds it.
        rule: String,
        /// Each resulting key with the original keys that map onto it.
        collisions: Vec<(String, Vec<String>)>,
    },

    /// A weight or buffer holds NaN or infinity (see [`StateDict::check_finite`](crate::StateDict::check_finite)).
    #[error("{0}: the model diverged or a layer saw bad input (e.g. a batch norm trained on one value per channel); lower the learning rate or check the data, and resume from the last finite checkpoint")]
    NonFinite(Box<crate::finite::NonFinite>),

    /// Anything else, with a message that says what and why.
    #[error("{0}")]
    Msg(String),
}

/// `` `module.w`, `w` → `w` `` for the first few collisions, and how many more there are.
fn describe_collisions(collisions: &[(String, Vec<String>)]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = collisions
        .iter()
        .take(SHOWN)
        .map(|(to, from)| {
            let from: Vec<String> = from.iter().map(|k| format!("`{k}`")).collect();
            format!("{} → `{to}`", from.join(", "))
        })
        .collect();
    if collisions.len() > SHOWN {
        parts.push(format!("and {} more", collisions.len() - SHOWN));
    }
    parts.join("; ")
}

/// `Result` with flambeau-core's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;
