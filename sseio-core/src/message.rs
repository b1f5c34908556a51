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
    let mut formatter = EscapeAware { escaped: false };
    message.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out,
        &mut formatter,
    ))?;
    if out.first() != Some(&b'"') {
        // Not a string: the JSON text itself is the payload.
        return Ok((utf8(out), false));
    }
    if formatter.escaped {
        // A string with escapes: let serde_json undo them.
        return Ok((serde_json::from_slice(&out)?, true));
    }
    // A string without escapes: its text is between the quotes.
    out.pop();
    out.remove(0);
    Ok((utf8(out), true))
}

/// # Panics
///
/// Never in practice: serde_json only writes UTF-8, and cutting off the two ASCII quotes keeps it so.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

/// The compact JSON formatter, noting whether any character had to be escaped.
struct EscapeAware {
    escaped: bool,
}

impl Formatter for &mut EscapeAware {
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        self.escaped = true;
        CompactFormatter.write_char_escape(writer, char_escape)
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
    fn null_fetch_result_sends_nothing_but_the_string_null_does() {
        assert_eq!(to_fetch_payload(&None::<String>).unwrap(), None);
        assert_eq!(to_fetch_payload(&()).unwrap(), None);
        assert_eq!(to_fetch_payload("null").unwrap().as_deref(), Some("null"));
        assert_eq!(to_fetch_payload(&Some("x")).unwrap().as_deref(), Some("x"));
    }
}
