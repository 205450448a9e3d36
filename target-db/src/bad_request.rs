//! Client requests that cannot be read get an answer a client can act on: the status axum chose
//! (400, 415, 422), the problem in words, and `"outcome": "not-applied"`, since nothing ran.
use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::JsonRejection},
    http::request::Parts,
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use target_db_client::{Outcome, Refusal};

fn refusal(status: axum::http::StatusCode, problem: String, fix: &str) -> Response {
    let refusal = Refusal::new(format!("{problem}; {fix}"), Outcome::NotApplied);
    (status, Json(refusal)).into_response()
}

/// A JSON request body.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(refusal(
                rejection.status(),
                rejection.body_text(),
                json_fix(&rejection),
            )),
        }
    }
}

fn json_fix(rejection: &JsonRejection) -> &'static str {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with `content-type: application/json`"
        }
        _ => "see the request formats at the top of target-db's server.rs or in docs/target-db.md",
    }
}

/// Query parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        // serde_urlencoded replaces bytes that are not UTF-8 with U+FFFD: two different keys
        // would read one value. Refused instead.
        if !percent_decodes_to_utf8(parts.uri.query().unwrap_or_default()) {
            return Err(refusal(
                axum::http::StatusCode::BAD_REQUEST,
                "the query string decodes to bytes that are not UTF-8".into(),
                "keys are UTF-8 text: percent-encode its UTF-8 bytes",
            ));
        }
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(refusal(
                rejection.status(),
                rejection.body_text(),
                "a read is GET /kv/get?key=KEY",
            )),
        }
    }
}

/// Whether every parameter of a query string, once percent-decoded, is UTF-8.
fn percent_decodes_to_utf8(query: &str) -> bool {
    query.split(['&', '=']).all(|part| {
        let bytes = part.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => {
                    decoded.push(byte);
                    i += 3;
                }
                (other, _) => {
                    decoded.push(other);
                    i += 1;
                }
            }
        }
        std::str::from_utf8(&decoded).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::percent_decodes_to_utf8;

    #[test]
    fn only_utf8_after_percent_decoding_passes() {
        assert!(percent_decodes_to_utf8("key=abc"));
        assert!(percent_decodes_to_utf8("key=%C3%A9t%C3%A9&x=1"));
        assert!(percent_decodes_to_utf8("key=100%"));
        assert!(!percent_decodes_to_utf8("key=%FF%FE"));
        assert!(!percent_decodes_to_utf8("key=%C3"));
    }
}
