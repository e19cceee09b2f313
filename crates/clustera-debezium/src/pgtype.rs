//! Debezium's PostgreSQL type mapping, from the text form of a value (what pgoutput sends) and
//! the column's type OID and modifier.
//!
//! Only Debezium's default settings are implemented, the ones a stock connector runs with:
//! `decimal.handling.mode=precise`, `time.precision.mode=adaptive`,
//! `interval.handling.mode=numeric`, `binary.handling.mode=bytes`. The server must send text in
//! the forms the walsender uses with `DateStyle=ISO`, `IntervalStyle=postgres` and
//! `bytea_output=hex` (PostgreSQL's defaults, except `DateStyle`, which the relay sets).
//!
//! | PostgreSQL | Connect type | Debezium semantic type | value |
//! |---|---|---|---|
//! | `boolean` | `boolean` | | `t` → `true` |
//! | `smallint`, `integer`, `bigint`, `oid` | `int16`, `int32`, `int64`, `int64` | | |
//! | `real`, `double precision` | `float`, `double` | | NaN, ±Infinity as strings (Jackson) |
//! | `numeric(p,s)` | `bytes` | `org.apache.kafka.connect.data.Decimal` (`scale`, `connect.decimal.precision`) | unscaled two's complement, base64 |
//! | `numeric` | `struct` | `io.debezium.data.VariableScaleDecimal` | `{scale, value}`, trailing zeros stripped |
//! | `date` | `int32` | `io.debezium.time.Date` | days since the epoch |
//! | `time(0..3)` | `int32` | `io.debezium.time.Time` | ms past midnight |
//! | `time`, `time(4..6)` | `int64` | `io.debezium.time.MicroTime` | µs past midnight |
//! | `timestamp(0..3)` | `int64` | `io.debezium.time.Timestamp` | ms since the epoch (as UTC) |
//! | `timestamp`, `timestamp(4..6)` | `int64` | `io.debezium.time.MicroTimestamp` | µs since the epoch (as UTC) |
//! | `timestamptz` | `string` | `io.debezium.time.ZonedTimestamp` | ISO-8601 in UTC, fraction padded to the column's precision (6 by default) |
//! | `timetz` | `string` | `io.debezium.time.ZonedTime` | ISO-8601 in UTC |
//! | `interval` | `int64` | `io.debezium.time.MicroDuration` | µs, a month being 365.25/12 days |
//! | `bytea` | `bytes` | | base64 |
//! | `uuid` | `string` | `io.debezium.data.Uuid` | |
//! | `json`, `jsonb` | `string` | `io.debezium.data.Json` | the document's text |
//! | `xml` | `string` | `io.debezium.data.Xml` | |
//! | text types, `inet`, `cidr`, `macaddr[8]`, ranges | `string` | | |
//! | an enum | `string` | `io.debezium.data.Enum` (`allowed`) | |
//! | one-dimensional arrays of the above | `array` | the element's | elements mapped alike |

use base64::Engine as _;

use crate::connect::Schema;
use crate::json_out::Json;
use crate::EncodeError;

/// A user-defined type the caller resolved from the catalog (pgoutput only names such types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserType {
    /// An enum, with its labels in `enumsortorder` (Debezium's `allowed` parameter).
    Enum(Vec<String>),
    /// An array of an enum, with the element's labels.
    EnumArray(Vec<String>),
}

/// One column of the captured table: what pgoutput's Relation message says of it, plus what
/// only the catalog knows (nullability, user-defined types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// The column's name.
    pub name: String,
    /// Its type's OID (`pg_attribute.atttypid`; for a domain, its base type's).
    pub type_oid: u32,
    /// Its type modifier (`atttypmod`; -1 for none): the precision of `numeric(p,s)`,
    /// `time(p)`, `timestamp(p)`, `timestamptz(p)`.
    pub type_modifier: i32,
    /// Part of the replica identity key (pgoutput's column flag 1): a field of Debezium's
    /// record key.
    pub key: bool,
    /// Nullable (`NOT NULL` absent). pgoutput does not say; only the schema's `optional` uses
    /// it. Defaults to `true`.
    pub optional: bool,
    /// The resolved user-defined type, for an OID PostgreSQL does not build in.
    pub user_type: Option<UserType>,
}

impl ColumnDef {
    /// A nullable, non-key column.
    pub fn new(name: impl Into<String>, type_oid: u32, type_modifier: i32) -> Self {
        Self {
            name: name.into(),
            type_oid,
            type_modifier,
            key: false,
            optional: true,
            user_type: None,
        }
    }

    /// Marks the column as part of the key (implies `NOT NULL`).
    pub fn key(mut self) -> Self {
        self.key = true;
        self.optional = false;
        self
    }

    /// Marks the column `NOT NULL`.
    pub fn not_null(mut self) -> Self {
        self.optional = false;
        self
    }

    /// Describes a user-defined type.
    pub fn with_user_type(mut self, user_type: UserType) -> Self {
        self.user_type = Some(user_type);
        self
    }
}

/// Well-known type OIDs (`pg_type.h`).
pub mod oid {
    #![allow(missing_docs)]
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const JSON_ARRAY: u32 = 199;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BOOL_ARRAY: u32 = 1000;
    pub const BYTEA_ARRAY: u32 = 1001;
    pub const CHAR_ARRAY: u32 = 1002;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const OID_ARRAY: u32 = 1028;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMP_ARRAY: u32 = 1115;
    pub const DATE_ARRAY: u32 = 1182;
    pub const TIME_ARRAY: u32 = 1183;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const TIMETZ: u32 = 1266;
    pub const TIMETZ_ARRAY: u32 = 1270;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const UUID_ARRAY: u32 = 2951;
    pub const JSONB: u32 = 3802;
    pub const JSONB_ARRAY: u32 = 3807;
    pub const INT4RANGE: u32 = 3904;
    pub const NUMRANGE: u32 = 3906;
    pub const TSRANGE: u32 = 3908;
    pub const TSTZRANGE: u32 = 3910;
    pub const DATERANGE: u32 = 3912;
    pub const INT8RANGE: u32 = 3926;
    pub const CIDR_ARRAY: u32 = 651;
    pub const MACADDR8_ARRAY: u32 = 775;
    pub const MACADDR_ARRAY: u32 = 1040;
    pub const INET_ARRAY: u32 = 1041;
    pub const INT4RANGE_ARRAY: u32 = 3905;
    pub const NUMRANGE_ARRAY: u32 = 3907;
    pub const TSRANGE_ARRAY: u32 = 3909;
    pub const TSTZRANGE_ARRAY: u32 = 3911;
    pub const DATERANGE_ARRAY: u32 = 3913;
    pub const INT8RANGE_ARRAY: u32 = 3927;
}

/// How a column is mapped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mapped {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// A plain string.
    Text,
    /// A string with a Debezium semantic name (`Json`, `Uuid`, `Xml`).
    NamedText(&'static str),
    Enum(Vec<String>),
    Decimal {
        precision: u32,
        scale: u32,
    },
    VariableDecimal,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    /// `timestamptz`, with the number of fractional digits Debezium prints.
    ZonedTimestamp(u32),
    ZonedTime,
    Interval,
    Bytes,
    Array(Box<Mapped>),
}

/// The precision of a `time`/`timestamp`/`timestamptz` column: its modifier, or 6 without one
/// (what the JDBC driver reports, and Debezium uses to choose the adaptive type).
fn time_precision(type_modifier: i32) -> u32 {
    u32::try_from(type_modifier).unwrap_or(6)
}

fn time_mapping(type_modifier: i32) -> Mapped {
    if time_precision(type_modifier) <= 3 {
        Mapped::TimeMillis
    } else {
        Mapped::TimeMicros
    }
}

fn timestamp_mapping(type_modifier: i32) -> Mapped {
    if time_precision(type_modifier) <= 3 {
        Mapped::TimestampMillis
    } else {
        Mapped::TimestampMicros
    }
}

/// `numeric(p,s)`: PostgreSQL stores `((p << 16) | s) + 4` (VARHDRSZ) in the modifier; -1
/// means unconstrained, which Debezium maps to `VariableScaleDecimal`.
fn numeric_mapping(column: &ColumnDef) -> Result<Mapped, EncodeError> {
    if column.type_modifier < 4 {
        return Ok(Mapped::VariableDecimal);
    }
    let packed = (column.type_modifier - 4) as u32;
    let precision = (packed >> 16) & 0xffff;
    let scale = packed & 0x7ff;
    // PostgreSQL 15 allows a negative scale (an 11-bit two's complement); Debezium reads the
    // modifier through the JDBC driver, which does not know it. Refuse rather than guess.
    if scale & 0x400 != 0 {
        return Err(EncodeError::UnsupportedType {
            column: column.name.clone(),
            type_oid: column.type_oid,
            why: "numeric with a negative scale".into(),
        });
    }
    Ok(Mapped::Decimal { precision, scale })
}

/// The mapping of a column, `Ok(None)` for a type this encoder does not know.
pub(crate) fn mapping(column: &ColumnDef) -> Result<Option<Mapped>, EncodeError> {
    use oid::*;
    if let Some(user) = &column.user_type {
        return Ok(Some(match user {
            UserType::Enum(values) => Mapped::Enum(values.clone()),
            UserType::EnumArray(values) => Mapped::Array(Box::new(Mapped::Enum(values.clone()))),
        }));
    }
    let tm = column.type_modifier;
    let array = |m: Mapped| Some(Mapped::Array(Box::new(m)));
    Ok(match column.type_oid {
        BOOL => Some(Mapped::Bool),
        INT2 => Some(Mapped::Int16),
        INT4 => Some(Mapped::Int32),
        INT8 | OID => Some(Mapped::Int64),
        FLOAT4 => Some(Mapped::Float32),
        FLOAT8 => Some(Mapped::Float64),
        TEXT | VARCHAR | BPCHAR | CHAR | NAME | INET | CIDR | MACADDR | MACADDR8 | INT4RANGE
        | NUMRANGE | INT8RANGE | TSRANGE | TSTZRANGE | DATERANGE => Some(Mapped::Text),
        JSON | JSONB => Some(Mapped::NamedText("io.debezium.data.Json")),
        UUID => Some(Mapped::NamedText("io.debezium.data.Uuid")),
        XML => Some(Mapped::NamedText("io.debezium.data.Xml")),
        NUMERIC => Some(numeric_mapping(column)?),
        DATE => Some(Mapped::Date),
        TIME => Some(time_mapping(tm)),
        TIMESTAMP => Some(timestamp_mapping(tm)),
        TIMESTAMPTZ => Some(Mapped::ZonedTimestamp(time_precision(tm))),
        TIMETZ => Some(Mapped::ZonedTime),
        INTERVAL => Some(Mapped::Interval),
        BYTEA => Some(Mapped::Bytes),
        BOOL_ARRAY => array(Mapped::Bool),
        INT2_ARRAY => array(Mapped::Int16),
        INT4_ARRAY => array(Mapped::Int32),
        INT8_ARRAY | OID_ARRAY => array(Mapped::Int64),
        FLOAT4_ARRAY => array(Mapped::Float32),
        FLOAT8_ARRAY => array(Mapped::Float64),
        TEXT_ARRAY | VARCHAR_ARRAY | BPCHAR_ARRAY | CHAR_ARRAY | INET_ARRAY | CIDR_ARRAY
        | MACADDR_ARRAY | MACADDR8_ARRAY | TSRANGE_ARRAY | TSTZRANGE_ARRAY | DATERANGE_ARRAY
        | INT4RANGE_ARRAY | NUMRANGE_ARRAY | INT8RANGE_ARRAY => array(Mapped::Text),
        JSON_ARRAY | JSONB_ARRAY => array(Mapped::NamedText("io.debezium.data.Json")),
        UUID_ARRAY => array(Mapped::NamedText("io.debezium.data.Uuid")),
        NUMERIC_ARRAY => array(numeric_mapping(column)?),
        DATE_ARRAY => array(Mapped::Date),
        TIME_ARRAY => array(time_mapping(tm)),
        TIMESTAMP_ARRAY => array(timestamp_mapping(tm)),
        TIMESTAMPTZ_ARRAY => array(Mapped::ZonedTimestamp(time_precision(tm))),
        TIMETZ_ARRAY => array(Mapped::ZonedTime),
        BYTEA_ARRAY => array(Mapped::Bytes),
        _ => None,
    })
}

impl Mapped {
    /// The Kafka Connect schema of a field of this type.
    pub(crate) fn schema(&self, optional: bool) -> Schema {
        let s = match self {
            Mapped::Bool => Schema::primitive("boolean"),
            Mapped::Int16 => Schema::primitive("int16"),
            Mapped::Int32 => Schema::primitive("int32"),
            Mapped::Int64 => Schema::primitive("int64"),
            Mapped::Float32 => Schema::primitive("float"),
            Mapped::Float64 => Schema::primitive("double"),
            Mapped::Text => Schema::primitive("string"),
            Mapped::NamedText(name) => Schema::named("string", name),
            Mapped::Enum(values) => Schema::named("string", "io.debezium.data.Enum")
                .parameter("allowed", values.join(",")),
            Mapped::Decimal { precision, scale } => {
                Schema::named("bytes", "org.apache.kafka.connect.data.Decimal")
                    .parameter("scale", scale.to_string())
                    .parameter("connect.decimal.precision", precision.to_string())
            }
            Mapped::VariableDecimal => {
                let mut s = Schema::structure(
                    Some("io.debezium.data.VariableScaleDecimal".into()),
                    vec![
                        ("scale".into(), Schema::primitive("int32")),
                        ("value".into(), Schema::primitive("bytes")),
                    ],
                )
                .version(1);
                s.doc = Some("Variable scaled decimal");
                s
            }
            Mapped::Date => Schema::named("int32", "io.debezium.time.Date"),
            Mapped::TimeMillis => Schema::named("int32", "io.debezium.time.Time"),
            Mapped::TimeMicros => Schema::named("int64", "io.debezium.time.MicroTime"),
            Mapped::TimestampMillis => Schema::named("int64", "io.debezium.time.Timestamp"),
            Mapped::TimestampMicros => Schema::named("int64", "io.debezium.time.MicroTimestamp"),
            Mapped::ZonedTimestamp(_) => Schema::named("string", "io.debezium.time.ZonedTimestamp"),
            Mapped::ZonedTime => Schema::named("string", "io.debezium.time.ZonedTime"),
            Mapped::Interval => Schema::named("int64", "io.debezium.time.MicroDuration"),
            Mapped::Bytes => Schema::primitive("bytes"),
            Mapped::Array(element) => Schema::array(element.schema(true)),
        };
        s.with_optional(optional)
    }

    /// Appends the JSON of a non-null value to `out`; the common types without building a
    /// value first.
    pub(crate) fn write_value(&self, text: &str, out: &mut String) -> Result<(), String> {
        match self {
            Mapped::Text | Mapped::NamedText(_) | Mapped::Enum(_) => {
                crate::json_out::write_string(out, text)
            }
            Mapped::Int16 | Mapped::Int32 | Mapped::Int64 => match self.value(text)? {
                Json::Int(n) => {
                    let _ = std::fmt::Write::write_fmt(out, format_args!("{n}"));
                }
                other => other.write(out),
            },
            _ => self.value(text)?.write(out),
        }
        Ok(())
    }

    /// The value for the text form of a non-null value.
    pub(crate) fn value(&self, text: &str) -> Result<Json, String> {
        Ok(match self {
            // Debezium: `"t".equalsIgnoreCase(value)`.
            Mapped::Bool => Json::Bool(text.eq_ignore_ascii_case("t")),
            Mapped::Int16 => Json::Int(i64::from(parse_int::<i16>(text)?)),
            Mapped::Int32 => Json::Int(i64::from(parse_int::<i32>(text)?)),
            Mapped::Int64 => Json::Int(parse_int::<i64>(text)?),
            Mapped::Float32 => Json::Float(parse_float(text)?),
            Mapped::Float64 => Json::Double(parse_float(text)?),
            Mapped::Text | Mapped::NamedText(_) | Mapped::Enum(_) => Json::str(text),
            Mapped::Decimal { scale, .. } => {
                let d = Decimal::parse(text)?.with_scale(*scale)?;
                Json::Str(base64(&d.unscaled_bytes()))
            }
            Mapped::VariableDecimal => {
                let d = Decimal::parse(text)?.stripped();
                Json::object([
                    ("scale", Json::Int(i64::from(d.scale))),
                    ("value", Json::Str(base64(&d.unscaled_bytes()))),
                ])
            }
            Mapped::Date => Json::Int(i64::from(parse_date(text)?)),
            Mapped::TimeMillis => Json::Int(parse_time(text)? / 1_000),
            Mapped::TimeMicros => Json::Int(parse_time(text)?),
            Mapped::TimestampMillis => Json::Int(match text {
                "infinity" => POSITIVE_INFINITY_MICROS.div_euclid(1_000),
                "-infinity" => NEGATIVE_INFINITY_MICROS.div_euclid(1_000),
                _ => parse_timestamp(text)?.div_euclid(1_000),
            }),
            Mapped::TimestampMicros => Json::Int(match text {
                "infinity" => POSITIVE_INFINITY_MICROS,
                "-infinity" => NEGATIVE_INFINITY_MICROS,
                _ => parse_timestamp(text)?,
            }),
            Mapped::ZonedTimestamp(fraction) => Json::Str(match text {
                "infinity" | "-infinity" => text.to_owned(),
                _ => format_utc_timestamp(parse_timestamptz(text)?, *fraction),
            }),
            Mapped::ZonedTime => Json::Str(parse_timetz(text)?),
            Mapped::Interval => Json::Int(parse_interval(text)?),
            Mapped::Bytes => Json::Str(base64(&parse_bytea(text)?)),
            Mapped::Array(element) => Json::Array(
                parse_array(text)?
                    .into_iter()
                    .map(|e| match e {
                        None => Ok(Json::Null),
                        Some(t) => element.value(&t),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// What the PostgreSQL JDBC driver (and so Debezium) gives `timestamp 'infinity'` and
/// `'-infinity'`, in microseconds (Debezium's documentation, "TIMESTAMP type").
const POSITIVE_INFINITY_MICROS: i64 = 9_223_372_036_825_200_000;
const NEGATIVE_INFINITY_MICROS: i64 = -9_223_372_036_832_400_000;

fn parse_int<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an integer of this size"))
}

/// `NaN`, `Infinity` and `-Infinity` as PostgreSQL prints them; Rust's parser accepts these.
fn parse_float<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a floating-point number"))
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    // Jackson's default Base64 variant: the standard alphabet, padded, no line feeds.
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A decimal as sign, digits (no leading sign or point) and scale.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    scale: u32,
}

impl Decimal {
    /// PostgreSQL's numeric output: `-?digits(.digits)?`. NaN and the infinities cannot be a
    /// Connect Decimal: Debezium stops with an error in `precise` mode, and so does this.
    fn parse(text: &str) -> Result<Self, String> {
        if matches!(text, "NaN" | "Infinity" | "-Infinity") {
            return Err(format!(
                "{text} has no representation with decimal.handling.mode=precise"
            ));
        }
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let valid = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() && frac.is_empty() || !valid(int) || !valid(frac) {
            return Err(format!("{text:?} is not a numeric value"));
        }
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let scale =
            u32::try_from(frac.len()).map_err(|_| format!("{text:?} has too many digits"))?;
        Ok(Self {
            negative,
            digits,
            scale,
        })
    }

    /// Java's `BigDecimal.setScale(scale)` without rounding: padding zeros, or dropping only
    /// zeros (anything else is an error, as it is in Java).
    fn with_scale(mut self, scale: u32) -> Result<Self, String> {
        while self.scale < scale {
            self.digits.push(0);
            self.scale += 1;
        }
        while self.scale > scale {
            if self.digits.last() != Some(&0) {
                return Err(format!("has more than {scale} fractional digits"));
            }
            self.digits.pop();
            self.scale -= 1;
        }
        Ok(self)
    }

    /// `stripTrailingZeros()`, then a negative scale set back to 0: only fractional zeros go.
    fn stripped(mut self) -> Self {
        while self.scale > 0 && self.digits.last() == Some(&0) {
            self.digits.pop();
            self.scale -= 1;
        }
        self
    }

    /// Java's `BigInteger.toByteArray()` of the unscaled value: big-endian two's complement in
    /// the fewest bytes that keep the sign bit (at least one).
    fn unscaled_bytes(&self) -> Vec<u8> {
        // Magnitude, big-endian, by repeated ×10 + digit.
        let mut magnitude: Vec<u8> = vec![0];
        for &d in &self.digits {
            let mut carry = u16::from(d);
            for byte in magnitude.iter_mut().rev() {
                let v = u16::from(*byte) * 10 + carry;
                *byte = (v & 0xff) as u8;
                carry = v >> 8;
            }
            while carry > 0 {
                magnitude.insert(0, (carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        let first = magnitude.iter().position(|b| *b != 0);
        let Some(first) = first else {
            return vec![0];
        };
        let mut bytes: Vec<u8> = Vec::with_capacity(magnitude.len() - first + 1);
        bytes.push(0);
        bytes.extend_from_slice(&magnitude[first..]);
        if self.negative {
            // Two's complement: invert, add one.
            for b in bytes.iter_mut() {
                *b = !*b;
            }
            for b in bytes.iter_mut().rev() {
                let (v, overflow) = b.overflowing_add(1);
                *b = v;
                if !overflow {
                    break;
                }
            }
            // Drop sign-extension bytes that the next byte's sign bit already carries.
            while bytes.len() > 1 && bytes[0] == 0xff && bytes[1] & 0x80 != 0 {
                bytes.remove(0);
            }
        } else {
            while bytes.len() > 1 && bytes[0] == 0 && bytes[1] & 0x80 == 0 {
                bytes.remove(0);
            }
        }
        bytes
    }
}

/// Strips PostgreSQL's ` BC` suffix, returning whether it was there.
fn strip_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (the civil-from-days algorithm of
/// Howard Hinnant's "chrono-compatible low-level date algorithms", in 64-bit arithmetic so
/// PostgreSQL's whole range, 4713 BC to 5874897 AD, fits; Rust's chrono stops at ±262143).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY-MM-DD` (`DateStyle=ISO`), the year possibly longer; `bc` makes year `y` the
/// proleptic year `1 - y`. Returns days since 1970-01-01.
fn parse_ymd(text: &str, bc: bool) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an ISO date (is DateStyle ISO?)");
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => (y, m, d),
        _ => return Err(bad()),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(y) || y.len() > 7 || m.len() != 2 || d.len() != 2 || !digits(m) || !digits(d) {
        return Err(bad());
    }
    let year: i64 = y.parse().map_err(|_| bad())?;
    let year = if bc { 1 - year } else { year };
    let month: u32 = m.parse().map_err(|_| bad())?;
    let day: u32 = d.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day))
}

/// A `date` → days since the epoch, Debezium's `io.debezium.time.Date`.
fn parse_date(text: &str) -> Result<i32, String> {
    if text == "infinity" || text == "-infinity" {
        return Err(format!("date {text} is not supported"));
    }
    let (rest, bc) = strip_bc(text);
    i32::try_from(parse_ymd(rest, bc)?).map_err(|_| format!("{text:?} is out of range"))
}

/// `HH:MM:SS[.ffffff]` → microseconds past midnight (`24:00:00` allowed, as PostgreSQL does).
fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a time of day");
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.split(':');
    let (h, m, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(m), Some(s), None) => (h, m, s),
        _ => return Err(bad()),
    };
    let two = |s: &str| -> Result<i64, String> {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (h, m, s) = (two(h)?, two(m)?, two(s)?);
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    let total = ((h * 60 + m) * 60 + s) * 1_000_000 + micros;
    if m > 59 || s > 59 || total > 86_400_000_000 {
        return Err(bad());
    }
    Ok(total)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]` → microseconds since the epoch, read as UTC.
fn parse_timestamp(text: &str) -> Result<i64, String> {
    let (rest, bc) = strip_bc(text);
    let (date, time) = rest
        .split_once(' ')
        .ok_or_else(|| format!("{text:?} is not an ISO timestamp (is DateStyle ISO?)"))?;
    let days = parse_ymd(date, bc)?;
    let micros = parse_time(time)?;
    days.checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(micros))
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// `+HH`, `+HH:MM`, `+HH:MM:SS` (or `-`) → seconds east of UTC.
fn parse_offset(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a UTC offset");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let mut seconds = 0i64;
    let mut count = 0;
    for (i, part) in rest.split(':').enumerate() {
        if i > 2 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: i64 = part.parse().map_err(|_| bad())?;
        seconds += v * [3600, 60, 1][i];
        count += 1;
    }
    if count == 0 {
        return Err(bad());
    }
    Ok(sign * seconds)
}

/// Splits `…HH:MM:SS[.f]±OFFSET` at the offset's sign.
fn split_offset(text: &str) -> Option<(&str, &str)> {
    let at = text.rfind(['+', '-'])?;
    // The sign must follow the time, not sit inside the date.
    if text[..at].contains(':') {
        Some((&text[..at], &text[at..]))
    } else {
        None
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]][ BC]` → microseconds since the epoch (UTC).
fn parse_timestamptz(text: &str) -> Result<i64, String> {
    let (rest, bc) = strip_bc(text);
    let (local, offset) =
        split_offset(rest).ok_or_else(|| format!("{text:?} has no UTC offset"))?;
    let local = if bc {
        parse_timestamp(&format!("{local} BC"))?
    } else {
        parse_timestamp(local)?
    };
    local
        .checked_sub(parse_offset(offset)? * 1_000_000)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// Java's `ISO_LOCAL_DATE` year: four digits, `+` beyond 9999, `-` before year 0.
fn iso_year(year: i64) -> String {
    if year > 9999 {
        format!("+{year}")
    } else if year < 0 {
        format!("-{:04}", -year)
    } else {
        format!("{year:04}")
    }
}

/// A fraction of a second: `width` digits exactly (Debezium's formatter for a column of that
/// precision), or with `width` 0 as `ISO_LOCAL_TIME` prints it (trailing zeros dropped,
/// nothing when zero).
fn fraction(micros: u32, width: u32) -> String {
    let nanos = format!("{:09}", u64::from(micros) * 1_000);
    if width == 0 || width > 9 {
        let trimmed = nanos.trim_end_matches('0');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!(".{trimmed}")
        }
    } else {
        format!(".{}", &nanos[..width as usize])
    }
}

/// Debezium's `ZonedTimestamp`: ISO-8601 in UTC (`Z`).
fn format_utc_timestamp(micros: i64, width: u32) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let of_day = micros.rem_euclid(86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = of_day / 1_000_000;
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
        iso_year(year),
        month,
        day,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction((of_day % 1_000_000) as u32, width)
    )
}

/// `HH:MM:SS[.ffffff]±HH[:MM[:SS]]` → Debezium's `ZonedTime`: the same instant of the day in
/// UTC, `ISO_OFFSET_TIME`.
fn parse_timetz(text: &str) -> Result<String, String> {
    let (time, offset) = split_offset(text).ok_or_else(|| format!("{text:?} has no UTC offset"))?;
    let micros = parse_time(time)?;
    if micros == 86_400_000_000 {
        return Err(format!("{text:?}: 24:00 has no ZonedTime"));
    }
    let utc = (micros - parse_offset(offset)? * 1_000_000).rem_euclid(86_400_000_000);
    let seconds = utc / 1_000_000;
    Ok(format!(
        "{:02}:{:02}:{:02}{}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction((utc % 1_000_000) as u32, 0)
    ))
}

/// `interval` in `IntervalStyle=postgres` (`1 year 2 mons -3 days +04:05:06.5`) → Debezium's
/// `MicroDuration`: the same double arithmetic as Debezium, months being 365.25/12 days.
fn parse_interval(text: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("{text:?} is not an interval in IntervalStyle postgres: {why}");
    let (mut years, mut months, mut days) = (0i64, 0i64, 0i64);
    let (mut hours, mut minutes, mut seconds) = (0i64, 0i64, 0f64);
    let mut tokens = text.split_whitespace();
    let mut any = false;
    while let Some(token) = tokens.next() {
        any = true;
        if token.contains(':') {
            let (negative, unsigned) = match token.as_bytes().first() {
                Some(b'-') => (true, &token[1..]),
                Some(b'+') => (false, &token[1..]),
                _ => (false, token),
            };
            let mut parts = unsigned.split(':');
            let (h, m, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(h), Some(m), Some(s), None) => (h, m, s),
                (Some(h), Some(m), None, None) => (h, m, "0"),
                _ => return Err(bad("time part")),
            };
            let sign = if negative { -1 } else { 1 };
            hours = sign * h.parse::<i64>().map_err(|_| bad("hours"))?;
            minutes = sign * m.parse::<i64>().map_err(|_| bad("minutes"))?;
            let s: f64 = s.parse().map_err(|_| bad("seconds"))?;
            if !s.is_finite() || s.is_sign_negative() || s >= 60.0 {
                return Err(bad("seconds"));
            }
            seconds = pg_interval_seconds(if negative { -s } else { s });
            continue;
        }
        let n: i64 = token.parse().map_err(|_| bad("number"))?;
        let unit = tokens
            .next()
            .ok_or_else(|| bad("a number without a unit"))?;
        match unit {
            "year" | "years" => years = n,
            "mon" | "mons" => months = n,
            "day" | "days" => days = n,
            _ => return Err(bad("unit")),
        }
    }
    if !any {
        return Err(bad("empty"));
    }
    // io.debezium.time.MicroDuration.durationMicros, operation for operation: Java's int
    // arithmetic for the months, then doubles.
    const DAYS_PER_MONTH_AVG: f64 = 365.25 / 12.0;
    let months_total = (years * 12 + months) as f64;
    let number_of_days = months_total * DAYS_PER_MONTH_AVG + days as f64;
    let number_of_seconds =
        (((number_of_days * 24.0 + hours as f64) * 60.0) + minutes as f64) * 60.0 + seconds;
    Ok((number_of_seconds * 1e6 + 0.0) as i64)
}

/// The seconds the JDBC driver's `PGInterval` hands Debezium: it keeps whole seconds and
/// microseconds (`Math.round(seconds * 1e6)`, ties towards positive infinity) and gives back
/// `whole + micros / 1e6`, which is not always the double that was parsed.
fn pg_interval_seconds(parsed: f64) -> f64 {
    let scaled = parsed * 1e6;
    let floor = scaled.floor();
    let total = if scaled - floor >= 0.5 {
        floor + 1.0
    } else {
        floor
    } as i64;
    let whole = total / 1_000_000;
    let micros = total % 1_000_000;
    whole as f64 + micros as f64 / 1_000_000.0
}

/// `bytea_output=hex`: `\x0a0b…`. Debezium supports only the hex form.
fn parse_bytea(text: &str) -> Result<Vec<u8>, String> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| "bytea is not in hex form (set bytea_output = hex)".to_owned())?;
    if hex.len() % 2 != 0 {
        return Err("bytea hex has an odd number of digits".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bytea has a bad hex digit near {i}"))
        })
        .collect()
}

/// A one-dimensional array literal (`{a,"b c",NULL}`) → its elements' text, `None` for NULL.
fn parse_array(text: &str) -> Result<Vec<Option<String>>, String> {
    // Explicit bounds (`[0:1]={…}`) carry nothing Debezium keeps.
    let body = match text.strip_prefix('[') {
        Some(_) => text
            .split_once('=')
            .map(|(_, b)| b)
            .ok_or_else(|| format!("{text:?} is not an array literal"))?,
        None => text,
    };
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| format!("{text:?} is not an array literal"))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            Some('{') => return Err("multi-dimensional arrays are not supported".into()),
            Some('"') => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => s.push(chars.next().ok_or("unterminated escape")?),
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => return Err("unterminated quoted element".into()),
                    }
                }
                out.push(Some(s));
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    if c == '"' || c == '{' || c == '}' {
                        return Err(format!("unexpected {c:?} in an array element"));
                    }
                    s.push(c);
                    chars.next();
                }
                let s = s.trim();
                if s.is_empty() {
                    return Err("empty array element".into());
                }
                out.push(if s.eq_ignore_ascii_case("NULL") {
                    None
                } else {
                    Some(s.to_owned())
                });
            }
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(format!("unexpected {c:?} after an array element")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Vec<u8> {
        Decimal::parse(text).unwrap().unscaled_bytes()
    }

    #[test]
    fn unscaled_values_as_javas_big_integer_to_byte_array() {
        // BigInteger.valueOf(n).toByteArray() for each n.
        assert_eq!(bytes("0"), [0x00]);
        assert_eq!(bytes("1"), [0x01]);
        assert_eq!(bytes("127"), [0x7f]);
        assert_eq!(bytes("128"), [0x00, 0x80]);
        assert_eq!(bytes("255"), [0x00, 0xff]);
        assert_eq!(bytes("256"), [0x01, 0x00]);
        assert_eq!(bytes("-1"), [0xff]);
        assert_eq!(bytes("-128"), [0x80]);
        assert_eq!(bytes("-129"), [0xff, 0x7f]);
        assert_eq!(bytes("-256"), [0xff, 0x00]);
        assert_eq!(bytes("-32768"), [0x80, 0x00]);
        assert_eq!(bytes("12.34"), [0x04, 0xd2]);
        assert_eq!(bytes("-12.34"), [0xfb, 0x2e]);
        assert_eq!(bytes("0.00"), [0x00]);
        // 2^64 = 18446744073709551616: a leading 0x01 then eight zeros.
        assert_eq!(bytes("18446744073709551616"), [1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn arrays_with_quotes_nulls_and_escapes() {
        assert_eq!(
            parse_array(r#"{a,"b c",NULL,"NULL","x\"y\\z"}"#).unwrap(),
            vec![
                Some("a".into()),
                Some("b c".into()),
                None,
                Some("NULL".into()),
                Some("x\"y\\z".into())
            ]
        );
        assert_eq!(parse_array("{}").unwrap(), Vec::<Option<String>>::new());
        assert_eq!(
            parse_array("[0:1]={1,2}").unwrap(),
            vec![Some("1".into()), Some("2".into())]
        );
        for bad in [
            "{{1,2},{3,4}}",
            "{1,2",
            "1,2}",
            "{\"a}",
            "{a\"b}",
            "{1,,2}",
            "",
        ] {
            assert!(parse_array(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_with_offsets_and_eras() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00").unwrap(), 0);
        assert_eq!(
            parse_timestamp("2018-06-20 15:13:16.945104").unwrap(),
            1_529_507_596_945_104
        );
        assert_eq!(parse_timestamp("1969-12-31 23:59:59.5").unwrap(), -500_000);
        assert_eq!(
            parse_timestamptz("2024-01-15 12:30:00.123456+02").unwrap(),
            1_705_314_600_123_456
        );
        assert_eq!(
            parse_timestamptz("2024-01-15 05:00:00-05:30").unwrap(),
            parse_timestamptz("2024-01-15 10:30:00+00").unwrap()
        );
        assert_eq!(
            format_utc_timestamp(parse_timestamptz("0044-03-15 12:00:00+00 BC").unwrap(), 6),
            "-0043-03-15T12:00:00.000000Z"
        );
        assert_eq!(iso_year(12345), "+12345");
        for bad in [
            "2024-01-15T10:30:00",
            "15/01/2024 10:30:00",
            "2024-01-15",
            "2024-01-15 25:00:00",
            "2024-02-30 00:00:00",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn intervals_in_postgres_style() {
        assert_eq!(parse_interval("00:00:01").unwrap(), 1_000_000);
        assert_eq!(parse_interval("1 day").unwrap(), 86_400_000_000);
        assert_eq!(parse_interval("-00:00:01.5").unwrap(), -1_500_000);
        // One month is 365.25/12 = 30.4375 days.
        assert_eq!(parse_interval("1 mon").unwrap(), 2_629_800_000_000);
        assert_eq!(parse_interval("1 year").unwrap(), 31_557_600_000_000);
        assert_eq!(
            parse_interval("1 year 2 mons 3 days 04:05:06.78").unwrap(),
            37_091_106_780_000
        );
        assert_eq!(
            parse_interval("-1 days +02:03:00").unwrap(),
            -86_400_000_000 + 7_380_000_000
        );
        for bad in ["", "1 fortnight", "P1Y", "1", "aa:bb:cc"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }
}
