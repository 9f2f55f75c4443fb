//! Reading request headers the same way in the API and the provider. Students
//! need not edit this file.

use axum::http::HeaderMap;

/// The one value of header `name`: `Ok(None)` when absent, `Err(message)` when
/// sent twice or not visible ASCII.
pub fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("the {name} header is sent more than once"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| format!("the {name} header is not visible ASCII"))
}
