//! [`DoctorReport`]: what `flambeau doctor` found, and its text.

use std::fmt;
use std::path::PathBuf;

use flambeau_core::load::Diagnosis;
use flambeau_serialize::Format;

use super::{Finding, Fix, Target};

/// The doctor's answer in one word, and the command's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `model.load_state_dict(torch.load(f))` works as is (exit code 0).
    Loads,
    /// It does not, and the fix (verified) makes it load (exit code 1).
    Fixable,
    /// No fix flambeau knows makes it load (exit code 2).
    CannotLoad,
}

impl Verdict {
    /// 0, 1 or 2.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Loads => 0,
            Verdict::Fixable => 1,
            Verdict::CannotLoad => 2,
        }
    }
}

/// Everything `flambeau doctor` found about one file and one model.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    /// The checkpoint.
    pub file: PathBuf,
    /// What kind of file it is.
    pub format: Format,
    /// Where the weights are: `""` for the whole file, else the top-level entry.
    pub weights_at: String,
    /// What the file looked like (`a bare state_dict`, `a training checkpoint`, …).
    pub layout: &'static str,
    /// The model it was checked against.
    pub target: Target,
    /// Tensors in the checkpoint's state dict.
    pub tensors: usize,
    /// Problems with the file itself (GPU-saved, TorchScript, whole model, training checkpoint).
    pub findings: Vec<Finding>,
    /// What PyTorch answers to `model.load_state_dict(torch.load(f))`; `None` when it loads.
    pub pytorch_says: Option<String>,
    /// The causes found in the keys, with flambeau's Rust fix each.
    pub diagnosis: Vec<Diagnosis>,
    /// Other things worth knowing (counters filled in, casts, another class count).
    pub notes: Vec<String>,
    /// The fix, when one is needed and makes the model load.
    pub fix: Option<Fix>,
    /// What the last attempt said when no fix works.
    pub unresolved: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.weights_at.is_empty() {
            String::new()
        } else {
            format!(" under \"{}\"", self.weights_at)
        };
        writeln!(f, "file:  {} ({})", self.file.display(), self.format)?;
        writeln!(f, "       {} tensors{place}: {}", self.tensors, self.layout)?;
        writeln!(f, "model: {}", self.target)?;
        writeln!(f)?;
        match &self.pytorch_says {
            None => writeln!(
                f,
                "PyTorch: model.load_state_dict(torch.load(f)) loads it: <All keys matched successfully>"
            )?,
            Some(text) => {
                writeln!(f, "PyTorch: model.load_state_dict(torch.load(f)) says")?;
                writeln!(f, "{}", indent(text, "  "))?;
            }
        }
        if !self.findings.is_empty() || !self.diagnosis.is_empty() {
            writeln!(f)?;
            writeln!(f, "diagnosis:")?;
            for x in &self.findings {
                writeln!(f, "  - {}", x.cause())?;
            }
            for d in &self.diagnosis {
                writeln!(f, "  - {}", d.cause)?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            for n in &self.notes {
                writeln!(f, "note: {n}")?;
            }
        }
        if let Some(fix) = &self.fix {
            writeln!(f)?;
            let how = if fix.strict {
                "loads strictly"
            } else {
                "loads with strict=False"
            };
            writeln!(f, "fix (checked: the result {how} into {}):", self.target)?;
            writeln!(f, "  {}", fix.convert_line(&self.file))?;
            writeln!(f, "in PyTorch:")?;
            writeln!(f, "  {}", fix.python(&self.file).join("; "))?;
            if !self.diagnosis.is_empty() {
                writeln!(f, "in Rust (flambeau):")?;
                for d in &self.diagnosis {
                    writeln!(f, "  {}", d.fix)?;
                }
            }
        }
        if let Some(why) = &self.unresolved {
            writeln!(f)?;
            writeln!(f, "no fix found; the closest attempt says:")?;
            writeln!(f, "{}", indent(why, "  "))?;
        }
        writeln!(f)?;
        let verdict = match self.verdict {
            Verdict::Loads => "loads as is (exit code 0)",
            Verdict::Fixable => "does not load as is; the fix above makes it load (exit code 1)",
            Verdict::CannotLoad => "cannot be made to load into this model (exit code 2)",
        };
        write!(f, "verdict: {verdict}")
    }
}
