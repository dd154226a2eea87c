//! JSON parsing for what users write (daemon.json, `cairn apply` files): an object key given
//! twice is an error at any depth (serde_json keeps the last one silently, and which one is
//! not what the user meant), and each top-level value keeps its text for messages (serde_json
//! turns 99999999999999999999999 into 1e23).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

/// A JSON value whose objects have no key twice.
struct Strict(Json);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("the key {key:?} is given twice")));
            }
        }
        Ok(Json::Object(out))
    }
}

/// A top-level entry: its key, the value's text as written, and the value.
pub type Entry = (String, String, Json);

/// The entries of a JSON object in order, or `None` when the text is valid JSON but not an
/// object; an error when it is not valid JSON or gives a key twice.
pub fn object_entries(text: &str) -> Result<Option<Vec<Entry>>, serde_json::Error> {
    let raw: Box<RawValue> = serde_json::from_str(text)?;
    if !raw.get().trim_start().starts_with('{') {
        // Valid JSON of another kind: check it parses strictly, then say what it is not.
        serde_json::from_str::<Strict>(text)?;
        return Ok(None);
    }
    let pairs: RawEntries = serde_json::from_str(raw.get())?;
    let mut out = Vec::with_capacity(pairs.0.len());
    for (key, raw) in pairs.0 {
        if out.iter().any(|(k, _, _): &Entry| *k == key) {
            return Err(de::Error::custom(format!("the key {key:?} is given twice")));
        }
        let Strict(value) = serde_json::from_str(raw.get())?;
        out.push((key, raw.get().to_owned(), value));
    }
    Ok(Some(out))
}

/// A JSON object's entries with their values unparsed.
struct RawEntries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawEntries, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = RawEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    out.push((key, map.next_value::<Box<RawValue>>()?));
                }
                Ok(RawEntries(out))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_text_and_duplicates_are_errors() {
        let entries =
            object_entries(r#"{"a": 1.50, "b": {"c": [1, 2]}}"#).expect("valid").expect("object");
        assert_eq!(entries[0].0, "a");
        assert_eq!(entries[0].1, "1.50");
        assert_eq!(entries[1].2, serde_json::json!({"c": [1, 2]}));
        assert!(object_entries(r#"{"a": 1, "a": 2}"#).is_err());
        assert!(object_entries(r#"{"a": {"b": 1, "b": 1}}"#).is_err());
        assert!(object_entries(r#"[{"a": 1, "a": 2}]"#).is_err());
        assert!(matches!(object_entries("[1]"), Ok(None)));
        assert!(object_entries("{").is_err());
    }
}
