//! Query strings of the operator routes, parsed into named parameters with errors that name
//! them (the same envelope as bodies).

use super::body::parse_uid;
use super::error::ApiError;
use crate::domain::Uid;

pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(raw.unwrap_or(""))
            .map(Query)
            .map_err(|e| ApiError::bad(format!("malformed query string: {e}")))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn uid(&self, name: &str) -> Result<Uid, ApiError> {
        let s = self
            .get(name)
            .ok_or_else(|| ApiError::bad(format!("{name} is required")))?;
        parse_uid(name, s)
    }

    /// An optional integer parameter within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(s) = self.get(name) else {
            return Ok(None);
        };
        match s.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad(format!(
                "{name} must be an integer from {min} to {max}"
            ))),
        }
    }
}
