//! Strict JSON for request bodies: serde_json keeps the last of two equal keys, so
//! `{"memory_required": 1, "memory_required": 1e9}` would mean whatever the last parser in
//! a chain of proxies thinks. We refuse duplicates, at any depth, while building the value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not strict JSON: `path` is where (`.` for the top level, `env` inside it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("{message}")]
    Data { path: String, message: String },
}

/// Parses `body` as one JSON value whose objects have no key twice.
pub fn parse_strict(body: &[u8]) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize::<_, Strict>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            // Our own refusal (a duplicate key): serde_json appends " at line 1 column N".
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or_default().to_string();
            StrictJsonError::Data { path, message }
        } else {
            StrictJsonError::Syntax(inner.to_string())
        }
    })?;
    de.end().map_err(|e| StrictJsonError::Syntax(e.to_string()))?;
    Ok(value.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite float; `Null` would be a safe answer anyway.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(path: &str, message: &str) -> StrictJsonError {
        StrictJsonError::Data { path: path.into(), message: message.into() }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_with_where() {
        assert_eq!(parse_strict(br#"{"a":1,"a":2}"#), Err(data(".", r#"duplicate key "a""#)));
        assert_eq!(parse_strict(br#"{"env":{"X":"1","X":"2"}}"#), Err(data("env", r#"duplicate key "X""#)));
        assert_eq!(
            parse_strict(br#"{"l":[{"k":1},{"k":1,"k":2}]}"#),
            Err(data("l[1]", r#"duplicate key "k""#))
        );
    }

    #[test]
    fn everything_else_is_plain_json() {
        let text = r#"{"a":[1,-2,3.5,"s",null,true,{"b":{}}],"c":18446744073709551615}"#;
        let value = parse_strict(text.as_bytes()).expect("valid");
        assert_eq!(value, serde_json::from_str::<Value>(text).expect("serde_json agrees"));
        assert!(matches!(parse_strict(b"{} x"), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(parse_strict(b"{\"a\":"), Err(StrictJsonError::Syntax(_))));
        // serde_json's recursion limit still holds: no stack overflow on deep nesting.
        let deep = "[".repeat(100_000);
        assert!(matches!(parse_strict(deep.as_bytes()), Err(StrictJsonError::Syntax(_))));
    }
}
