//! A relayed payload (a description, a candidate, anything a client sends on to others), kept
//! as the JSON text it arrived as and shared, not copied, among its recipients: a signal to a
//! room of eight is encoded once, not once per recipient.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// A payload's JSON text, shared.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The payload of `v`.
    pub fn new(v: &Value) -> Self {
        let raw = serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Payload(Arc::from(raw))
    }

    /// Its JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload::new(&v)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

/// Payloads are never logged: their size only.
impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.json().len())
    }
}

/// Written as its text, verbatim.
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Read as any JSON value (the messages between nodes carry it inside tagged enums, which
/// serde buffers, so the raw text is not at hand there).
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Payload::new(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_payload_is_written_as_it_came_and_read_back_equal() {
        let p = Payload::new(&json!({"candidate": "a=1", "n": [1, 2.5, null]}));
        let framed = serde_json::to_string(&("ice", &p)).unwrap();
        assert_eq!(framed, r#"["ice",{"candidate":"a=1","n":[1,2.5,null]}]"#);
        let back: Payload = serde_json::from_str(p.json()).unwrap();
        assert_eq!(back, p);
        assert_eq!(format!("{p:?}"), "Payload(36 bytes)");
    }
}
