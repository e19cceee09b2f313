//! Environment variables → typed values, with one error type. Every crate parses its
//! variables through these helpers, so every error names the variable and says what is wrong
//! with it in the same words.

use std::collections::BTreeMap;

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// `variable` is wrong because of `problem`.
    pub fn invalid(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// Looks a variable up by name: the process environment, or a test's map.
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads a `.env` file from the working directory or its parents, if there is one. Variables
/// already set win over the file. Kernels that read their own variables call this first.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::invalid(".env", e.to_string())),
    }
}

/// Every variable of the process environment whose name and value are UTF-8.
pub fn env_vars() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// A variable of the process environment, trimmed; `None` when unset or empty.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A number, or `None` when the variable is unset or empty.
pub fn number<T: std::str::FromStr>(var: Vars<'_>, name: &str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| ConfigError::invalid(name, format!("{v:?} is not a valid number ({e})"))),
    }
}

/// `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off` (any case).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A switch (see [`parse_bool`]), or `None` when the variable is unset or empty.
pub fn flag(var: Vars<'_>, name: &str) -> Result<Option<bool>, ConfigError> {
    match var(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => parse_bool(&v)
            .map(Some)
            .ok_or_else(|| ConfigError::invalid(name, format!("{v:?} is not true or false"))),
    }
}

/// The non-empty items of a comma-separated list, trimmed.
pub fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one<'a>(name: &'a str, value: &'a str) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| (n == name).then(|| value.to_owned())
    }

    #[test]
    fn numbers_name_the_variable_and_the_value() {
        assert_eq!(number::<u32>(&one("N", " 7 "), "N"), Ok(Some(7)));
        assert_eq!(number::<u32>(&one("N", ""), "N"), Ok(None));
        assert_eq!(number::<u32>(&one("M", "1"), "N"), Ok(None));
        let e = number::<u32>(&one("N", "-1"), "N").unwrap_err();
        assert_eq!(e.variable, "N");
        assert!(e.problem.contains("\"-1\""), "{e}");
    }

    #[test]
    fn flags_and_lists() {
        assert_eq!(flag(&one("F", "On"), "F"), Ok(Some(true)));
        assert_eq!(flag(&one("F", "no"), "F"), Ok(Some(false)));
        assert_eq!(flag(&one("F", " "), "F"), Ok(None));
        assert_eq!(flag(&one("F", "maybe"), "F").unwrap_err().variable, "F");
        assert_eq!(split_list(" a, ,b ,"), vec!["a".to_owned(), "b".to_owned()]);
    }
}
