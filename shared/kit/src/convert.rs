//! Conversions between protobuf well-known types and Rust values.

use chrono::{DateTime, TimeZone, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};

/// A `google.protobuf.Timestamp` for `t`.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The instant of a `google.protobuf.Timestamp`, or `None` when it is out of
/// range (years 1..=9999) or its nanos are not in 0..1e9.
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos)
        || !(-62_135_596_800..=253_402_300_799).contains(&t.seconds)
    {
        return None;
    }
    Utc.timestamp_opt(t.seconds, t.nanos as u32).single()
}

/// A JSON object as a `google.protobuf.Struct` (other JSON values are wrapped
/// under the key `value`).
pub fn json_to_struct(v: serde_json::Value) -> Struct {
    match v {
        serde_json::Value::Object(map) => Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        },
        other => Struct {
            fields: [("value".to_string(), json_to_value(other))]
                .into_iter()
                .collect(),
        },
    }
}

/// A JSON value as a `google.protobuf.Value`.
pub fn json_to_value(v: serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(v)),
    };
    Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object.
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// A `google.protobuf.Value` as JSON. Non-finite numbers become null.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let v = serde_json::json!({"a": 1.5, "b": [true, null, "x"], "c": {"d": "e"}});
        assert_eq!(struct_to_json(&json_to_struct(v.clone())), v);
    }

    #[test]
    fn timestamps_round_trip_and_reject_out_of_range() {
        let t = Utc.with_ymd_and_hms(2024, 2, 29, 12, 0, 1).unwrap();
        assert_eq!(from_timestamp(&timestamp(t)), Some(t));
        assert!(
            from_timestamp(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            })
            .is_none()
        );
        assert!(
            from_timestamp(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_none()
        );
    }
}
