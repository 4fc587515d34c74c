//! What request bodies and connector configs share: a JSON value parsed into its one
//! serde type without stopping at the first wrong type, and the `validator` crate's
//! errors turned into problems with a field path each. No HTTP here.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

/// A field's value as the type declares it, absent (or `null`), or the JSON type
/// that came instead. Deserialising a body whose fields are `Typed` (with
/// `#[serde(default)]`) never fails on a field, so that every bad field can be
/// reported at once, each with its path, by the field's `validator` rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Typed<T> {
    #[default]
    Missing,
    Valid(T),
    WrongType {
        found: &'static str,
    },
}

impl<T> Typed<T> {
    /// The value, when it is present with the declared type.
    pub fn valid(&self) -> Option<&T> {
        match self {
            Typed::Valid(value) => Some(value),
            _ => None,
        }
    }

    pub fn into_valid(self) -> Option<T> {
        match self {
            Typed::Valid(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Typed::Missing)
    }

    /// An optional field: `None` when absent, the value when it has the type, else
    /// the error "must be `expected`, got …".
    pub fn optional(&self, expected: &str) -> Result<Option<&T>, ValidationError> {
        match self {
            Typed::Missing => Ok(None),
            Typed::Valid(value) => Ok(Some(value)),
            Typed::WrongType { found } => Err(problem(
                "invalid_type",
                format!("must be {expected}, got {found}"),
            )),
        }
    }

    /// A required field: as [`Self::optional`], and absent is the error `required`
    /// with `message`.
    pub fn required(&self, expected: &str, message: &str) -> Result<&T, ValidationError> {
        self.optional(expected)?
            .ok_or_else(|| problem("required", message.to_owned()))
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Typed::Missing);
        }
        let found = type_name(&value);
        Ok(T::deserialize(value)
            .map(Typed::Valid)
            .unwrap_or(Typed::WrongType { found }))
    }
}

impl<T: Serialize> Serialize for Typed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Typed::Valid(value) => value.serialize(serializer),
            _ => serializer.serialize_unit(),
        }
    }
}

/// A nested body is validated when it is an object. A field's own rule runs before
/// its nested validation and reports a missing or mistyped field itself, so the
/// errors here are for the items of a list: `templates[1]` is not an object.
impl<T: Validate> Validate for Typed<T> {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let found = match self {
            Typed::Valid(value) => return value.validate(),
            Typed::Missing => "null",
            Typed::WrongType { found } => found,
        };
        let mut errors = ValidationErrors::new();
        errors.add(
            WHOLE,
            problem("invalid_type", format!("must be an object, got {found}")),
        );
        Err(errors)
    }
}

/// The field name under which an error about the whole value is kept.
const WHOLE: &str = "__all__";

/// "a string", "an array", …: a JSON value's type, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A rule's failure: a code (`required`, `invalid_type`, `invalid_format`, …) and a
/// message that says what is expected.
pub fn problem(code: &'static str, message: impl Into<Cow<'static, str>>) -> ValidationError {
    ValidationError::new(code).with_message(message.into())
}

/// One field-level problem, with the path of the value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `templates[2].subject` form; empty for the whole body.
    pub path: String,
    pub code: String,
    pub message: String,
}

/// Every problem in `errors`, with JSON paths (camelCase field names), in a stable
/// order: by path, array indices compared as numbers.
pub fn problems(errors: &ValidationErrors) -> Vec<Problem> {
    let mut found = Vec::new();
    collect(errors, "", &mut found);
    found.sort_by(|a, b| compare_paths(&a.path, &b.path));
    found
}

fn collect(errors: &ValidationErrors, parent: &str, found: &mut Vec<Problem>) {
    for (field, kind) in errors.errors() {
        let path = join(parent, &json_name(field));
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    found.push(Problem {
                        path: path.clone(),
                        code: error.code.to_string(),
                        message: error
                            .message
                            .as_ref()
                            .map_or_else(|| error.code.to_string(), ToString::to_string),
                    });
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, &path, found),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(inner, &format!("{path}[{index}]"), found);
                }
            }
        }
    }
}

/// `access_key_id` → `accessKeyId`; `r#type` → `type`; `__all__` (struct-level) → ``.
fn json_name(field: &str) -> String {
    let field = field.strip_prefix("r#").unwrap_or(field);
    if field == WHOLE {
        return String::new();
    }
    let mut name = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    name
}

/// `parent.key`, or `key` at the top.
pub fn join(parent: &str, key: &str) -> String {
    match (parent.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => parent.to_owned(),
        (false, false) => format!("{parent}.{key}"),
    }
}

/// Paths in document order: segment by segment, `[10]` after `[9]`.
pub fn compare_paths(a: &str, b: &str) -> Ordering {
    let key = |path: &str| -> Vec<(String, u64)> {
        path.split(['.', '['])
            .map(|segment| match segment.strip_suffix(']') {
                Some(index) => (String::new(), index.parse().unwrap_or(u64::MAX)),
                None => (segment.to_owned(), 0),
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, Validate)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        #[validate(custom(function = "text"))]
        first_name: Typed<String>,
        #[serde(default)]
        #[validate(nested)]
        items: Typed<Vec<Typed<Item>>>,
    }

    #[derive(Debug, Deserialize, Validate)]
    struct Item {
        #[serde(default)]
        #[validate(custom(function = "text"))]
        r#type: Typed<String>,
    }

    fn text(value: &Typed<String>) -> Result<(), ValidationError> {
        value.required("a string", "needed").map(drop)
    }

    #[test]
    fn wrong_types_anywhere_are_all_reported_with_their_paths() {
        let body: Body = serde_json::from_value(json!({
            "firstName": 3,
            "items": [{"type": "ok"}, {"type": []}, "not an object", {"type": true}, {}]
        }))
        .unwrap();
        let found = problems(&body.validate().unwrap_err());
        let paths: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("firstName", "must be a string, got a number"),
                ("items[1].type", "must be a string, got an array"),
                ("items[2]", "must be an object, got a string"),
                ("items[3].type", "must be a string, got a boolean"),
                ("items[4].type", "needed"),
            ]
        );
    }

    #[test]
    fn paths_sort_in_document_order() {
        let mut paths = vec![
            "templates[10].subject",
            "region",
            "templates[9]",
            "templates",
        ];
        paths.sort_by(|a, b| compare_paths(a, b));
        assert_eq!(
            paths,
            [
                "region",
                "templates",
                "templates[9]",
                "templates[10].subject"
            ]
        );
    }
}
