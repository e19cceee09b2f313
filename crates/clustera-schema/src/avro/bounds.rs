//! A bounds check of an Avro binary datum against its writer's schema, run before
//! `apache-avro` decodes it.
//!
//! Why by hand: `apache-avro` (0.21) reserves memory for an array or map block from the
//! count the datum declares, before reading a single item, and recurses once per nesting
//! level of a recursive schema. A hostile 5-byte record can so make it allocate gigabytes
//! (found by this crate's fuzz target), and a deep one overflow the stack: one poison pill
//! would take the whole kernel down instead of being dead-lettered. No option of the crate
//! bounds either per call (its `max_allocation_bytes` is process-wide and counts bytes, not
//! items), so this pass walks the datum without allocating and refuses, before decoding:
//!
//! - a length (bytes, string) or a block count larger than the bytes left; a block of
//!   zero-width items (nulls, empty records) is bounded the same way, which only refuses
//!   arrays no real writer produces;
//! - nesting deeper than [`MAX_DEPTH`].
//!
//! Everything else (a union index out of range, an enum index, a truncated datum) is left to
//! `apache-avro`'s own errors; this pass only has to be right about what it refuses.

use apache_avro::schema::{Name, Namespace, ResolvedSchema};
use apache_avro::Schema;
use std::collections::HashMap;

/// The deepest nesting of records, arrays, maps and unions accepted.
pub const MAX_DEPTH: usize = 128;

/// The named types of a schema, by full name, for resolving references.
pub(crate) type Names = HashMap<Name, Schema>;

/// The named types `schema` defines.
pub(crate) fn names(schema: &Schema) -> Result<Names, String> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    Ok(resolved
        .get_names()
        .iter()
        .map(|(name, s)| (name.clone(), (*s).clone()))
        .collect())
}

/// `Ok` when decoding `payload` with `schema` stays within the bounds above.
pub(crate) fn check(schema: &Schema, names: &Names, payload: &[u8]) -> Result<(), String> {
    let mut scan = Scan {
        names,
        input: payload,
        depth: 0,
    };
    scan.value(schema, &None)
}

struct Scan<'a> {
    names: &'a Names,
    input: &'a [u8],
    depth: usize,
}

impl Scan<'_> {
    fn value(&mut self, schema: &Schema, namespace: &Namespace) -> Result<(), String> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.varint().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Bytes | Schema::String | Schema::BigDecimal | Schema::Uuid => {
                let len = self.length("a length")?;
                self.skip(len)
            }
            Schema::Fixed(fixed) => self.skip(fixed.size),
            Schema::Duration => self.skip(12),
            Schema::Decimal(decimal) => self.value(&decimal.inner, namespace),
            Schema::Union(union) => {
                if self.input.is_empty() {
                    // apache-avro reads a union at the very end as null.
                    return Ok(());
                }
                let index = self.varint()?;
                match usize::try_from(index)
                    .ok()
                    .and_then(|i| union.variants().get(i))
                {
                    Some(variant) => self.nested(|s| s.value(variant, namespace)),
                    // Out of range: apache-avro reports it.
                    None => Ok(()),
                }
            }
            Schema::Record(record) => {
                let name = record.name.fully_qualified_name(namespace);
                self.nested(|s| {
                    for field in &record.fields {
                        s.value(&field.schema, &name.namespace)?;
                    }
                    Ok(())
                })
            }
            Schema::Array(array) => self.nested(|s| s.blocks(|s| s.value(&array.items, namespace))),
            Schema::Map(map) => self.nested(|s| {
                s.blocks(|s| {
                    let len = s.length("a map key's length")?;
                    s.skip(len)?;
                    s.value(&map.types, namespace)
                })
            }),
            Schema::Ref { name } => {
                let name = name.fully_qualified_name(namespace);
                match self.names.get(&name) {
                    Some(target) => self.nested(|s| s.value(target, &name.namespace)),
                    // Unresolvable: apache-avro reports it.
                    None => Ok(()),
                }
            }
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// Array and map blocks: a count, then (for a negative count) a byte size, then items.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let raw = self.varint()?;
            if raw == 0 {
                return Ok(());
            }
            if raw < 0 {
                self.varint()?;
            }
            let count = raw.unsigned_abs();
            if count > self.input.len() as u64 {
                return Err(format!(
                    "a block of {count} items with {} bytes left",
                    self.input.len()
                ));
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    fn length(&mut self, what: &str) -> Result<usize, String> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(n) if n <= self.input.len() => Ok(n),
            _ => Err(format!(
                "{what} of {len} with {} bytes left",
                self.input.len()
            )),
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        match self.input.get(n..) {
            Some(rest) => {
                self.input = rest;
                Ok(())
            }
            None => Err(format!(
                "truncated: {n} bytes needed, {} left",
                self.input.len()
            )),
        }
    }

    /// A zigzag varint of at most 10 bytes.
    fn varint(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for (i, byte) in self.input.iter().take(10).enumerate() {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.input = &self.input[i + 1..];
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err("truncated or overlong variable-length integer".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    fn check(schema: &Schema, payload: &[u8]) -> Result<(), String> {
        super::check(schema, &names(schema).unwrap(), payload)
    }

    #[test]
    fn hostile_block_counts_are_refused_before_decoding() {
        // A map of "a billion" entries in 5 bytes: what the fuzz target found.
        let map = schema(r#"{"type":"map","values":"double"}"#);
        let err = check(&map, &[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
        assert!(
            err.contains("a block of 2147483647 items with 0 bytes left"),
            "{err}"
        );
        let array = schema(r#"{"type":"array","items":"null"}"#);
        assert!(check(&array, &[0x80, 0x80, 0x80, 0x08]).is_err());
        let string = schema(r#""string""#);
        assert!(check(&string, &[0xfe, 0xff, 0xff, 0xff, 0x0f, b'x']).is_err());
    }

    #[test]
    fn valid_data_passes_exactly() {
        let record = schema(
            r#"{"type":"record","name":"R","namespace":"n","fields":[
                {"name":"s","type":"string"},
                {"name":"m","type":{"type":"map","values":"long"}},
                {"name":"a","type":{"type":"array","items":["null","int"]}},
                {"name":"f","type":{"type":"fixed","name":"F","size":2}},
                {"name":"again","type":["null","F"]}]}"#,
        );
        // "hi"; map {"k": 1}; array [null, 3] as a negative-count block with its byte size;
        // fixed 2 bytes; union branch 1 → F by reference.
        let bytes = [
            0x04, b'h', b'i', 0x02, 0x02, b'k', 0x02, 0x00, 0x03, 0x06, 0x00, 0x02, 0x06, 0x00,
            0xaa, 0xbb, 0x02, 0xcc, 0xdd,
        ];
        check(&record, &bytes).unwrap();
        let decoded = apache_avro::from_avro_datum(&record, &mut &bytes[..], None);
        assert!(decoded.is_ok(), "{decoded:?}");
    }

    #[test]
    fn recursion_is_bounded() {
        let list = schema(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"next","type":["null","Node"]}]}"#,
        );
        check(&list, &[0x02, 0x02, 0x00]).unwrap();
        let deep = vec![0x02; 10_000];
        let err = check(&list, &deep).unwrap_err();
        assert!(err.contains("deeper than 128"), "{err}");
    }
}
