//! Debezium's type mapping on what a real PostgreSQL sends: a row of every mapped type is
//! inserted, read back through logical decoding (pgoutput, text values) and encoded by
//! `clustera-debezium`; each value must be the one Debezium's own test suite expects for the
//! same input (its `time_table`, `AbstractRecordsProducerTest`, Debezium 3.4) or that
//! Debezium's documented mapping gives. Session settings matter: with another `DateStyle` the
//! values are not ISO, and the encoder says so with a typed error naming the column.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clustera_debezium::{
    ChangeEventConfig, ChangeEventEncoder, ColumnDef, EncodeError, Relation, SourcePosition,
    UserType,
};
use clustera_outbox::testing::Postgres;
use clustera_pgoutput::{self as pgoutput, PgOutput};
use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('pending', 'sent', 'failed');
CREATE TABLE types (
    id serial PRIMARY KEY,
    b boolean, i2 smallint, i8 bigint, f4 real, f8 double precision,
    n numeric(10,2), nv numeric,
    d date, t time, t3 time(3), ts timestamp, ts3 timestamp(3),
    tz timestamptz, tz3 timestamptz(3), ttz timetz, iv interval,
    ba bytea, u uuid, j json, jb jsonb,
    ia int4[], ta text[], tza timestamptz[],
    st mood, sta mood[],
    txt text, vc varchar(10), bp char(3)
);
CREATE PUBLICATION types_pub FOR TABLE types;
";

const ROWS: &str = r#"
INSERT INTO types (b, i2, i8, f4, f8, n, nv, d, t, t3, ts, ts3, tz, tz3, ttz, iv, ba, u, j, jb,
                   ia, ta, tza, st, sta, txt, vc, bp)
VALUES (true, -32768, 9223372036854775807, 1.5, -2.25e-5, 12.34, 1.500,
        '2016-11-04', '13:51:30', '13:51:30.123', '2016-11-04T13:51:30.123456',
        '2016-11-04T13:51:30.123456', '2016-11-04T13:51:30.123456+02:00',
        '2016-11-04T13:51:30.123456+02:00', '13:51:30.123789+02:00', 'P1Y2M3DT4H5M6.78S',
        '\x010203', '8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c', '{"b": 1, "a": [1, 2]}',
        '{"b": 1, "a": [1, 2]}', '{1,NULL,3}', '{"a b","c,d",NULL,"e\"f"}',
        '{"2020-04-01 11:51:02+00"}', 'sent', '{sent,failed}', 'héllo', 'abc', 'ab');
INSERT INTO types (ts, ts3, tz, tz3, ttz, iv)
VALUES ('21016-11-04T13:51:30.123456', '21016-11-04T13:51:30.124',
        '294247-01-01T23:59:59.999999+00:00', '21016-11-04T13:51:30.000000+07:00',
        '23:30:00.25-02', '-1 days +02:03:00');
INSERT INTO types (tz, d, f8, nv) VALUES ('4714-12-31T23:59:59.999999Z BC', '1970-01-01', 'NaN', -0.10);
"#;

/// The table's columns as the relay would describe them: pgoutput's names and OIDs, with the
/// type modifiers, nullability and enum labels from the catalog.
async fn relation(client: &Client, oids: &[(String, u32)]) -> Relation {
    let labels: Vec<String> = client
        .query_one("SELECT enum_range(NULL::mood)::text[]", &[])
        .await
        .unwrap()
        .get(0);
    let mood: u32 = client
        .query_one("SELECT 'mood'::regtype::oid", &[])
        .await
        .unwrap()
        .get(0);
    let mut columns = Vec::new();
    for (name, type_oid) in oids {
        let row = client
            .query_one(
                "SELECT atttypmod, attnotnull FROM pg_attribute
                 WHERE attrelid = 'types'::regclass AND attname = $1",
                &[name],
            )
            .await
            .unwrap();
        let mut c = ColumnDef::new(name.clone(), *type_oid, row.get(0));
        if name == "id" {
            c = c.key();
        } else if row.get::<_, bool>(1) {
            c = c.not_null();
        }
        if *type_oid == mood {
            c = c.with_user_type(UserType::Enum(labels.clone()));
        } else if name == "sta" {
            c = c.with_user_type(UserType::EnumArray(labels.clone()));
        }
        columns.push(c);
    }
    Relation {
        schema: "public".into(),
        table: "types".into(),
        columns,
    }
}

/// The inserted rows, decoded from the slot in `client`'s session, as `after` objects.
async fn decoded_rows(client: &Client, setup: &Client) -> Result<Vec<Value>, EncodeError> {
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes('types_slot', NULL, NULL,
                 'proto_version', '1', 'publication_names', 'types_pub')",
            &[],
        )
        .await
        .unwrap();
    let mut encoder = None;
    let mut out = Vec::new();
    for row in rows {
        let data: Vec<u8> = row.get(0);
        match pgoutput::parse(&data).unwrap() {
            PgOutput::Relation { columns, .. } => {
                let oids: Vec<(String, u32)> =
                    columns.into_iter().map(|c| (c.name, c.type_oid)).collect();
                encoder = Some(
                    ChangeEventEncoder::new(
                        ChangeEventConfig::default(),
                        relation(setup, &oids).await,
                    )
                    .unwrap(),
                );
            }
            PgOutput::Insert { values, .. } => {
                let record =
                    encoder
                        .as_ref()
                        .unwrap()
                        .encode(&values, &SourcePosition::default(), 0)?;
                let v: Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
                out.push(v["after"].clone());
            }
            _ => {}
        }
    }
    Ok(out)
}

#[tokio::test]
async fn pgoutput_values_map_as_debezium_maps_them() {
    let pg = Postgres::start().unwrap();
    let setup = connect(pg.url()).await;
    setup.batch_execute(SCHEMA).await.unwrap();
    // In a transaction of its own: a slot cannot be created after writes in the same one.
    setup
        .batch_execute("SELECT pg_create_logical_replication_slot('types_slot', 'pgoutput')")
        .await
        .unwrap();
    setup.batch_execute(ROWS).await.unwrap();

    // The relay's session settings (issue 11): ISO dates, UTC, PostgreSQL's interval style.
    let session = connect(pg.url()).await;
    session
        .batch_execute("SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres")
        .await
        .unwrap();
    let rows = decoded_rows(&session, &setup).await.unwrap();
    assert_eq!(rows.len(), 3);
    let expected = json!({
        "id": 1, "b": true, "i2": -32768, "i8": 9_223_372_036_854_775_807i64,
        "f4": 1.5, "f8": -2.25e-5,
        // numeric(10,2): Connect Decimal, unscaled 1234; numeric: VariableScaleDecimal 15e-1.
        "n": "BNI=", "nv": {"scale": 1, "value": "Dw=="},
        // Debezium's time_table: date, ti, tip, ts, ts_ms, tz, ttz, it.
        "d": 17_109, "t": 49_890_000_000i64, "t3": 49_890_123,
        "ts": 1_478_267_490_123_456i64, "ts3": 1_478_267_490_123i64,
        "tz": "2016-11-04T11:51:30.123456Z", "tz3": "2016-11-04T11:51:30.123Z",
        "ttz": "11:51:30.123789Z", "iv": 37_091_106_780_000i64,
        "ba": "AQID", "u": "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c",
        // json keeps its text; jsonb is the server's normalised text.
        "j": r#"{"b": 1, "a": [1, 2]}"#, "jb": r#"{"a": [1, 2], "b": 1}"#,
        "ia": [1, null, 3], "ta": ["a b", "c,d", null, "e\"f"],
        "tza": ["2020-04-01T11:51:02.000000Z"],
        "st": "sent", "sta": ["sent", "failed"],
        "txt": "héllo", "vc": "abc", "bp": "ab "
    });
    assert_eq!(rows[0], expected);
    // ts_large, ts_large_ms, tz_max, tz_zero of Debezium's time_table; a time with a zone
    // that crosses midnight into UTC; a negative interval.
    let second = &rows[1];
    assert_eq!(second["ts"], 601_060_312_290_123_456i64);
    assert_eq!(second["ts3"], 601_060_312_290_124i64);
    assert_eq!(second["tz"], "+294247-01-01T23:59:59.999999Z");
    assert_eq!(second["tz3"], "+21016-11-04T06:51:30.000Z");
    assert_eq!(second["ttz"], "01:30:00.25Z");
    assert_eq!(second["iv"], -86_400_000_000i64 + 7_380_000_000);
    assert_eq!(second["b"], Value::Null);
    // tz_min as Debezium streams it; NaN in a double; a numeric with trailing zeros stripped
    // (-0.10 → -1e-1: unscaled -1 is 0xFF).
    let third = &rows[2];
    assert_eq!(third["tz"], "-4713-12-31T23:59:59.999999Z");
    assert_eq!(third["d"], 0);
    assert_eq!(third["f8"], "NaN");
    assert_eq!(third["nv"], json!({"scale": 1, "value": "/w=="}));

    // A session with another DateStyle: the text is not ISO, and the encoder refuses it with
    // an error naming the column (the relay must set DateStyle=ISO).
    let other = connect(pg.url()).await;
    other
        .batch_execute("SET DateStyle = 'SQL, DMY'; SET TimeZone = 'UTC'")
        .await
        .unwrap();
    match decoded_rows(&other, &setup).await {
        Err(EncodeError::InvalidValue { column, problem }) => {
            assert_eq!(column, "d");
            assert!(problem.contains("04/11/2016"), "{problem}");
            assert!(problem.contains("DateStyle"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

/// Debezium's `array_table` (`postgres_create_tables.ddl`, without the `citext` extension) and
/// the values its `schemasAndValuesForArrayTypes` expects.
#[tokio::test]
async fn arrays_map_as_debezium_maps_them() {
    let pg = Postgres::start().unwrap();
    let setup = connect(pg.url()).await;
    setup
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('pending', 'sent', 'failed');
             CREATE TABLE types (pk SERIAL, int_array INT[], bigint_array BIGINT[], text_array TEXT[],
                 char_array CHAR(10)[], varchar_array VARCHAR(10)[], date_array DATE[],
                 numeric_array NUMERIC(10, 2)[], varnumeric_array NUMERIC[3], inet_array INET[],
                 cidr_array CIDR[], macaddr_array MACADDR[], tsrange_array TSRANGE[],
                 tstzrange_array TSTZRANGE[], daterange_array DATERANGE[], int4range_array INT4RANGE[],
                 numerange_array NUMRANGE[], int8range_array INT8RANGE[], uuid_array UUID[],
                 json_array json[], jsonb_array jsonb[], oid_array OID[], PRIMARY KEY(pk));
             CREATE PUBLICATION types_pub FOR TABLE types;",
        )
        .await
        .unwrap();
    setup
        .batch_execute("SELECT pg_create_logical_replication_slot('types_slot', 'pgoutput')")
        .await
        .unwrap();
    setup
        .batch_execute(
            r#"INSERT INTO types (int_array, bigint_array, text_array, char_array, varchar_array, date_array, numeric_array, varnumeric_array, inet_array, cidr_array, macaddr_array, tsrange_array, tstzrange_array, daterange_array, int4range_array, numerange_array, int8range_array, uuid_array, json_array, jsonb_array, oid_array)
            VALUES ('{1,2,3}', '{1550166368505037572}', '{"one","two","three"}', '{"cone","ctwo","cthree"}', '{"vcone","vctwo","vcthree"}', '{2016-11-04,2016-11-05,2016-11-06}', '{1.2,3.4,5.6}', '{1.1,2.22,3.333}', '{"192.168.2.0/12","192.168.1.1","192.168.0.2/1"}', '{"192.168.100.128/25", "192.168.0.0/25", "192.168.1.0/24"}', '{"08:00:2b:01:02:03", "08-00-2b-01-02-03", "08002b:010203"}',
            '{"[2019-03-31 15:30:00, infinity)", "[2019-03-31 15:30:00, 2019-04-30 15:30:00]"}', '{"[2017-06-05 11:29:12.549426+00,)", "[2017-06-05 11:29:12.549426+00, 2017-06-05 12:34:56.789012+00]"}', '{"[2019-03-31, infinity)", "[2019-03-31, 2019-04-30)"}', '{"[1,6)", "[1,4)"}', '{"[5.3,6.3)", "[10.0,20.0)"}', '{"[1000000,6000000)", "[5000,9000)"}', '{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "f0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}',
            array['{"bar": "baz"}','{"foo": "qux"}']::json[], array['{"bar": "baz"}','{"foo": "qux"}']::jsonb[], '{3,4000000000}')"#,
        )
        .await
        .unwrap();
    let session = connect(pg.url()).await;
    session
        .batch_execute("SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres")
        .await
        .unwrap();
    let rows = decoded_rows(&session, &setup).await.unwrap();
    // BigDecimal("1.20").unscaledValue() = 120 = 0x78 ("eA=="), 340 = 0x0154 ("AVQ="),
    // 560 = 0x0230 ("AjA="); 1.1 → 11 ("Cw=="), 2.22 → 222 = 0x00DE ("AN4="),
    // 3.333 → 3333 = 0x0D05 ("DQU=").
    let expected = json!({
        "pk": 1,
        "int_array": [1, 2, 3],
        "bigint_array": [1_550_166_368_505_037_572i64],
        "text_array": ["one", "two", "three"],
        "char_array": ["cone      ", "ctwo      ", "cthree    "],
        "varchar_array": ["vcone", "vctwo", "vcthree"],
        "date_array": [17_109, 17_110, 17_111],
        "numeric_array": ["eA==", "AVQ=", "AjA="],
        "varnumeric_array": [{"scale": 1, "value": "Cw=="}, {"scale": 2, "value": "AN4="},
                             {"scale": 3, "value": "DQU="}],
        "inet_array": ["192.168.2.0/12", "192.168.1.1", "192.168.0.2/1"],
        "cidr_array": ["192.168.100.128/25", "192.168.0.0/25", "192.168.1.0/24"],
        "macaddr_array": ["08:00:2b:01:02:03", "08:00:2b:01:02:03", "08:00:2b:01:02:03"],
        "tsrange_array": ["[\"2019-03-31 15:30:00\",infinity)",
                          "[\"2019-03-31 15:30:00\",\"2019-04-30 15:30:00\"]"],
        "tstzrange_array": ["[\"2017-06-05 11:29:12.549426+00\",)",
                            "[\"2017-06-05 11:29:12.549426+00\",\"2017-06-05 12:34:56.789012+00\"]"],
        "daterange_array": ["[2019-03-31,infinity)", "[2019-03-31,2019-04-30)"],
        "int4range_array": ["[1,6)", "[1,4)"],
        "numerange_array": ["[5.3,6.3)", "[10.0,20.0)"],
        "int8range_array": ["[1000000,6000000)", "[5000,9000)"],
        "uuid_array": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "f0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
        "json_array": ["{\"bar\": \"baz\"}", "{\"foo\": \"qux\"}"],
        "jsonb_array": ["{\"bar\": \"baz\"}", "{\"foo\": \"qux\"}"],
        "oid_array": [3, 4_000_000_000i64]
    });
    assert_eq!(rows, [expected]);
}

/// Debezium's `numeric_table` and `numeric_decimal_table` (`INSERT_NUMERIC_TYPES_STMT`,
/// `INSERT_NUMERIC_DECIMAL_TYPES_STMT_NO_NAN`) and the values and Decimal schemas its
/// `schemasAndValuesForNumericType` and `schemasAndValuesForBigDecimalEncodedNumericTypes`
/// expect.
#[tokio::test]
async fn numbers_map_as_debezium_maps_them() {
    let pg = Postgres::start().unwrap();
    let setup = connect(pg.url()).await;
    setup
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('pending', 'sent', 'failed');
             CREATE TABLE types (pk SERIAL, si SMALLINT, i INTEGER, bi BIGINT,
                 r REAL, db DOUBLE PRECISION, r_int REAL, db_int DOUBLE PRECISION,
                 r_nan REAL, db_nan DOUBLE PRECISION, r_pinf REAL, db_pinf DOUBLE PRECISION,
                 r_ninf REAL, db_ninf DOUBLE PRECISION, ss SMALLSERIAL, bs BIGSERIAL, b BOOLEAN, o OID,
                 d DECIMAL(3,2), dzs DECIMAL(4), dvs DECIMAL, d_nn DECIMAL(3,2) NOT NULL,
                 n NUMERIC(6,4), nzs NUMERIC(4), nvs NUMERIC,
                 d_int DECIMAL(3,2), dzs_int DECIMAL(4), dvs_int DECIMAL, n_int NUMERIC(6,4),
                 nzs_int NUMERIC(4), nvs_int NUMERIC, PRIMARY KEY(pk));
             CREATE PUBLICATION types_pub FOR TABLE types;",
        )
        .await
        .unwrap();
    setup
        .batch_execute("SELECT pg_create_logical_replication_slot('types_slot', 'pgoutput')")
        .await
        .unwrap();
    setup
        .batch_execute(
            "INSERT INTO types (si, i, bi, r, db, r_int, db_int, r_nan, db_nan, r_pinf, db_pinf,
                 r_ninf, db_ninf, ss, bs, b, o, d, dzs, dvs, d_nn, n, nzs, nvs,
                 d_int, dzs_int, dvs_int, n_int, nzs_int, nvs_int)
             VALUES (1, 123456, 1234567890123, 3.3, 4.44, 3, 4, 'NaN', 'NaN', 'Infinity',
                 'Infinity', '-Infinity', '-Infinity', 1, 123, true, 4000000000,
                 1.1, 10.11, 10.1111, 3.30, 22.22, 22.2, 22.2222, 1, 10, 10, 22, 22, 22)",
        )
        .await
        .unwrap();
    let session = connect(pg.url()).await;
    session
        .batch_execute("SET DateStyle = ISO; SET TimeZone = 'UTC'")
        .await
        .unwrap();
    let rows = decoded_rows(&session, &setup).await.unwrap();
    // Unscaled values, two's complement, base64: 110 "bg==", 10 "Cg==", 101111 "AYr3",
    // 330 "AUo=", 222200 "A2P4", 22 "Fg==", 222222 "A2QO", 100 "ZA==", 220000 "A1tg".
    let expected = json!({
        "pk": 1, "si": 1, "i": 123_456, "bi": 1_234_567_890_123i64,
        "r": 3.3, "db": 4.44, "r_int": 3.0, "db_int": 4.0,
        "r_nan": "NaN", "db_nan": "NaN", "r_pinf": "Infinity", "db_pinf": "Infinity",
        "r_ninf": "-Infinity", "db_ninf": "-Infinity",
        "ss": 1, "bs": 123, "b": true, "o": 4_000_000_000i64,
        "d": "bg==", "dzs": "Cg==", "dvs": {"scale": 4, "value": "AYr3"}, "d_nn": "AUo=",
        "n": "A2P4", "nzs": "Fg==", "nvs": {"scale": 4, "value": "A2QO"},
        "d_int": "ZA==", "dzs_int": "Cg==", "dvs_int": {"scale": 0, "value": "Cg=="},
        "n_int": "A1tg", "nzs_int": "Fg==", "nvs_int": {"scale": 0, "value": "Fg=="}
    });
    assert_eq!(rows, [expected]);
}
