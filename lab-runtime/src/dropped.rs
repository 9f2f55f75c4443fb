//! The answer that never comes (`simulate.dropAnswer` of the provider's charges
//! and of the API's orders): the work is done and
//! stored, then the connection is closed without a single byte of the HTTP
//! response. Students need not edit this file.
//!
//! How: the handler returns a response whose body fails on its first poll.
//! hyper 1 (under `axum::serve`) buffers the status line and headers, polls the
//! body for its first frame before flushing anything, gets the error, and
//! aborts the connection: the buffered head is dropped unsent and the socket is
//! closed. The client sees the connection close before any response (reqwest:
//! "connection closed before message completed"), never a status, exactly as
//! when a gateway's answer is lost on the network after the charge was made.
//! A panicking handler would not do: axum would answer 500, which tells the
//! caller something happened.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;

/// A body that fails at once, so hyper closes the connection before the head is sent.
struct FailingBody;

impl http_body::Body for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "this answer is dropped on purpose (simulate.dropAnswer)",
        ))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

/// A response that is never sent: the connection is closed instead.
pub fn dropped_answer() -> Response {
    let mut response = Body::new(FailingBody).into_response();
    // What would have been answered; no byte of it leaves the process.
    *response.status_mut() = StatusCode::CREATED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
