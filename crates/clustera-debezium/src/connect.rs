//! Kafka Connect schemas, rendered as the `JsonConverter` renders them with
//! `schemas.enable=true`: `type`, then `fields` (struct) or `items` (array), `optional`,
//! `name`, `version`, `doc`, `parameters`, `default`; a struct's field adds `field` last.

use crate::json_out::Json;

/// A Kafka Connect schema (the subset Debezium's PostgreSQL events use).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schema {
    /// `int16`, `int32`, `int64`, `float`, `double`, `boolean`, `string`, `bytes`, `array`,
    /// `struct`.
    pub ty: &'static str,
    pub optional: bool,
    pub name: Option<String>,
    pub version: Option<i32>,
    pub doc: Option<&'static str>,
    pub parameters: Vec<(String, String)>,
    pub default: Option<Json>,
    pub fields: Vec<(String, Schema)>,
    pub items: Option<Box<Schema>>,
}

impl Schema {
    /// A primitive schema, required.
    pub(crate) fn primitive(ty: &'static str) -> Self {
        Self {
            ty,
            optional: false,
            name: None,
            version: None,
            doc: None,
            parameters: Vec::new(),
            default: None,
            fields: Vec::new(),
            items: None,
        }
    }

    /// A logical type: a primitive with a name and version 1 (Debezium's semantic types).
    pub(crate) fn named(ty: &'static str, name: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            version: Some(1),
            ..Self::primitive(ty)
        }
    }

    pub(crate) fn structure(name: Option<String>, fields: Vec<(String, Schema)>) -> Self {
        Self {
            name,
            fields,
            ..Self::primitive("struct")
        }
    }

    pub(crate) fn array(items: Schema) -> Self {
        Self {
            items: Some(Box::new(items)),
            ..Self::primitive("array")
        }
    }

    pub(crate) fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    pub(crate) fn with_optional(mut self, optional: bool) -> Self {
        self.optional = optional;
        self
    }

    pub(crate) fn version(mut self, version: i32) -> Self {
        self.version = Some(version);
        self
    }

    pub(crate) fn parameter(mut self, key: &str, value: impl Into<String>) -> Self {
        self.parameters.push((key.to_owned(), value.into()));
        self
    }

    /// The `JsonConverter`'s rendering of this schema.
    pub(crate) fn to_json(&self) -> Json {
        let mut out: Vec<(String, Json)> = vec![("type".into(), Json::str(self.ty))];
        if self.ty == "struct" {
            let fields = self
                .fields
                .iter()
                .map(|(name, schema)| {
                    let mut f = match schema.to_json() {
                        Json::Object(f) => f,
                        other => vec![("schema".into(), other)],
                    };
                    f.push(("field".into(), Json::str(name.clone())));
                    Json::Object(f)
                })
                .collect();
            out.push(("fields".into(), Json::Array(fields)));
        }
        if let Some(items) = &self.items {
            out.push(("items".into(), items.to_json()));
        }
        out.push(("optional".into(), Json::Bool(self.optional)));
        if let Some(name) = &self.name {
            out.push(("name".into(), Json::str(name.clone())));
        }
        if let Some(version) = self.version {
            out.push(("version".into(), Json::Int(i64::from(version))));
        }
        if let Some(doc) = self.doc {
            out.push(("doc".into(), Json::str(doc)));
        }
        if !self.parameters.is_empty() {
            out.push((
                "parameters".into(),
                Json::Object(
                    self.parameters
                        .iter()
                        .map(|(k, v)| (k.clone(), Json::str(v.clone())))
                        .collect(),
                ),
            ));
        }
        if let Some(default) = &self.default {
            out.push(("default".into(), default.clone()));
        }
        Json::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_in_the_json_converters_order() {
        let s = Schema::structure(
            Some("x.Value".into()),
            vec![
                ("id".into(), Schema::primitive("int32")),
                (
                    "d".into(),
                    Schema::named("bytes", "org.apache.kafka.connect.data.Decimal")
                        .parameter("scale", "2")
                        .optional(),
                ),
            ],
        )
        .optional();
        assert_eq!(
            s.to_json().to_text(),
            concat!(
                r#"{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},"#,
                r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"},"field":"d"}],"#,
                r#""optional":true,"name":"x.Value"}"#
            )
        );
    }
}
