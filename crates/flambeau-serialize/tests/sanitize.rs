//! `sanitize`: objects `torch.load(weights_only=True)` refuses become plain values or go, and
//! every decision is reported.

use flambeau_serialize::sanitize::sanitize;
use flambeau_serialize::{Dict, DictKind, Object, Value};

fn object(class: &str, state: Option<Value>) -> Value {
    Value::Object(Object {
        class: class.into(),
        args: vec![],
        state: state.map(Box::new),
    })
}

#[test]
fn namespaces_become_dicts_and_unknown_objects_are_dropped_with_a_report() {
    let mut fields = Dict::new(DictKind::Plain);
    fields.insert("lr", 0.1);
    let mut top = Dict::new(DictKind::Plain);
    top.insert(
        "args",
        object("argparse.Namespace", Some(Value::Dict(fields))),
    );
    top.insert("hook", object("mylib.Hook", None));
    top.insert(
        "list",
        Value::List(vec![object("mylib.Hook", None), Value::Int(1)]),
    );
    let mut v = Value::Dict(top);
    let mut report = Vec::new();
    sanitize(&mut v, "", &mut report);

    assert_eq!(
        v.get("args")
            .and_then(|a| a.get("lr"))
            .and_then(Value::as_f64),
        Some(0.1)
    );
    assert!(v.get("hook").is_none());
    let list = v.get("list").and_then(Value::as_seq).unwrap();
    assert!(matches!(list[0], Value::None));
    assert_eq!(report.len(), 3, "{report:?}");
    assert!(report[0].starts_with("args: "), "{report:?}");
    assert!(report[1].contains("hook: dropped"), "{report:?}");
    assert!(report[2].contains("list[0]: replaced"), "{report:?}");
}
