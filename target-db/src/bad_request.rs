//! Client requests that cannot be read get an answer a client can act on: the status axum chose
//! (400, 415, 422), the problem in words, and `"outcome": "not-applied"`, since nothing ran.
use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::JsonRejection},
    http::request::Parts,
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::json;

fn refusal(status: axum::http::StatusCode, problem: String, fix: &str) -> Response {
    let body = json!({"error": format!("{problem}; {fix}"), "outcome": "not-applied"});
    (status, Json(body)).into_response()
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
        _ => "see the request formats at the top of target-db's server.rs or in the README",
    }
}

/// Query parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
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
