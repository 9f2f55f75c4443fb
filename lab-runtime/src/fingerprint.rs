//! A request's fingerprint: SHA-256 of the body's canonical JSON (the
//! provider's keys, and the parsing of the API's orders). Students need not edit this file.
//!
//! Canonical JSON: object keys sorted (by their UTF-8 bytes, i.e. by code
//! point) at every depth, no whitespace, strings and numbers as serde_json
//! writes them. `{"b":1,"a":[{"d":2,"c":3}]}` and `{ "a": [ {"c":3, "d":2} ], "b": 1 }`
//! have the same fingerprint. The workspace's serde_json keeps keys in their
//! order of arrival (`preserve_order`), so the sorting here is explicit.
//!
//! The body is parsed with [`parse_strict`]: a key repeated in one object is
//! refused, since the two readings (first or last wins) would charge different things.

use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Parses JSON like `serde_json::from_slice::<Value>`, but refuses an object
/// that repeats a key.
pub fn parse_strict(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<Strict>(bytes).map(|strict| strict.0)
}

/// `value` as canonical JSON text.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// The SHA-256 of `value`'s canonical JSON, as 64 lowercase hex digits.
pub fn fingerprint(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (n, (key, value)) in entries.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                // A string's JSON text: serializing a `str` cannot fail.
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A JSON value read by [`StrictVisitor`].
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

/// serde_json's own `Value` visitor, minus "the last of two equal keys wins".
struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        // serde_json never reads NaN or infinity, so this is never null in practice.
        Ok(Strict(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Strict(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint() {
        let a = parse_strict(br#"{"b":1,"a":[{"d":2,"c":"x"}],"e":{"z":null,"y":true}}"#).unwrap();
        let b = parse_strict(
            b" { \"e\": {\"y\": true, \"z\": null}, \"a\": [ {\"c\":\"x\", \"d\":2} ], \"b\": 1 }",
        )
        .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":[{"c":"x","d":2}],"b":1,"e":{"y":true,"z":null}}"#
        );
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn any_change_of_content_changes_the_fingerprint() {
        let base = fingerprint(&parse_strict(br#"{"a":1,"b":[1,2]}"#).unwrap());
        for other in [
            r#"{"a":2,"b":[1,2]}"#,
            r#"{"a":1,"b":[2,1]}"#,
            r#"{"a":1,"b":[1,2],"c":null}"#,
            r#"{"a":"1","b":[1,2]}"#,
            r#"{"a":1.0,"b":[1,2]}"#,
        ] {
            let fp = fingerprint(&parse_strict(other.as_bytes()).unwrap());
            assert_ne!(fp, base, "{other}");
        }
    }

    #[test]
    fn the_fingerprint_is_sha256_of_the_canonical_text() {
        // SHA-256("{}"), a published test value.
        assert_eq!(
            fingerprint(&parse_strict(b"{}").unwrap()),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn strings_are_escaped_the_same_way_whatever_the_input_escapes() {
        let a = parse_strict(br#"{"k\u00e9":"\u0041\n"}"#).unwrap();
        let b = parse_strict("{\"k\u{e9}\":\"A\\n\"}".as_bytes()).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"a":1,"a":1}}"#,
            r#"[{"a":1,"a":2}]"#,
        ] {
            let err = parse_strict(bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("appears twice"), "{bad}: {err}");
        }
        assert!(parse_strict(br#"{"a":{"a":1},"b":{"a":2}}"#).is_ok());
    }
}
