//! Request framing and response encoding. A request is an i32 size, a header and a body; a
//! response is an i32 size, a header (version by API and version; always v0 for ApiVersions)
//! and a body, handed to the connection as `Bytes` chunks so record data is never copied.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The fixed part of every request header: enough to route it, or to refuse it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    pub fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < 8 {
            return None;
        }
        Some(Self {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }
}

/// A decoded request header plus what the handlers need of it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

/// Decodes the request header from the start of `frame`, leaving the body.
pub fn decode_header(
    api_key: ApiKey,
    version: i16,
    frame: &mut Bytes,
) -> Result<RequestContext, CodecError> {
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(frame, header_version)
        .map_err(|e| CodecError(format!("request header: {e}")))?;
    Ok(RequestContext {
        api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header
            .client_id
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    })
}

/// A request that does not decode, or a response that does not encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Decodes a request body of type `T` at `version`.
pub fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, CodecError> {
    T::decode(body, version).map_err(|e| CodecError(format!("request body: {e}")))
}

/// A response ready to write: chunks in order, the first starting with the size prefix.
pub type ResponseChunks = Vec<Bytes>;

/// Writes the size prefix and response header for `ctx` into a fresh buffer.
pub fn response_head(ctx: &RequestContext) -> BytesMut {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header_version = if ctx.api_key == ApiKey::ApiVersions {
        0
    } else {
        ctx.api_key.response_header_version(ctx.version)
    };
    let header = ResponseHeader::default().with_correlation_id(ctx.correlation_id);
    // A response header holds an i32 and perhaps an empty tag buffer: it always encodes.
    if let Err(e) = header.encode(&mut buf, header_version) {
        tracing::error!("cannot encode a response header: {e}");
    }
    buf
}

/// Patches the size prefix of a response whose chunks are complete.
pub fn finish(mut chunks: ResponseChunks) -> ResponseChunks {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    if let Some(first) = chunks.first_mut() {
        let mut head = BytesMut::from(&first[..]);
        head[..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
        *first = head.freeze();
    }
    chunks
}

/// Encodes a whole response of type `T` at the request's version.
pub fn encode_response<T: Encodable>(
    ctx: &RequestContext,
    body: &T,
) -> Result<ResponseChunks, CodecError> {
    let mut buf = response_head(ctx);
    body.encode(&mut buf, ctx.version)
        .map_err(|e| CodecError(format!("encoding {:?} v{}: {e}", ctx.api_key, ctx.version)))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(vec![buf.freeze()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_needs_eight_bytes() {
        assert_eq!(RequestPrefix::parse(&[0, 18, 0, 3, 0, 0, 0]), None);
        assert_eq!(
            RequestPrefix::parse(&[0, 18, 0, 3, 0, 0, 0, 7]),
            Some(RequestPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            })
        );
    }

    #[test]
    fn api_versions_response_header_is_v0_even_when_flexible() {
        let ctx = RequestContext {
            api_key: ApiKey::ApiVersions,
            version: 3,
            correlation_id: 9,
            client_id: String::new(),
        };
        let head = response_head(&ctx);
        // size placeholder + correlation id, no tag buffer.
        assert_eq!(&head[..], &[0, 0, 0, 0, 0, 0, 0, 9]);
        let ctx = RequestContext {
            api_key: ApiKey::Metadata,
            version: 12,
            ..ctx
        };
        assert_eq!(response_head(&ctx).len(), 9);
    }
}
