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

/// One message of a stream: its event type (empty for the default), data,
/// and the stream's last event id once it was read.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    event: String,
    data: String,
    id: Option<String>,
}

/// The text/event-stream format, fed with bytes as they arrive: lines end in
/// LF or CRLF, a blank line ends a message, `data:` lines join with LF,
/// comments and other fields carry nothing an item needs.
#[derive(Default)]
struct Parser {
    buffer: BytesMut,
    event: String,
    data: String,
    /// The last event id: it outlives its message, as the specification says.
    id: Option<String>,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes waiting for the end of their line.
    fn waiting(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole message in what was pushed.
    fn message(&mut self) -> Option<Message> {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line = self.buffer.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            let line = String::from_utf8_lossy(line.chunk()).into_owned();
            if line.is_empty() {
                let data = std::mem::take(&mut self.data);
                let event = std::mem::take(&mut self.event);
                if !data.is_empty() {
                    return Some(Message {
                        event,
                        data,
                        id: self.id.clone(),
                    });
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut self.event),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                // An id with NUL is ignored, as the specification says.
                "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
                // Comments (keep-alives) and retry hints carry no item.
                _ => {}
            }
        }
        None
    }
}

/// A stream of items of type `T`, read as the server sends them.
pub struct EventStream<T> {
    body: Incoming,
    what: String,
    parser: Parser,
    done: bool,
    /// The id of the last item handed out.
    last_id: Option<String>,
    item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> EventStream<T> {
    pub(crate) fn new(body: Incoming, what: String) -> EventStream<T> {
        EventStream {
            body,
            what,
            parser: Parser::default(),
            done: false,
            last_id: None,
            item: PhantomData,
        }
    }

    /// The next item; `None` once the stream has ended. An error event from
    /// the server is [`ClientError::Stream`], after which the stream ends.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        while !self.done {
            if let Some(message) = self.parser.message() {
                return Some(self.item(message));
            }
            if self.parser.waiting() > LINE_BYTES_MAX {
                self.done = true;
                return Some(Err(ClientError::TooLarge {
                    what: self.what.clone(),
                }));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                    }
                }
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(ClientError::Http {
                        what: self.what.clone(),
                        cause: source,
                    }));
                }
            }
        }
        None
    }

    /// The event id of the last item handed out: give it back as
    /// `Last-Event-ID` to resume after it.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn item(&mut self, message: Message) -> Result<T, ClientError> {
        self.last_id.clone_from(&message.id);
        let decode = |cause| ClientError::Decode {
            what: self.what.clone(),
            cause,
        };
        if message.event == "error" {
            self.done = true;
            let body: ErrorBody = serde_json::from_str(&message.data).map_err(decode)?;
            return Err(ClientError::Stream {
                code: body.error_code,
                message: body.message,
            });
        }
        serde_json::from_str(&message.data).map_err(decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(chunks: &[&str]) -> Vec<Message> {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes());
            while let Some(m) = parser.message() {
                out.push(m);
            }
        }
        out
    }

    fn message(event: &str, data: &str, id: Option<&str>) -> Message {
        Message {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn messages_are_read_across_chunks_and_line_endings() {
        let got = messages(&[
            ": keep-alive\n\n",
            "data: {\"a\":",
            "1}\r\nid: 0:4\r\n\r\n",
            "data: one\ndata: two\n\n",
            "event: error\ndata: {\"error_code\":\"x\"}\n",
            "\n",
            "data: no end yet",
        ]);
        assert_eq!(
            got,
            [
                message("", "{\"a\":1}", Some("0:4")),
                message("", "one\ntwo", Some("0:4")),
                message("error", "{\"error_code\":\"x\"}", Some("0:4")),
            ]
        );
    }
}
