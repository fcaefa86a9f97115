//! [`Fix`]: what makes a checkpoint load, as the `flambeau convert` command line that rewrites
//! the file and as the PyTorch one-liner for users who stay in Python.

use std::path::{Path, PathBuf};

use flambeau_core::KeyRule;

/// How PyTorch has to open the file to get at the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opener {
    /// `torch.load(f, map_location="cpu")`; `weights_only=False` when the file holds classes
    /// the default loader refuses (only for files you trust).
    TorchLoad {
        /// The file needs `weights_only=False`.
        unsafe_classes: bool,
    },
    /// `torch.jit.load(f, map_location="cpu").state_dict()` (a TorchScript archive).
    JitLoad,
}

/// The fix, verified by `flambeau doctor`: applied to the file, the model loads (strictly when
/// [`strict`](Self::strict) is true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// How PyTorch opens the file.
    pub opener: Opener,
    /// The top-level entry holding the weights (`convert --select`), if not the whole file.
    pub select: Option<String>,
    /// The weights are a whole pickled module: take its `state_dict()`.
    pub whole_module: bool,
    /// Key rules, in the order `flambeau convert` applies them (strip, rename, drop, add).
    pub rules: Vec<KeyRule>,
    /// Drop the module versions (`_metadata`), so BatchNorm fills in missing counters: written
    /// as `.safetensors`, which carries none.
    pub forget_module_versions: bool,
    /// The model then loads with `strict=True`; false: only with `strict=False` (a new head).
    pub strict: bool,
}

/// Position of a rule in `flambeau convert`'s order.
fn convert_rank(rule: &KeyRule) -> u8 {
    match rule {
        KeyRule::StripPrefix(_) => 0,
        KeyRule::Rename { .. } => 1,
        KeyRule::Drop(_) | KeyRule::KeepOnlyModelKeys => 2,
        KeyRule::AddPrefix(_) => 3,
    }
}

/// `arg` as one shell word.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `s` as a Python string literal.
fn py_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A regular expression as a Python literal: raw (`r"^fc\."`) when it can be.
fn py_re(s: &str) -> String {
    if s.contains('"') || s.ends_with('\\') {
        py_str(s)
    } else {
        format!("r\"{s}\"")
    }
}

impl Fix {
    /// A fix that changes nothing yet: the file opens with `torch.load`.
    pub fn new(opener: Opener) -> Self {
        Self {
            opener,
            select: None,
            whole_module: false,
            rules: Vec::new(),
            forget_module_versions: false,
            strict: true,
        }
    }

    /// Adds rules, keeping `flambeau convert`'s order.
    pub fn add_rules(&mut self, rules: impl IntoIterator<Item = KeyRule>) {
        for r in rules {
            if !self.rules.contains(&r) {
                self.rules.push(r);
            }
        }
        self.rules.sort_by_key(convert_rank);
    }

    /// Where the convert line writes: next to the input, `NAME.fixed.pth` (`.safetensors` when
    /// the module versions must go).
    pub fn output(&self, input: &Path) -> PathBuf {
        let stem = input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into());
        let ext = if self.forget_module_versions {
            "safetensors"
        } else {
            "pth"
        };
        input.with_file_name(format!("{stem}.fixed.{ext}"))
    }

    /// The arguments of `flambeau convert` (after `convert`) that write the fixed file.
    pub fn convert_args(&self, input: &Path) -> Vec<String> {
        let mut args = vec![
            input.display().to_string(),
            self.output(input).display().to_string(),
        ];
        if let Some(key) = &self.select {
            args.extend(["--select".into(), key.clone()]);
        }
        for rule in &self.rules {
            let (flag, value) = match rule {
                KeyRule::StripPrefix(p) => ("--strip-prefix", p.clone()),
                KeyRule::AddPrefix(p) => ("--add-prefix", p.clone()),
                KeyRule::Rename {
                    pattern,
                    replacement,
                } => ("--rename", format!("{pattern}={replacement}")),
                KeyRule::Drop(p) => ("--drop", p.clone()),
                // Turned into --drop rules by the doctor; never reaches here.
                KeyRule::KeepOnlyModelKeys => continue,
            };
            args.extend([flag.to_string(), value]);
        }
        args
    }

    /// The whole `flambeau convert …` command line, quoted for a POSIX shell.
    pub fn convert_line(&self, input: &Path) -> String {
        let mut words = vec!["flambeau".to_string(), "convert".to_string()];
        words.extend(self.convert_args(input).iter().map(|a| shell_quote(a)));
        words.join(" ")
    }

    /// The same fix as Python statements ending in `model.load_state_dict(sd…)`, one per line.
    pub fn python(&self, input: &Path) -> Vec<String> {
        let file = py_str(&input.display().to_string());
        let mut lines = Vec::new();
        let needs_re = self
            .rules
            .iter()
            .any(|r| matches!(r, KeyRule::Drop(_) | KeyRule::Rename { .. }));
        lines.push(
            if needs_re {
                "import re, torch"
            } else {
                "import torch"
            }
            .to_string(),
        );
        let select = self
            .select
            .as_ref()
            .map(|k| format!("[{}]", py_str(k)))
            .unwrap_or_default();
        let module = if self.whole_module {
            ".state_dict()"
        } else {
            ""
        };
        lines.push(match self.opener {
            Opener::JitLoad => {
                format!("sd = torch.jit.load({file}, map_location=\"cpu\").state_dict()")
            }
            Opener::TorchLoad { unsafe_classes } => {
                let wo = if unsafe_classes || self.whole_module {
                    ", weights_only=False"
                } else {
                    ""
                };
                format!("sd = torch.load({file}, map_location=\"cpu\"{wo}){select}{module}")
            }
        });
        if self.forget_module_versions {
            lines.push(
                "sd = dict(sd)  # without _metadata, BatchNorm fills in num_batches_tracked".into(),
            );
        }
        for rule in &self.rules {
            lines.push(match rule {
                KeyRule::StripPrefix(p) => format!(
                    "torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(sd, {})",
                    py_str(p)
                ),
                KeyRule::AddPrefix(p) => {
                    format!("sd = {{{} + k: v for k, v in sd.items()}}", py_str(p))
                }
                KeyRule::Rename {
                    pattern,
                    replacement,
                } => format!(
                    "sd = {{re.sub({}, {}, k): v for k, v in sd.items()}}",
                    py_re(pattern),
                    py_re(&dollar_to_backslash(replacement))
                ),
                KeyRule::Drop(p) => format!(
                    "sd = {{k: v for k, v in sd.items() if not re.search({}, k)}}",
                    py_re(p)
                ),
                KeyRule::KeepOnlyModelKeys => {
                    "sd = {k: v for k, v in sd.items() if k in model.state_dict()}".into()
                }
            });
        }
        lines.push(if self.strict {
            "model.load_state_dict(sd)".into()
        } else {
            "model.load_state_dict(sd, strict=False)".into()
        });
        lines
    }
}

/// Rust's `$1` group references as Python's `\1`.
fn dollar_to_backslash(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('\\');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_line_and_python_follow_the_rules() {
        let mut fix = Fix::new(Opener::TorchLoad {
            unsafe_classes: false,
        });
        fix.select = Some("state_dict".into());
        fix.add_rules([KeyRule::drop(r"^fc\."), KeyRule::strip_prefix("model.")]);
        fix.strict = false;
        let input = Path::new("runs/last.ckpt");
        assert_eq!(
            fix.convert_line(input),
            r"flambeau convert runs/last.ckpt runs/last.fixed.pth --select state_dict --strip-prefix model. --drop '^fc\.'"
        );
        let py = fix.python(input);
        assert_eq!(py[0], "import re, torch");
        assert_eq!(
            py[1],
            r#"sd = torch.load("runs/last.ckpt", map_location="cpu")["state_dict"]"#
        );
        assert!(py[2].contains("consume_prefix_in_state_dict_if_present(sd, \"model.\")"));
        assert!(py[3].contains(r#"re.search(r"^fc\.", k)"#), "{}", py[3]);
        assert_eq!(py[4], "model.load_state_dict(sd, strict=False)");
    }

    #[test]
    fn quoting_and_group_references() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("module."), "module.");
        assert_eq!(dollar_to_backslash("a$1b$"), r"a\1b$");
    }
}
