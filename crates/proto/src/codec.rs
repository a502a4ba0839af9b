//! The protobuf codec of every CloudAI RPC, and the status a message too big to read gets.
//!
//! `tonic_prost::ProstCodec` answers a message that does not decode with `INTERNAL`, which
//! tells a client the server broke; the client sent bad input, so ours says
//! `INVALID_ARGUMENT`, naming the message. tonic itself refuses a message over the
//! decoding limit before any codec sees it, from the length in the frame header, with
//! `OUT_OF_RANGE`; [`ClientErrorStatus`] turns that answer into `RESOURCE_EXHAUSTED` (the code
//! gRPC documents for it) naming the limit. The check stays tonic's, so a header claiming
//! gigabytes never makes the server reserve them. tonic answers a request frame it cannot
//! read (cut short, an unknown compression flag, compressed without a `grpc-encoding`, not
//! decompressing, no message at all) with `INTERNAL`, as the gRPC documents say; the client
//! sent it, so [`ClientErrorStatus`] says `INVALID_ARGUMENT` there too.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::DecodeBuf;
use tonic::codegen::{Context, Poll, Service, http};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::MESSAGE_BYTES_CAP;

/// prost's codec with our status codes; the generated clients and servers use it
/// (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self { inner: ProstCodec::default() }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder { _message: PhantomData }
    }
}

/// Decodes `U`, or says why the bytes are not one.
#[derive(Debug, Clone)]
pub struct Decoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // tonic checked the frame against its (configured) limit; this holds wherever that
        // limit is unset.
        let len = buf.remaining();
        if len > MESSAGE_BYTES_CAP {
            return Err(over_limit(Some(len), MESSAGE_BYTES_CAP));
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed {}: {e}", message_name::<U>())))
    }
}

/// `cloudai_proto::v1::LogBatch` → `LogBatch`.
fn message_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

/// The answer to a message over `limit` bytes.
pub fn over_limit(len: Option<usize>, limit: usize) -> Status {
    match len {
        Some(len) => {
            Status::resource_exhausted(format!("message of {len} bytes is over the limit of {limit} bytes"))
        }
        None => Status::resource_exhausted(format!("message is over the limit of {limit} bytes")),
    }
}

/// Wraps a gRPC server so that tonic's own refusals of a bad request blame the client: a
/// request over the decoding limit (`OUT_OF_RANGE`, decided from the frame header) is
/// answered `RESOURCE_EXHAUSTED` with the limit, a frame it cannot read (`INTERNAL`)
/// `INVALID_ARGUMENT`. Every other answer passes unchanged.
#[derive(Debug, Clone)]
pub struct ClientErrorStatus<S> {
    inner: S,
    /// The decoding limit set on `inner`, named in the answer.
    limit: usize,
}

impl<S> ClientErrorStatus<S> {
    pub fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

/// How tonic 0.14 words its own refusal (`codec/decode.rs`); a test pins it.
const TONIC_TOO_LARGE: &str = "decoded message length too large: found ";

/// How tonic 0.14 begins its `INTERNAL` answers to a request frame it cannot read
/// (`codec/decode.rs`, `server/grpc.rs`); a test pins them. Our handlers never answer
/// `INTERNAL`, so nothing else is taken for one of these.
const TONIC_BAD_FRAME: &[&str] = &[
    // A compressed flag without a `grpc-encoding`, or a flag other than 0 and 1.
    "protocol error: received message with ",
    "Error decompressing: ",
    "Unexpected EOF decoding stream.",
    "Missing request message.",
];

fn rewrite(response: http::Response<tonic::body::Body>, limit: usize) -> http::Response<tonic::body::Body> {
    // A status answered before any handler ran travels in the response's extensions.
    let Some(status) = response.extensions().get::<Status>() else { return response };
    match status.code() {
        tonic::Code::OutOfRange => {
            let Some((_, rest)) = status.message().split_once(TONIC_TOO_LARGE) else { return response };
            let len = rest.split(' ').next().and_then(|n| n.parse().ok());
            over_limit(len, limit).into_http()
        }
        tonic::Code::Internal if TONIC_BAD_FRAME.iter().any(|p| status.message().starts_with(p)) => {
            Status::invalid_argument(format!("malformed request frame: {}", status.message())).into_http()
        }
        _ => response,
    }
}

impl<S, B> Service<http::Request<B>> for ClientErrorStatus<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Rewritten<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Rewritten { answer: self.inner.call(request), limit: self.limit }
    }
}

/// The inner server's answer, rewritten as [`ClientErrorStatus`] says. No allocation of its
/// own: the generated server's future is already boxed (so `Unpin`).
pub struct Rewritten<F> {
    answer: F,
    limit: usize,
}

impl<F, E> Future for Rewritten<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let limit = self.limit;
        Pin::new(&mut self.answer).poll(cx).map(|answer| answer.map(|r| rewrite(r, limit)))
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ClientErrorStatus<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1 as pb;

    #[test]
    fn message_names_are_short() {
        assert_eq!(message_name::<pb::LogBatch>(), "LogBatch");
    }

    #[test]
    fn only_tonics_size_refusal_is_rewritten() {
        let tonic_words = Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        );
        let answer = rewrite(tonic_words.into_http(), 4194304);
        let status = answer.extensions().get::<Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "message of 5242880 bytes is over the limit of 4194304 bytes");

        let other = rewrite(Status::out_of_range("page 9 of 3").into_http(), 4194304);
        let status = other.extensions().get::<Status>().expect("a status");
        assert_eq!((status.code(), status.message()), (tonic::Code::OutOfRange, "page 9 of 3"));
    }

    /// Found by the `grpc_wire` fuzz target: a frame flagged compressed without a
    /// `grpc-encoding` was answered `INTERNAL`, as if the master broke.
    #[test]
    fn tonics_refusals_of_a_bad_frame_are_invalid_argument() {
        let tonic_words = [
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            "protocol error: received message with invalid compression flag: 2 (valid flags are 0 and 1), while sending request",
            "Error decompressing: corrupt deflate stream, while sending request",
            "Unexpected EOF decoding stream.",
            "Missing request message.",
        ];
        for words in tonic_words {
            let answer = rewrite(Status::internal(words).into_http(), 4194304);
            let status = answer.extensions().get::<Status>().expect("a status");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{words}");
            assert_eq!(status.message(), format!("malformed request frame: {words}"));
        }
        let ours = rewrite(Status::internal("a bug of ours").into_http(), 4194304);
        let status = ours.extensions().get::<Status>().expect("a status");
        assert_eq!((status.code(), status.message()), (tonic::Code::Internal, "a bug of ours"));
    }
}
