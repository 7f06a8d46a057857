//! A registry's schema parsed once ([`Schema`]), and a value decoded with it to JSON: Avro
//! datums, Protobuf messages (the framing's message indexes pick the message) and JSON checked
//! against a JSON Schema.

use std::io::Read as _;

use apache_avro::types::Value as AvroValue;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use tributary_core::decode::{DecodeError, DecodeFailure};

/// The name the schema text gets when it is compiled (imports of Google's well-known types are
/// resolved beside it).
const PROTO_FILE: &str = "registry-schema.proto";

/// A schema as the registry returned it, parsed.
pub enum Schema {
    Avro(apache_avro::Schema),
    /// The compiled file: its messages, in order, are what message indexes point at.
    Protobuf(prost_reflect::FileDescriptor),
    Json(jsonschema::Validator),
}

fn unsupported(message: String) -> DecodeError {
    DecodeError::new(DecodeFailure::Unsupported, message)
}

fn mismatch(message: String) -> DecodeError {
    DecodeError::new(DecodeFailure::Mismatch, message)
}

impl Schema {
    /// Parses a schema of the registry's `schemaType` (`AVRO` when absent).
    pub fn parse(id: u32, kind: &str, text: &str) -> Result<Self, DecodeError> {
        match kind {
            "AVRO" => apache_avro::Schema::parse_str(text)
                .map(Schema::Avro)
                .map_err(|e| unsupported(format!("schema {id} is not an Avro schema the gateway can read: {e}"))),
            "PROTOBUF" => compile_proto(text)
                .map(Schema::Protobuf)
                .map_err(|e| unsupported(format!("schema {id} is not a .proto file the gateway can compile: {e}"))),
            "JSON" => {
                let schema: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| unsupported(format!("schema {id} is not JSON: {e}")))?;
                jsonschema::validator_for(&schema)
                    .map(Schema::Json)
                    .map_err(|e| unsupported(format!("schema {id} is not a JSON Schema the gateway can use: {e}")))
            }
            other => Err(unsupported(format!(
                "schema {id} is of type {other:?}; the gateway decodes AVRO, PROTOBUF and JSON"
            ))),
        }
    }

    /// The JSON of `payload`, the bytes after the framing's schema id.
    pub fn decode(&self, id: u32, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        match self {
            Schema::Avro(schema) => avro(schema, id, payload),
            Schema::Protobuf(file) => protobuf(file, id, payload),
            Schema::Json(validator) => json(validator, id, payload),
        }
    }
}

fn avro(schema: &apache_avro::Schema, id: u32, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut reader = payload;
    let value = apache_avro::from_avro_datum(schema, &mut reader, None)
        .map_err(|e| mismatch(format!("the value is not an Avro datum of schema {id}: {e}")))?;
    if !reader.is_empty() {
        return Err(mismatch(format!(
            "the value has {} bytes after its Avro datum of schema {id} (written with another schema?)",
            reader.len()
        )));
    }
    let json =
        avro_json(value).map_err(|e| mismatch(format!("the Avro datum of schema {id} has no JSON form: {e}")))?;
    Ok(serde_json::to_vec(&json).expect("a JSON value serializes"))
}

/// An Avro value as plain JSON: records and maps as objects, a union as its branch's value, an
/// enum as its symbol, bytes and fixed as arrays of numbers, logical types as apache-avro gives
/// them (dates and timestamps as numbers, decimals as their unscaled bytes, UUIDs as strings).
fn avro_json(value: AvroValue) -> Result<serde_json::Value, String> {
    serde_json::Value::try_from(value).map_err(|e| e.to_string())
}

/// Compiles `.proto` text, with Google's well-known types importable.
fn compile_proto(text: &str) -> Result<prost_reflect::FileDescriptor, String> {
    struct Text(String);
    impl FileResolver for Text {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            if name == PROTO_FILE {
                File::from_source(name, &self.0)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(Text(text.to_string()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(PROTO_FILE).map_err(|e| e.to_string())?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name(PROTO_FILE).ok_or_else(|| "the compiled file is missing".to_string())
}

/// The message indexes of Confluent's Protobuf framing: a zigzag varint count, then that many
/// zigzag varint indexes (a count of 0 means the first message, `[0]`).
fn message_indexes(payload: &mut &[u8]) -> Result<Vec<i64>, String> {
    let count = zigzag(payload)?;
    if count == 0 {
        return Ok(vec![0]);
    }
    if !(1..=64).contains(&count) {
        return Err(format!("{count} message indexes"));
    }
    (0..count).map(|_| zigzag(payload)).collect()
}

fn zigzag(payload: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        payload.read_exact(&mut byte).map_err(|_| "the message indexes end early".to_string())?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("a message index is longer than a varint".into())
}

/// The message `indexes` point at: the n-th top-level message, then its n-th nested one...
fn message_at(file: &prost_reflect::FileDescriptor, indexes: &[i64]) -> Option<MessageDescriptor> {
    let index = |i: i64| usize::try_from(i).ok();
    let mut message = file.messages().nth(index(indexes[0])?)?;
    for &i in &indexes[1..] {
        let child = message.child_messages().nth(index(i)?)?;
        message = child;
    }
    Some(message)
}

fn protobuf(file: &prost_reflect::FileDescriptor, id: u32, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut rest = payload;
    let indexes = message_indexes(&mut rest)
        .map_err(|e| mismatch(format!("the Protobuf framing of schema {id} is broken: {e}")))?;
    let descriptor = message_at(file, &indexes)
        .ok_or_else(|| mismatch(format!("schema {id} has no message at the value's message indexes {indexes:?}")))?;
    let message = DynamicMessage::decode(descriptor.clone(), rest)
        .map_err(|e| mismatch(format!("the value is not a {} of schema {id}: {e}", descriptor.full_name())))?;
    let mut out = Vec::with_capacity(payload.len() * 2);
    let options = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(false);
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .map_err(|e| mismatch(format!("the {} of schema {id} has no JSON form: {e}", descriptor.full_name())))?;
    Ok(out)
}

fn json(validator: &jsonschema::Validator, id: u32, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| mismatch(format!("the value is not JSON: {e}")))?;
    if let Some(error) = validator.iter_errors(&value).next() {
        let at = error.instance_path().to_string();
        let at = if at.is_empty() { "the value".to_string() } else { format!("at {at}") };
        return Err(mismatch(format!("the value does not match JSON Schema {id}: {at}: {error}")));
    }
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER_AVRO: &str = r#"{"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}}
    ]}"#;

    #[test]
    fn an_avro_datum_becomes_plain_json() {
        let schema = Schema::parse(1, "AVRO", ORDER_AVRO).unwrap();
        let Schema::Avro(avro) = &schema else { panic!("avro") };
        let record = AvroValue::Record(vec![
            ("id".into(), AvroValue::String("o-1".into())),
            ("qty".into(), AvroValue::Int(3)),
            ("note".into(), AvroValue::Union(1, Box::new(AvroValue::String("rush".into())))),
            ("status".into(), AvroValue::Enum(1, "PAID".into())),
        ]);
        let datum = apache_avro::to_avro_datum(avro, record).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&schema.decode(1, &datum).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"id": "o-1", "qty": 3, "note": "rush", "status": "PAID"}));

        let mut longer = datum.clone();
        longer.push(0);
        let e = schema.decode(1, &longer).unwrap_err();
        assert_eq!(e.failure, DecodeFailure::Mismatch);
        assert!(e.message.contains("1 bytes after its Avro datum"), "{}", e.message);
        let e = schema.decode(1, &datum[..2]).unwrap_err();
        assert_eq!(e.failure, DecodeFailure::Mismatch, "{}", e.message);
    }

    const SHOP_PROTO: &str = r#"syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        message Order { string id = 1; int32 qty = 2; google.protobuf.Timestamp at = 3;
                        message Line { string sku = 1; } repeated Line lines = 4; }
        message Refund { string order_id = 1; }"#;

    /// A Confluent-framed message's payload: its indexes, then its bytes.
    fn framed_message(indexes: &[u8], message: &DynamicMessage) -> Vec<u8> {
        let mut out = indexes.to_vec();
        out.extend(message.encode_to_vec_dynamic());
        out
    }

    trait EncodeDynamic {
        fn encode_to_vec_dynamic(&self) -> Vec<u8>;
    }

    impl EncodeDynamic for DynamicMessage {
        fn encode_to_vec_dynamic(&self) -> Vec<u8> {
            let mut out = Vec::new();
            prost_reflect::prost::Message::encode(self, &mut out).unwrap();
            out
        }
    }

    #[test]
    fn message_indexes_pick_the_message_and_the_json_uses_proto_field_names() {
        let schema = Schema::parse(2, "PROTOBUF", SHOP_PROTO).unwrap();
        let Schema::Protobuf(file) = &schema else { panic!("protobuf") };
        let refund = file.messages().nth(1).unwrap();
        let mut message = DynamicMessage::new(refund);
        message.set_field_by_name("order_id", prost_reflect::Value::String("o-9".into()));
        // [1]: count 1 (zigzag 2), index 1 (zigzag 2).
        let json = schema.decode(2, &framed_message(&[2, 2], &message)).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), r#"{"order_id":"o-9"}"#);

        let order = file.messages().next().unwrap();
        let mut message = DynamicMessage::new(order);
        message.set_field_by_name("id", prost_reflect::Value::String("o-1".into()));
        // The first message: a count of 0 stands for [0]. Defaults are written out.
        let json: serde_json::Value =
            serde_json::from_slice(&schema.decode(2, &framed_message(&[0], &message)).unwrap()).unwrap();
        assert_eq!(json["id"], "o-1");
        assert_eq!(json["qty"], 0);

        // [0, 0]: the nested Line of Order.
        let line = file.messages().next().unwrap().child_messages().next().unwrap();
        let mut message = DynamicMessage::new(line);
        message.set_field_by_name("sku", prost_reflect::Value::String("s".into()));
        let json = schema.decode(2, &framed_message(&[4, 0, 0], &message)).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), r#"{"sku":"s"}"#);

        let e = schema.decode(2, &[2, 10]).unwrap_err();
        assert!(e.message.contains("no message at the value's message indexes [5]"), "{}", e.message);
        let e = schema.decode(2, &[0, 0xff]).unwrap_err();
        assert_eq!(e.failure, DecodeFailure::Mismatch);
        assert!(e.message.contains("is not a shop.Order"), "{}", e.message);
        let e = schema.decode(2, &[]).unwrap_err();
        assert!(e.message.contains("end early"), "{}", e.message);
    }

    #[test]
    fn a_json_value_is_checked_against_its_schema_and_kept_as_it_is() {
        let schema = Schema::parse(
            3,
            "JSON",
            r#"{"type": "object", "properties": {"qty": {"type": "integer"}}, "required": ["qty"]}"#,
        )
        .unwrap();
        assert_eq!(schema.decode(3, br#"{"qty": 2}"#).unwrap(), br#"{"qty": 2}"#);
        let e = schema.decode(3, br#"{"qty": "two"}"#).unwrap_err();
        assert_eq!(e.failure, DecodeFailure::Mismatch);
        assert!(e.message.contains("at /qty"), "{}", e.message);
        let e = schema.decode(3, br#"{}"#).unwrap_err();
        assert!(e.message.contains("qty"), "{}", e.message);
        assert!(schema.decode(3, b"{not json").unwrap_err().message.contains("not JSON"));
    }

    #[test]
    fn schemas_the_gateway_cannot_use_are_unsupported_not_a_crash() {
        for (kind, text) in
            [("AVRO", "{\"type\": \"nope\"}"), ("PROTOBUF", "message {"), ("JSON", "[1"), ("XML", "<a/>")]
        {
            let e = Schema::parse(7, kind, text).err().expect(kind);
            assert_eq!(e.failure, DecodeFailure::Unsupported, "{kind}: {}", e.message);
            assert!(e.message.contains("schema 7"), "{}", e.message);
        }
    }
}
