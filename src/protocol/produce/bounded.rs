//! JSON frames and bodies parsed with their record count bounded by `MAX_FRAME_RECORDS`, so a
//! frame of half a million array elements costs no more than one at the limit.

use std::cell::Cell;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::MAX_FRAME_RECORDS;

/// A JSON frame or body, parsed with its record count bounded: an array of more than
/// `MAX_FRAME_RECORDS` elements is not built, so a 1 MiB frame of `[0,0,...]` costs no half a
/// million values.
pub(super) enum Parsed {
    Object(Map<String, Value>),
    /// At most `MAX_FRAME_RECORDS` elements.
    Array(Vec<Value>),
    /// An array of more than `MAX_FRAME_RECORDS` elements.
    TooMany,
    /// Anything else, by `kind`.
    Other(&'static str),
}

/// Parses a JSON frame or body into `Parsed`. An array stops being read at its
/// `MAX_FRAME_RECORDS + 1`th element: the frame is `TooMany` whatever follows, so an oversized
/// frame costs no more than a frame at the limit.
pub(super) fn parse_bounded(frame: &[u8]) -> Result<Parsed, serde_json::Error> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(frame);
    match ParsedSeed(&over).deserialize(&mut de) {
        Ok(v) => de.end().map(|()| v),
        Err(_) if over.get() => Ok(Parsed::TooMany),
        Err(e) => Err(e),
    }
}

/// Deserializes `Parsed`, setting the flag when an array holds too many elements.
struct ParsedSeed<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for ParsedSeed<'_> {
    type Value = Parsed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParsedSeed<'_> {
    type Value = Parsed;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record object or an array of records")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Parsed, A::Error> {
        let d = serde::de::value::MapAccessDeserializer::new(map);
        Ok(Parsed::Object(Map::deserialize(d)?))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            if items.len() == MAX_FRAME_RECORDS {
                self.0.set(true);
                return Err(serde::de::Error::custom("too many records"));
            }
            items.push(item);
        }
        Ok(Parsed::Array(items))
    }
    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(Parsed::Other("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed::Other("a string"))
    }
}

/// A JSON array of at most `MAX_FRAME_RECORDS` elements; more fail to parse.
pub(super) struct Bounded<T>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Bounded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Bounded<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_FRAME_RECORDS} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bounded<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX_FRAME_RECORDS {
                        return Err(serde::de::Error::invalid_length(items.len() + 1, &self));
                    }
                    items.push(item);
                }
                Ok(Bounded(items))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}
