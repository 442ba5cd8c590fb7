//! The Identify API's request shape: `api_key` and `identification` as
//! form fields (`application/x-www-form-urlencoded` or `multipart/form-data`)
//! or, for GET and for old clients that POST them there, query parameters.
//! Each identification becomes a `$identify` event and then goes through
//! the same validation and normalization as uploaded events.

use serde_json::Value;

use crate::ingress::{IngressError, RawRequest};

/// The two parameters, wherever they came from (body first, then query).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IdentifyForm {
    pub api_key: Option<String>,
    pub identification: Option<String>,
}

pub fn form(raw: &RawRequest) -> IdentifyForm {
    let content_type = raw.header("content-type").unwrap_or_default().to_ascii_lowercase();
    let body_fields: Vec<(String, String)> = if content_type.starts_with("multipart/form-data") {
        multipart_fields(raw.header("content-type").unwrap_or_default(), &raw.body).unwrap_or_default()
    } else {
        url::form_urlencoded::parse(&raw.body).into_owned().collect()
    };
    let pick = |name: &str| {
        body_fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| raw.query_param(name))
            .filter(|v| !v.is_empty())
    };
    IdentifyForm { api_key: pick("api_key"), identification: pick("identification") }
}

/// The identifications as `$identify` events. Amplitude answers a missing
/// or unparseable `identification` with the `missing_event` error.
pub fn identifications(param: Option<&str>) -> Result<Vec<Value>, IngressError> {
    let missing = || IngressError::Malformed { code: "missing_event", message: "missing_event".into() };
    let parsed: Value = serde_json::from_str(param.ok_or_else(missing)?).map_err(|_| missing())?;
    let mut items = match parsed {
        Value::Array(items) if !items.is_empty() => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err(missing()),
    };
    for item in &mut items {
        if let Value::Object(obj) = item {
            obj.insert("event_type".into(), Value::from("$identify"));
        }
    }
    Ok(items)
}

/// Text fields of a `multipart/form-data` body; `None` when it cannot be
/// read (no boundary, not UTF-8, a part without headers).
fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Vec<(String, String)>> {
    let boundary = content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary").then(|| v.trim_matches('"').to_string())
    })?;
    let text = std::str::from_utf8(body).ok()?;
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (headers, value) = part.split_once("\r\n\r\n")?;
        let name =
            headers.split("\r\n").find(|h| h.to_ascii_lowercase().starts_with("content-disposition:")).and_then(
                |h| h.split(';').find_map(|p| p.trim().strip_prefix("name=").map(|n| n.trim_matches('"').to_string())),
            )?;
        out.push((name, value.strip_suffix("\r\n").unwrap_or(value).to_string()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_text_fields() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\nkey-1\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"identification\"\r\n\
                    Content-Type: text/plain\r\n\r\n{\"user_id\":\"u-12345\"}\r\n--XyZ--\r\n";
        let fields = multipart_fields("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(
            fields,
            vec![
                ("api_key".to_string(), "key-1".to_string()),
                ("identification".to_string(), "{\"user_id\":\"u-12345\"}".to_string())
            ]
        );
        assert!(multipart_fields("multipart/form-data", body.as_bytes()).is_none(), "no boundary");
    }

    #[test]
    fn identification_object_or_array() {
        assert_eq!(identifications(Some(r#"{"user_id":"u-12345"}"#)).unwrap().len(), 1);
        let two = identifications(Some(r#"[{"user_id":"u-12345"},{"device_id":"d-12345","event_type":"x"}]"#)).unwrap();
        assert_eq!(two[1]["event_type"], "$identify", "event_type is always $identify");
        for bad in [None, Some("not json"), Some("[]"), Some("42"), Some("\"s\"")] {
            let err = identifications(bad).unwrap_err();
            assert_eq!(err.reason(), "missing_event", "{bad:?}");
        }
    }
}
