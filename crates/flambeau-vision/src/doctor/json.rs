//! [`DoctorReport::to_json`]: the report as one JSON object (`flambeau doctor --json`).

use serde_json::{json, Value as Json};

use super::{DoctorReport, Verdict};

impl DoctorReport {
    /// The report as one JSON object: the file, its format and layout, the findings, PyTorch's
    /// message, the diagnosis, the fix (as `flambeau convert` arguments, its command line and
    /// the Python lines), the verdict and its exit code.
    pub fn to_json(&self) -> Json {
        let r = self;
        let fix = r.fix.as_ref().map(|f| {
            json!({
                "convert": f.convert_args(&r.file),
                "convert_line": f.convert_line(&r.file),
                "python": f.python(&r.file),
                "strict": f.strict,
            })
        });
        json!({
            "file": r.file.display().to_string(),
            "format": r.format.to_string(),
            "weights_at": r.weights_at,
            "layout": r.layout,
            "model": r.target.to_string(),
            "tensors": r.tensors,
            "findings": r.findings.iter().map(|x| json!({"kind": x.kind(), "cause": x.cause()})).collect::<Vec<_>>(),
            "pytorch_says": r.pytorch_says,
            "diagnosis": r.diagnosis.iter().map(|d| json!({"cause": d.cause, "fix": d.fix})).collect::<Vec<_>>(),
            "notes": r.notes,
            "fix": fix,
            "unresolved": r.unresolved,
            "verdict": match r.verdict {
                Verdict::Loads => "loads",
                Verdict::Fixable => "fixable",
                Verdict::CannotLoad => "cannot_load",
            },
            "exit_code": r.verdict.exit_code(),
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use crate::doctor::{diagnose_file, Target};
    use crate::models::{ResNet, ResNetConfig};

    /// A resnet18 saved from DataParallel: fixable, and the JSON says how.
    #[test]
    fn a_fixable_report_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dp.pth");
        let config = ResNetConfig::by_name("resnet18", 10).unwrap();
        let (vs, _) = ResNet::seeded(config, &Device::Cpu, 0).unwrap();
        let sd = vs.state_dict().add_prefix("module.");
        flambeau_serialize::save_state_dict(&sd, &path).unwrap();
        let target = Target::Arch {
            name: "resnet18".into(),
            num_classes: Some(10),
        };
        let report = diagnose_file(&path, &target).unwrap();
        let j = report.to_json();
        assert_eq!(j["verdict"], "fixable", "{j:#}");
        assert_eq!(j["exit_code"], 1);
        assert_eq!(j["tensors"], sd.len());
        let convert = j["fix"]["convert"].as_array().unwrap();
        assert!(convert.iter().any(|a| a == "module."), "{j:#}");
    }
}
