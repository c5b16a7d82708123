//! Lenient, spanned shapes for serde.
//!
//! serde reads the file into the typed tables of `policy` and does the type
//! checking; these wrappers keep where every key and value is, and keep a
//! value of the wrong type (as the TOML value it was) instead of failing
//! the whole file, so that the checks that follow can name every problem
//! with its line.

use std::{fmt, marker::PhantomData, ops::Range};

use serde::de::{
    self, value::MapAccessDeserializer, DeserializeOwned, DeserializeSeed, Deserializer,
    IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use toml::{Spanned, Value};

/// A value of type `T`, or what was written instead.
#[derive(Debug)]
pub enum Val<T> {
    Ok(T),
    Bad(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Val<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match T::deserialize(v.clone()) {
            Ok(t) => Val::Ok(t),
            Err(_) => Val::Bad(v),
        })
    }
}

/// A table (`[name]` or inline) read as `T`, with the keys it holds and
/// where they are; or what was written instead of a table.
#[derive(Debug)]
pub struct Section<T> {
    pub keys: Vec<(String, Range<usize>)>,
    pub body: Result<T, Value>,
}

/// An array of `E` (each with its span), or what was written instead.
#[derive(Debug)]
pub enum List<E> {
    Items(Vec<Spanned<E>>),
    Bad(Value),
}

/// An optional key of a table.
pub type Field<T> = Option<Spanned<Val<T>>>;
/// An optional table.
pub type Sec<T> = Option<Spanned<Section<T>>>;
/// An optional array.
pub type Many<E> = Option<Spanned<List<E>>>;

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Shape(PhantomData::<Section<T>>))
    }
}

impl<'de, E: Deserialize<'de>> Deserialize<'de> for List<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Shape(PhantomData::<List<E>>))
    }
}

/// What `Shape` builds: from a table, from an array, or from anything else.
trait Shaped<'de>: Sized {
    fn table<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
    fn other(v: Value) -> Self;
}

impl<'de, T: DeserializeOwned> Shaped<'de> for Section<T> {
    fn table<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut keys = Vec::new();
        let body = T::deserialize(MapAccessDeserializer::new(KeyRecorder {
            map,
            keys: &mut keys,
        }))?;
        Ok(Section {
            keys,
            body: Ok(body),
        })
    }
    fn array<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Ok(Self::other(values(seq)?))
    }
    fn other(v: Value) -> Self {
        Section {
            keys: Vec::new(),
            body: Err(v),
        }
    }
}

impl<'de, E: Deserialize<'de>> Shaped<'de> for List<E> {
    fn table<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Ok(List::Bad(Value::deserialize(MapAccessDeserializer::new(
            map,
        ))?))
    }
    fn array<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List::Items(items))
    }
    fn other(v: Value) -> Self {
        List::Bad(v)
    }
}

fn values<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Value, A::Error> {
    let mut items = Vec::new();
    while let Some(v) = seq.next_element()? {
        items.push(v);
    }
    Ok(Value::Array(items))
}

struct Shape<S>(PhantomData<S>);

impl<'de, S: Shaped<'de>> Visitor<'de> for Shape<S> {
    type Value = S;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<S, A::Error> {
        S::table(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<S, A::Error> {
        S::array(seq)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<S, E> {
        Ok(S::other(Value::Boolean(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<S, E> {
        Ok(S::other(Value::Integer(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<S, E> {
        Ok(S::other(Value::Integer(v.try_into().unwrap_or(i64::MAX))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S, E> {
        Ok(S::other(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<S, E> {
        Ok(S::other(Value::String(v.to_string())))
    }
}

/// Hands a table's keys to `T`'s derived reader, noting each key and its
/// span on the way (serde alone drops the keys `T` does not know).
struct KeyRecorder<'k, A> {
    map: A,
    keys: &'k mut Vec<(String, Range<usize>)>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for KeyRecorder<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.map.next_key::<Spanned<String>>()? else {
            return Ok(None);
        };
        self.keys.push((key.get_ref().clone(), key.span()));
        let name: de::value::StringDeserializer<A::Error> = key.into_inner().into_deserializer();
        seed.deserialize(name).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// The keys a derived table reads, in declaration order: what serde is
/// given as the struct's fields, so the list cannot drift from the type.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields only"))
        }
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut out));
    out
}
