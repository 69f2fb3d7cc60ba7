//! Server-sent events (the WHATWG `text/event-stream` format), read as the
//! bytes arrive: `event:` names an event, `data:` lines carry it (joined by
//! newlines), a blank line sends it, lines starting with `:` are comments.
//! Streaming chat APIs all use it. Lines end with `\n` or `\r\n` (no API
//! sends a bare `\r`); an event not ended by a blank line when the body ends
//! was never sent.

/// An incremental event-stream reader.
#[derive(Debug, Default)]
pub struct Events {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl Events {
    /// Reads `bytes`, calling `each(event, data)` for every event they end
    /// (`event` is empty when none was named); stops at `each`'s first error.
    pub fn feed<E>(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(end);
            rest = &after[1..];
            if self.partial.is_empty() {
                self.line(line, &mut each)?;
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, &mut each)?;
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    fn line<E>(
        &mut self,
        line: &[u8],
        each: &mut impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                let result = each(&self.event, &self.data);
                self.event.clear();
                self.data.clear();
                self.has_data = false;
                return result;
            }
            self.event.clear();
            return Ok(());
        }
        if line.starts_with(b":") {
            return Ok(());
        }
        let line = match std::str::from_utf8(line) {
            Ok(line) => std::borrow::Cow::Borrowed(line),
            Err(_) => String::from_utf8_lossy(line),
        };
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut events = Events::default();
        let mut out = Vec::new();
        for chunk in chunks {
            events
                .feed(chunk, |e, d| {
                    out.push((e.to_owned(), d.to_owned()));
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn events_split_anywhere_read_the_same() {
        let stream = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata:y\n\ndata: [DONE]\n\n";
        let whole = read(&[stream]);
        assert_eq!(
            whole,
            [
                ("message_start".into(), "{\"a\":1}".into()),
                (String::new(), "x\ny".into()),
                (String::new(), "[DONE]".into()),
            ]
        );
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(read(&[a, b]), whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(read(&bytes), whole);
    }

    #[test]
    fn an_event_without_its_blank_line_was_never_sent() {
        assert_eq!(read(&[b"data: {\"a\":1}\n\ndata: {\"b\":2}\n"]).len(), 1);
    }
}
