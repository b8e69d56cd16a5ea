//! Validation of custom resources against their CRD's `openAPIV3Schema`, and pruning of unknown
//! fields, with causes worded as the real API server words them.
//!
//! Supported: `type`, `nullable`, `properties`, `required`, `additionalProperties` (schema),
//! `items`, `enum`, `pattern`, `minLength`/`maxLength`, `minimum`/`maximum` (and exclusive),
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, `oneOf`/`anyOf`/`allOf`/`not`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`. Not supported:
//! CEL rules (`x-kubernetes-validations`) and `format`.

use serde_json::Value;

/// A failed rule: `(reason, field, message)` as in `details.causes`.
pub(crate) type Cause = (String, String, String);

/// What validation found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Rule violations.
    pub(crate) causes: Vec<Cause>,
    /// Paths of fields the schema does not declare (pruned unless told otherwise).
    pub(crate) unknown: Vec<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn invalid(f: &mut Findings, path: &str, value: &str, detail: &str) {
    f.causes.push((
        "FieldValueInvalid".into(),
        path.to_owned(),
        format!("Invalid value: {value}: {detail}"),
    ));
}

/// Validates a whole object against a CRD version's root schema; prunes unknown fields when
/// `prune` (the object's `apiVersion`, `kind` and `metadata` are never pruned).
pub(crate) fn validate_object(schema: &Value, obj: &mut Value, prune: bool) -> Findings {
    let mut f = Findings::default();
    let Some(map) = obj.as_object_mut() else {
        invalid(&mut f, "", "\"object\"", "must be an object");
        return f;
    };
    let props = schema.get("properties");
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => check(s, map.get_mut(&k).expect("key listed"), &k, &mut f, prune),
            None if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) => {}
            None => {
                f.unknown.push(k.clone());
                if prune {
                    map.remove(&k);
                }
            }
        }
    }
    required(schema, map, "", &mut f);
    combinators(schema, &Value::Object(map.clone()), "", &mut f);
    f
}

fn required(schema: &Value, map: &serde_json::Map<String, Value>, path: &str, f: &mut Findings) {
    for r in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str()
            && !map.contains_key(r)
        {
            f.causes.push((
                "FieldValueRequired".into(),
                child(path, r),
                "Required value".into(),
            ));
        }
    }
}

/// Validates `v` at `path` against `s`, recording causes and unknown fields.
fn check(s: &Value, v: &mut Value, path: &str, f: &mut Findings, prune: bool) {
    if v.is_null() && s["nullable"] == Value::Bool(true) {
        return;
    }
    let actual = type_name(v);
    let int_or_string = s["x-kubernetes-int-or-string"] == Value::Bool(true);
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            invalid(
                f,
                path,
                &format!("\"{actual}\""),
                &format!("{path} in body must be of type integer-or-string: \"{actual}\""),
            );
            return;
        }
    } else if let Some(want) = s["type"].as_str() {
        let ok = match want {
            "number" => matches!(actual, "integer" | "number"),
            "integer" => actual == "integer" || v.as_f64().is_some_and(|x| x.fract() == 0.0),
            w => w == actual,
        };
        if !ok {
            f.causes.push((
                "FieldValueTypeInvalid".into(),
                path.to_owned(),
                format!("Invalid value: \"{actual}\": {path} in body must be of type {want}: \"{actual}\""),
            ));
            return;
        }
    }
    if let Some(allowed) = s["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        f.causes.push((
            "FieldValueNotSupported".into(),
            path.to_owned(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::String(text) => check_string(s, text, path, f),
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or(0.0), &n.to_string(), path, f),
        Value::Array(items) => {
            let n = items.len();
            if let Some(min) = s["minItems"].as_u64()
                && (n as u64) < min
            {
                invalid(
                    f,
                    path,
                    &n.to_string(),
                    &format!("{path} in body should have at least {min} items"),
                );
            }
            if let Some(max) = s["maxItems"].as_u64()
                && (n as u64) > max
            {
                f.causes.push((
                    "FieldValueTooMany".into(),
                    path.to_owned(),
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), f, prune);
                }
            }
        }
        Value::Object(map) => {
            let props = s.get("properties");
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            let preserve = s["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
                || s["x-kubernetes-embedded-resource"] == Value::Bool(true);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let p = child(path, &k);
                match (props.and_then(|x| x.get(&k)), additional) {
                    (Some(ps), _) | (None, Some(ps)) => {
                        check(ps, map.get_mut(&k).expect("key listed"), &p, f, prune)
                    }
                    (None, None) if preserve || (props.is_none() && s.get("type").is_none()) => {}
                    (None, None) => {
                        f.unknown.push(p);
                        if prune {
                            map.remove(&k);
                        }
                    }
                }
            }
            let n = map.len() as u64;
            if let Some(min) = s["minProperties"].as_u64()
                && n < min
            {
                invalid(
                    f,
                    path,
                    &n.to_string(),
                    &format!("{path} in body should have at least {min} properties"),
                );
            }
            if let Some(max) = s["maxProperties"].as_u64()
                && n > max
            {
                invalid(
                    f,
                    path,
                    &n.to_string(),
                    &format!("{path} in body should have at most {max} properties"),
                );
            }
            required(s, map, path, f);
        }
        _ => {}
    }
    combinators(s, v, path, f);
}

fn check_string(s: &Value, text: &str, path: &str, f: &mut Findings) {
    let len = text.chars().count() as u64;
    let shown = Value::String(text.to_owned()).to_string();
    if let Some(min) = s["minLength"].as_u64()
        && len < min
    {
        invalid(
            f,
            path,
            &shown,
            &format!("{path} in body should be at least {min} chars long"),
        );
    }
    if let Some(max) = s["maxLength"].as_u64()
        && len > max
    {
        f.causes.push((
            "FieldValueTooLong".into(),
            path.to_owned(),
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(p) = s["pattern"].as_str() {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(text) => {
                invalid(
                    f,
                    path,
                    &shown,
                    &format!("{path} in body should match '{p}'"),
                );
            }
            Ok(_) => {}
            Err(_) => invalid(
                f,
                path,
                &shown,
                &format!("the schema's pattern '{p}' does not compile"),
            ),
        }
    }
}

fn check_number(s: &Value, x: f64, shown: &str, path: &str, f: &mut Findings) {
    let exclusive = |k: &str| s[k] == Value::Bool(true);
    if let Some(min) = s["minimum"].as_f64() {
        if exclusive("exclusiveMinimum") && x <= min {
            invalid(
                f,
                path,
                shown,
                &format!("{path} in body should be greater than {min}"),
            );
        } else if x < min {
            invalid(
                f,
                path,
                shown,
                &format!("{path} in body should be greater than or equal to {min}"),
            );
        }
    }
    if let Some(max) = s["maximum"].as_f64() {
        if exclusive("exclusiveMaximum") && x >= max {
            invalid(
                f,
                path,
                shown,
                &format!("{path} in body should be less than {max}"),
            );
        } else if x > max {
            invalid(
                f,
                path,
                shown,
                &format!("{path} in body should be less than or equal to {max}"),
            );
        }
    }
}

/// Whether `v` satisfies `s` (no pruning; unknown fields are not errors here, as in the
/// `oneOf` branches of structural schemas, which only constrain).
fn passes(s: &Value, v: &Value) -> bool {
    let mut f = Findings::default();
    let mut copy = v.clone();
    check(s, &mut copy, "", &mut f, false);
    f.causes.is_empty()
}

fn combinators(s: &Value, v: &Value, path: &str, f: &mut Findings) {
    let shown = format!("\"{}\"", type_name(v));
    if let Some(options) = s["oneOf"].as_array() {
        let n = options.iter().filter(|o| passes(o, v)).count();
        if n != 1 {
            let found = if n == 0 {
                "Found none valid".to_owned()
            } else {
                format!("Found {n} valid alternatives")
            };
            invalid(
                f,
                path,
                &shown,
                &format!("must validate one and only one schema (oneOf). {found}"),
            );
        }
    }
    if let Some(options) = s["anyOf"].as_array()
        && !options.iter().any(|o| passes(o, v))
    {
        invalid(f, path, &shown, "must validate at least one schema (anyOf)");
    }
    for o in s["allOf"].as_array().into_iter().flatten() {
        if !passes(o, v) {
            invalid(f, path, &shown, "must validate all the schemas (allOf)");
        }
    }
    if let Some(not) = s.get("not")
        && passes(not, v)
    {
        invalid(f, path, &shown, "must not validate the schema (not)");
    }
}

#[cfg(test)]
mod tests;
