//! The migration websockets, whichever side opened them (an operation's websocket that a
//! peer dialled, or one this daemon dialled on a peer), as one pair of halves; LXD's
//! `shared.WebsocketIO` framing on them (each write one binary message, an empty text
//! message ends a stream); and the control channel's protobuf messages.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::MigrationError;
use super::progress::Progress;

/// The most one binary message carries: a pipe read of a fast producer fills it in one
/// go (see [`super::rsync::widen_pipe`]), and each message costs a frame, a flush and TLS
/// records on the way, so big ones keep a 500 MB volume to a few hundred.
const FRAME: usize = 1 << 20;

/// What is read from the socket under TLS at once: rustls asks for 4 KiB at a time and
/// tungstenite 0.24 reads its frames 4 KiB at a time, a system call each without this.
const SOCKET_READ: usize = 256 << 10;

/// One websocket message, as the migration uses them.
#[derive(Debug)]
pub enum Frame {
    Binary(Vec<u8>),
    Text(String),
    /// A close frame (the normal end of the control channel).
    Close,
}

type FrameSink = Pin<Box<dyn Sink<Frame, Error = MigrationError> + Send>>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, MigrationError>> + Send>>;

/// The sending half of a websocket.
pub struct Tx {
    sink: FrameSink,
    /// A send failed: the sink must not be polled again (futures' adapters panic).
    broken: bool,
}

/// The receiving half of a websocket.
pub struct Rx {
    channel: &'static str,
    stream: FrameStream,
    /// The stream ended or failed: it is not polled again.
    ended: bool,
}

/// A migration websocket (`control` or `fs`), split.
pub struct Conn {
    pub tx: Tx,
    pub rx: Rx,
}

fn ws_error(
    channel: &'static str,
) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> MigrationError {
    move |source| MigrationError::Websocket { channel, source }
}

impl Conn {
    /// A websocket a peer opened on one of our operations.
    pub fn accepted(channel: &'static str, ws: axum::extract::ws::WebSocket) -> Conn {
        use axum::extract::ws::Message;
        let (sink, stream) = ws.split();
        let sink = sink
            .sink_map_err(move |e| ws_error(channel)(e.into()))
            .with(|f: Frame| {
                futures_util::future::ready(Ok::<_, MigrationError>(match f {
                    Frame::Binary(b) => Message::Binary(b),
                    Frame::Text(t) => Message::Text(t),
                    Frame::Close => Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1000,
                        reason: "".into(),
                    })),
                }))
            });
        let stream = stream.filter_map(move |m| {
            futures_util::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(Frame::Binary(b))),
                Ok(Message::Text(t)) => Some(Ok(Frame::Text(t))),
                Ok(Message::Close(_)) => Some(Ok(Frame::Close)),
                Ok(_) => None,
                Err(e) => Some(Err(ws_error(channel)(e.into()))),
            })
        });
        Conn {
            tx: Tx {
                sink: Box::pin(sink),
                broken: false,
            },
            rx: Rx {
                channel,
                stream: Box::pin(stream),
                ended: false,
            },
        }
    }

    /// A websocket this daemon dialled.
    pub fn dialled<S>(channel: &'static str, ws: tokio_tungstenite::WebSocketStream<S>) -> Conn
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::Message;
        let (sink, stream) = ws.split();
        let sink = sink
            .sink_map_err(move |e| ws_error(channel)(e.into()))
            .with(|f: Frame| {
                futures_util::future::ready(Ok::<_, MigrationError>(match f {
                    Frame::Binary(b) => Message::Binary(b),
                    Frame::Text(t) => Message::Text(t),
                    Frame::Close => Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })),
                }))
            });
        let stream = stream.filter_map(move |m| {
            futures_util::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(Frame::Binary(b))),
                Ok(Message::Text(t)) => Some(Ok(Frame::Text(t))),
                Ok(Message::Close(_)) => Some(Ok(Frame::Close)),
                Ok(_) => None,
                Err(e) => Some(Err(ws_error(channel)(e.into()))),
            })
        });
        Conn {
            tx: Tx {
                sink: Box::pin(sink),
                broken: false,
            },
            rx: Rx {
                channel,
                stream: Box::pin(stream),
                ended: false,
            },
        }
    }
}

impl Tx {
    pub async fn send(&mut self, frame: Frame) -> Result<(), MigrationError> {
        if self.broken {
            return Err(MigrationError::Closed("migration"));
        }
        let sent = self.sink.send(frame).await;
        self.broken = sent.is_err();
        sent
    }

    /// Ends the current stream (`WebsocketIO.Close`: an empty text message).
    pub async fn end_stream(&mut self) -> Result<(), MigrationError> {
        self.send(Frame::Text(String::new())).await
    }

    /// Sends one protobuf message as one binary message.
    pub async fn send_message(&mut self, msg: &impl prost::Message) -> Result<(), MigrationError> {
        self.send(Frame::Binary(msg.encode_to_vec())).await
    }

    /// Closes the websocket normally (code 1000), ignoring a peer already gone.
    pub async fn close(&mut self) {
        if self.send(Frame::Close).await.is_ok() {
            let _ = self.sink.close().await;
        }
        self.broken = true;
    }

    /// Copies `from` until its end, one binary message per read (of at most [`FRAME`]
    /// bytes, handed over without a copy), then ends the stream.
    pub async fn pump_from<R: AsyncRead + Unpin>(
        &mut self,
        mut from: R,
        progress: Option<&Progress>,
    ) -> Result<(), MigrationError> {
        loop {
            let mut buf = Vec::with_capacity(FRAME);
            let n = from
                .read_buf(&mut buf)
                .await
                .map_err(MigrationError::io("read the local stream"))?;
            if n == 0 {
                break;
            }
            if let Some(p) = progress {
                p.add(n as u64);
            }
            self.send(Frame::Binary(buf)).await?;
        }
        self.end_stream().await
    }
}

impl Rx {
    /// The next message; a closed or failed socket is an error naming the channel.
    pub async fn next(&mut self) -> Result<Frame, MigrationError> {
        if self.ended {
            return Err(MigrationError::Closed(self.channel));
        }
        match self.stream.next().await {
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            None => {
                self.ended = true;
                Err(MigrationError::Closed(self.channel))
            }
        }
    }

    /// The next protobuf message, which must be a binary message.
    pub async fn recv_message<M: prost::Message + Default>(
        &mut self,
        what: &'static str,
    ) -> Result<M, MigrationError> {
        match self.next().await? {
            Frame::Binary(b) => M::decode(&b[..]).map_err(|e| MigrationError::BadMessage {
                what,
                reason: e.to_string(),
            }),
            Frame::Text(_) => Err(MigrationError::NotBinary),
            Frame::Close => Err(MigrationError::Closed(self.channel)),
        }
    }

    /// Copies one stream into `to` up to its end (an empty text message), then shuts `to`
    /// down. A close before the end is an error: the stream is incomplete.
    pub async fn pump_into<W: AsyncWrite + Unpin>(
        &mut self,
        mut to: W,
        progress: Option<&Progress>,
    ) -> Result<(), MigrationError> {
        loop {
            match self.next().await? {
                Frame::Binary(b) => {
                    if let Some(p) = progress {
                        p.add(b.len() as u64);
                    }
                    to.write_all(&b)
                        .await
                        .map_err(MigrationError::io("write the local stream"))?;
                }
                Frame::Text(t) if t.is_empty() => break,
                Frame::Text(_) => return Err(MigrationError::NotBinary),
                Frame::Close => return Err(MigrationError::Closed(self.channel)),
            }
        }
        let _ = to.shutdown().await;
        Ok(())
    }

    /// One whole stream, at most `limit` bytes (a header frame).
    pub async fn read_stream(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, MigrationError> {
        let mut out = Vec::new();
        loop {
            match self.next().await? {
                Frame::Binary(b) => {
                    out.extend_from_slice(&b);
                    if out.len() > limit {
                        return Err(MigrationError::BadMessage {
                            what,
                            reason: format!("longer than {limit} bytes"),
                        });
                    }
                }
                Frame::Text(t) if t.is_empty() => return Ok(out),
                Frame::Text(_) => return Err(MigrationError::NotBinary),
                Frame::Close => return Err(MigrationError::Closed(self.channel)),
            }
        }
    }
}

/// The websocket URL of `secret` on the peer's operation `operation`
/// (`https://host:port/1.0/operations/<id>`), and the host and port to dial.
pub fn websocket_url(
    operation: &str,
    secret: &str,
) -> Result<(String, String, u16), MigrationError> {
    let bad = || MigrationError::BadOperationUrl(operation.to_string());
    let rest = operation.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
    let path = path.split('?').next().unwrap_or_default();
    let id = path.strip_prefix("1.0/operations/").ok_or_else(bad)?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad());
    }
    if !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (authority.to_string(), 8443),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad());
    }
    let url = format!("wss://{authority}/1.0/operations/{id}/websocket?secret={secret}");
    Ok((url, host, port))
}

/// Dials the websocket of `secret` on the peer's operation, over TLS that accepts only
/// `cert_der` (the peer's certificate as its owner gave it), without a client certificate.
pub async fn dial(
    channel: &'static str,
    operation: &str,
    secret: &str,
    cert_der: &[u8],
) -> Result<Conn, MigrationError> {
    let (url, host, port) = websocket_url(operation, secret)?;
    let dial_err = |source: Box<dyn std::error::Error + Send + Sync>| MigrationError::Dial {
        url: url.clone(),
        source,
    };
    let config = hutch_tls::client_config(hutch_tls::ServerTrust::Pinned(cert_der.to_vec()), None)
        .map_err(MigrationError::BadCertificate)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&config));
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| dial_err(e.into()))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| dial_err(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let tcp = tokio::io::BufReader::with_capacity(SOCKET_READ, tcp);
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| dial_err(e.into()))?;
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
            max_message_size: Some(64 << 20),
            max_frame_size: Some(64 << 20),
            ..Default::default()
        };
        let (ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tls, Some(config))
            .await
            .map_err(|e| dial_err(e.into()))?;
        Ok::<_, MigrationError>(ws)
    };
    // LXD gives a dial five seconds.
    let ws = tokio::time::timeout(std::time::Duration::from_secs(5), handshake)
        .await
        .map_err(|_| dial_err("timed out".into()))??;
    Ok(Conn::dialled(channel, ws))
}

pub use crate::operations::new_secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_urls_become_websocket_urls() {
        let (url, host, port) =
            websocket_url("https://127.0.0.1:8443/1.0/operations/ab-12", "s3cr3t").unwrap();
        assert_eq!(
            url,
            "wss://127.0.0.1:8443/1.0/operations/ab-12/websocket?secret=s3cr3t"
        );
        assert_eq!((host.as_str(), port), ("127.0.0.1", 8443));
        let (_, host, port) = websocket_url("https://[::1]:9443/1.0/operations/x", "s").unwrap();
        assert_eq!((host.as_str(), port), ("::1", 9443));
        for bad in [
            "http://h/1.0/operations/x",
            "https://h/1.0/instances/x",
            "https://h/1.0/operations/../x",
            "https://:1/1.0/operations/x",
        ] {
            assert!(websocket_url(bad, "s").is_err(), "{bad}");
        }
        assert!(websocket_url("https://h:1/1.0/operations/x", "a&b=c").is_err());
        assert_eq!(new_secret().len(), 64);
    }
}
