//! Turning an application's message into the payload text of a frame.
//!
//! As in the original server, a string is sent verbatim and any other value as its JSON text.
//! This is decided by how the value serializes, so `&str`, `String`, `Cow<str>` and a
//! `serde_json::Value::String` all go out verbatim, while numbers, arrays, maps and structs
//! go out as compact JSON.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

/// Serializes `message` into payload text: verbatim for strings, JSON text for anything else.
pub(crate) fn to_payload<M: Serialize + ?Sized>(message: &M) -> Result<String, serde_json::Error> {
    serialize(message).map(|(payload, _)| payload)
}

/// Serializes a fetch result: `None` when it is the JSON value `null` (`None`, `()`), which
/// sends nothing. The string `"null"` is a real message.
pub(crate) fn to_fetch_payload<M: Serialize + ?Sized>(
    message: &M,
) -> Result<Option<String>, serde_json::Error> {
    let (payload, is_string) = serialize(message)?;
    Ok((is_string || payload != "null").then_some(payload))
}

/// The payload text and whether the value was a string.
fn serialize<M: Serialize + ?Sized>(message: &M) -> Result<(String, bool), serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut formatter = PayloadFormatter::default();
    message.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out,
        &mut formatter,
    ))?;
    let payload =
        String::from_utf8(out).expect("serde_json writes UTF-8, and so does the formatter");
    Ok((payload, formatter.raw_string))
}

/// The compact JSON formatter, except that a string at the top level is written raw: without
/// quotes and without escapes, so it comes out verbatim in one pass.
#[derive(Default)]
struct PayloadFormatter {
    depth: usize,
    raw_string: bool,
}

impl PayloadFormatter {
    fn open<W: ?Sized + io::Write>(&mut self, writer: &mut W, token: &[u8]) -> io::Result<()> {
        self.depth += 1;
        writer.write_all(token)
    }

    fn close<W: ?Sized + io::Write>(&mut self, writer: &mut W, token: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        writer.write_all(token)
    }
}

impl Formatter for &mut PayloadFormatter {
    fn begin_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        if self.depth == 0 {
            self.raw_string = true;
            return Ok(());
        }
        writer.write_all(b"\"")
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        if self.raw_string {
            return Ok(());
        }
        writer.write_all(b"\"")
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        if !self.raw_string {
            return CompactFormatter.write_char_escape(writer, char_escape);
        }
        let byte = match char_escape {
            CharEscape::Quote => b'"',
            CharEscape::ReverseSolidus => b'\\',
            CharEscape::Solidus => b'/',
            CharEscape::Backspace => 0x08,
            CharEscape::FormFeed => 0x0c,
            CharEscape::LineFeed => b'\n',
            CharEscape::CarriageReturn => b'\r',
            CharEscape::Tab => b'\t',
            CharEscape::AsciiControl(byte) => byte,
        };
        writer.write_all(&[byte])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(writer, b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close(writer, b"]")
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(writer, b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close(writer, b"}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_go_out_verbatim() {
        assert_eq!(to_payload("hello").unwrap(), "hello");
        assert_eq!(
            to_payload(&"with \"quotes\"\n".to_owned()).unwrap(),
            "with \"quotes\"\n"
        );
        assert_eq!(to_payload(&json!("a value")).unwrap(), "a value");
        assert_eq!(to_payload("").unwrap(), "");
    }

    #[test]
    fn other_values_go_out_as_json_text() {
        assert_eq!(
            to_payload(&json!({"hello": "world"})).unwrap(),
            r#"{"hello":"world"}"#
        );
        assert_eq!(to_payload(&["a", "b"]).unwrap(), r#"["a","b"]"#);
        assert_eq!(to_payload(&42).unwrap(), "42");
        assert_eq!(
            to_payload(&json!({"s": "a\"b"})).unwrap(),
            r#"{"s":"a\"b"}"#
        );
    }

    #[test]
    fn every_escaped_character_comes_out_raw() {
        let text = "q\" b\\ s/ \u{8}\u{c}\n\r\t \u{1} é";
        assert_eq!(to_payload(text).unwrap(), text);
        assert_eq!(
            to_payload(&json!([text])).unwrap(),
            serde_json::to_string(&[text]).unwrap()
        );
    }

    #[test]
    fn null_fetch_result_sends_nothing_but_the_string_null_does() {
        assert_eq!(to_fetch_payload(&None::<String>).unwrap(), None);
        assert_eq!(to_fetch_payload(&()).unwrap(), None);
        assert_eq!(to_fetch_payload("null").unwrap().as_deref(), Some("null"));
        assert_eq!(to_fetch_payload(&Some("x")).unwrap().as_deref(), Some("x"));
    }
}
