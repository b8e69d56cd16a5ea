use serde_json::json;

use super::*;

fn run(schema: &Value, obj: Value) -> (Vec<String>, Vec<String>, Value) {
    let mut o = obj;
    let f = validate_object(schema, &mut o, true);
    (
        f.causes
            .into_iter()
            .map(|(_, field, msg)| format!("{field}: {msg}"))
            .collect(),
        f.unknown,
        o,
    )
}

#[test]
fn int_or_string_nullable_and_nested_unknown_fields() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": true},
        "note": {"type": "string", "nullable": true},
        "inner": {"type": "object", "properties": {"a": {"type": "string"}}},
    }}}});
    let (causes, unknown, pruned) = run(
        &schema,
        json!({"spec": {"port": "http", "note": null, "inner": {"a": "x", "b": 1}}}),
    );
    assert!(causes.is_empty(), "{causes:?}");
    assert_eq!(unknown, ["spec.inner.b"]);
    assert_eq!(pruned["spec"]["inner"], json!({"a": "x"}));
    let (causes, _, _) = run(&schema, json!({"spec": {"port": true}}));
    assert_eq!(
        causes,
        [
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer-or-string: \"boolean\""
        ]
    );
}

#[test]
fn arrays_and_items() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "ids": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "minLength": 2}},
    }}}});
    let (causes, _, _) = run(&schema, json!({"spec": {"ids": []}}));
    assert_eq!(
        causes,
        ["spec.ids: Invalid value: 0: spec.ids in body should have at least 1 items"]
    );
    let (causes, _, _) = run(&schema, json!({"spec": {"ids": ["a", "bb", "cc"]}}));
    assert_eq!(
        causes,
        [
            "spec.ids: Too many: 3: must have at most 2 items",
            "spec.ids[0]: Invalid value: \"a\": spec.ids[0] in body should be at least 2 chars long"
        ]
    );
}

#[test]
fn preserve_unknown_fields_keeps_everything() {
    let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let (causes, unknown, kept) = run(&schema, json!({"spec": {"anything": [1, 2]}}));
    assert!(causes.is_empty() && unknown.is_empty());
    assert_eq!(kept["spec"]["anything"], json!([1, 2]));
}
