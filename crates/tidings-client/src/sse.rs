//! Server-Sent Events read from an answer's body: each message's `data` is one
//! item of the stream, in the API's JSON; an `error` event ends the stream with
//! the server's error.

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tidings_api::ErrorBody;

use crate::ClientError;

/// Longest line a stream may send: far beyond any item the API sends.
const LINE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A stream of items of type `T`, read as the server sends them.
pub struct EventStream<T> {
    body: Incoming,
    what: String,
    buffer: BytesMut,
    /// The current message: its event type and data lines so far.
    event: String,
    data: String,
    done: bool,
    item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> EventStream<T> {
    pub(crate) fn new(body: Incoming, what: String) -> EventStream<T> {
        EventStream {
            body,
            what,
            buffer: BytesMut::new(),
            event: String::new(),
            data: String::new(),
            done: false,
            item: PhantomData,
        }
    }

    /// The next item; `None` once the stream has ended. An error event from
    /// the server is [`ClientError::Stream`], after which the stream ends.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        while !self.done {
            while let Some(line) = self.line() {
                if let Some(item) = self.take_line(&line) {
                    return Some(item);
                }
            }
            if self.buffer.len() > LINE_BYTES_MAX {
                self.done = true;
                return Some(Err(ClientError::TooLarge {
                    what: self.what.clone(),
                }));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(ClientError::Http {
                        what: self.what.clone(),
                        source,
                    }));
                }
            }
        }
        None
    }

    /// The next whole line in the buffer, without its line ending.
    fn line(&mut self) -> Option<String> {
        let end = self.buffer.iter().position(|b| *b == b'\n')?;
        let mut line = self.buffer.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Some(String::from_utf8_lossy(line.chunk()).into_owned())
    }

    /// Takes one line; a blank line ends a message, which gives an item.
    fn take_line(&mut self, line: &str) -> Option<Result<T, ClientError>> {
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            // Comments (keep-alives), ids and retry hints carry no item.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Result<T, ClientError>> {
        let data = std::mem::take(&mut self.data);
        let event = std::mem::take(&mut self.event);
        if data.is_empty() {
            return None;
        }
        if event == "error" {
            self.done = true;
            return Some(match serde_json::from_str::<ErrorBody>(&data) {
                Ok(body) => Err(ClientError::Stream {
                    code: body.error_code,
                    message: body.message,
                }),
                Err(source) => Err(ClientError::Decode {
                    what: self.what.clone(),
                    source,
                }),
            });
        }
        Some(
            serde_json::from_str(&data).map_err(|source| ClientError::Decode {
                what: self.what.clone(),
                source,
            }),
        )
    }
}
