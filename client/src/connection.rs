//! One blocking connection to one broker: version negotiation and request/response calls.

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};

use crate::sb;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {source}; is a broker running there? (set --bootstrap)")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("{context}: {}", crate::error_name(*code))]
    Kafka { code: i16, context: String },
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    client_id: String,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects and asks the broker which versions it speaks.
    pub fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| {
                connect_err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no address",
                ))
            })?;
        let stream = TcpStream::connect_timeout(&sock, timeout).map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout + Duration::from_secs(30)))
            .map_err(connect_err)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(connect_err)?;
        let mut c = Self {
            addr: addr.to_string(),
            stream,
            client_id: client_id.to_string(),
            correlation: 0,
            versions: HashMap::new(),
        };
        let resp: ApiVersionsResponse = c.call_at(
            ApiVersionsRequest::default()
                .with_client_software_name(sb("spate"))
                .with_client_software_version(sb(env!("CARGO_PKG_VERSION"))),
            3,
        )?;
        let resp = if resp.error_code == 35 {
            c.call_at(ApiVersionsRequest::default(), 0)?
        } else {
            resp
        };
        for k in resp.api_keys {
            c.versions.insert(k.api_key, (k.min_version, k.max_version));
        }
        Ok(c)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version both sides speak, within `min..=max` of ours.
    pub fn version_for<R: Request>(&self, min: i16, max: i16) -> Result<i16, ClientError> {
        let (bmin, bmax) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            ClientError::Protocol(format!(
                "the broker at {} does not offer API key {}",
                self.addr,
                R::KEY
            ))
        })?;
        let v = max.min(bmax).min(R::VERSIONS.max);
        if v < min.max(bmin) {
            return Err(ClientError::Protocol(format!(
                "no common version for API key {} (broker {bmin}..={bmax}, client {min}..={max})",
                R::KEY
            )));
        }
        Ok(v)
    }

    /// Sends `req` at the best common version in `min..=max` and reads its response.
    pub fn call<R: Request>(
        &mut self,
        req: R,
        min: i16,
        max: i16,
    ) -> Result<R::Response, ClientError> {
        let v = self.version_for::<R>(min, max)?;
        self.call_at(req, v)
    }

    /// Sends without waiting for a response (Produce with acks=0, or a request whose
    /// response [`Connection::receive`] reads later). Returns its correlation id.
    pub fn send_only<R: Request>(&mut self, req: R, version: i16) -> Result<i32, ClientError> {
        self.write_request(&req, version)
    }

    /// Sends a request of type `R` whose body the caller encoded as `body` (chunks written
    /// as they are, one vectored write: record batches need not be copied into a request
    /// buffer). Returns its correlation id; [`Connection::receive`] reads the response.
    pub fn send_encoded<R: Request>(
        &mut self,
        version: i16,
        body: &[Bytes],
    ) -> Result<i32, ClientError> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(sb(&self.client_id)));
        let mut head = BytesMut::with_capacity(4 + 64 + self.client_id.len());
        head.extend_from_slice(&[0; 4]);
        header
            .encode(&mut head, R::header_version(version))
            .map_err(|e| ClientError::Protocol(format!("encoding a request header: {e}")))?;
        let len = head.len() - 4 + body.iter().map(Bytes::len).sum::<usize>();
        let len = i32::try_from(len)
            .map_err(|_| ClientError::Protocol(format!("request of {len} bytes is too large")))?;
        head[..4].copy_from_slice(&len.to_be_bytes());
        let mut slices: Vec<IoSlice<'_>> = std::iter::once(&head[..])
            .chain(body.iter().map(|b| &b[..]))
            .map(IoSlice::new)
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match self.stream.write_vectored(slices) {
                Ok(0) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        source: std::io::ErrorKind::WriteZero.into(),
                    })
                }
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        source,
                    })
                }
            }
        }
        Ok(self.correlation)
    }

    fn write_request<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, ClientError> {
        // Sized up front: a produce request carries megabytes, and growing the buffer while
        // encoding would copy them again.
        let mut body = BytesMut::with_capacity(req.compute_size(version).unwrap_or(0));
        req.encode(&mut body, version)
            .map_err(|e| ClientError::Protocol(format!("encoding a request: {e}")))?;
        self.send_encoded::<R>(version, &[body.freeze()])
    }

    pub fn call_at<R: Request>(
        &mut self,
        req: R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation = self.write_request(&req, version)?;
        self.receive::<R>(correlation, version)
    }

    /// Reads the response to the request sent with `correlation` at `version`. Responses come
    /// in the order the requests were sent: with several in flight, receive them in that order.
    pub fn receive<R: Request>(
        &mut self,
        correlation: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let addr = self.addr.clone();
        let io = |source| ClientError::Io {
            addr: addr.clone(),
            source,
        };
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let n = i32::from_be_bytes(size);
        if !(4..=1 << 30).contains(&n) {
            return Err(ClientError::Protocol(format!(
                "response size {n} from {}",
                self.addr
            )));
        }
        // Read into the vector's spare capacity (no zeroing of megabytes first).
        let mut body = Vec::with_capacity(n as usize);
        (&mut self.stream)
            .take(n as u64)
            .read_to_end(&mut body)
            .map_err(io)?;
        if body.len() < n as usize {
            return Err(ClientError::Io {
                addr: addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} of {n} response bytes",
                        body.len()
                    ),
                ),
            });
        }
        let mut body = Bytes::from(body);
        // ApiVersions answers always use header v0.
        let hv = if R::KEY == 18 {
            0
        } else {
            R::Response::header_version(version)
        };
        let header = ResponseHeader::decode(&mut body, hv)
            .map_err(|e| ClientError::Protocol(format!("decoding a response from {addr}: {e}")))?;
        if header.correlation_id != correlation {
            return Err(ClientError::Protocol(format!(
                "response correlation id {} does not match request {correlation}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version)
            .map_err(|e| ClientError::Protocol(format!("decoding a response from {addr}: {e}")))
    }
}
