//! An idempotent send's identity (contract-apps.graphql, "Idempotency"):
//! who sends, the key they chose, and a SHA-256 of the send's input in a
//! canonical form, so a repeat can be told from a different send under the
//! same key. Pure: no I/O.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{
    Content, Recipient, Title,
    send::{Category, Data, IdempotencyKey},
};

/// Whose keys: one application key's, or one user's (a user token). Keys
/// of different senders never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// An API key, by its id.
    App(i64),
    User(i64),
}

impl Sender {
    /// As stored in `idempotency_records.sender`.
    pub fn column(self) -> String {
        match self {
            Self::App(id) => format!("app:{id}"),
            Self::User(id) => format!("user:{id}"),
        }
    }
}

/// A send's input as the client gave it: parsed (a title trimmed, an email
/// normalised), not yet resolved (`to` as named, not the user it finds),
/// and before any check against the clock, so a retry of a send whose
/// `sendAt` has since passed still matches.
#[derive(Debug, Clone, Copy)]
pub struct SendInput<'a> {
    pub to: Option<&'a Recipient>,
    pub title: &'a Title,
    pub content: &'a Content,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub category: Option<&'a Category>,
    pub data: Option<&'a Data>,
}

impl SendInput<'_> {
    /// Lowercase hex SHA-256 of the canonical form: a JSON object with
    /// fixed field names, object keys sorted at every depth (written here,
    /// whatever order `serde_json`'s map keeps), times in UTC RFC 3339.
    pub fn hash(&self) -> String {
        let time = |at: Option<DateTime<Utc>>| {
            at.map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        };
        let to = match self.to {
            None => Value::Null,
            Some(Recipient::Id(id)) => json!({ "userId": id.to_string() }),
            Some(Recipient::Email(email)) => json!({ "email": email.as_str() }),
            Some(Recipient::External { id, email }) => json!({
                "externalId": id.as_str(),
                "email": email.as_ref().map(|e| e.as_str()),
            }),
        };
        let canonical = json!({
            "v": 1,
            "to": to,
            "title": self.title.as_str(),
            "content": self.content.as_str(),
            "sendAt": time(self.send_at),
            "expiresAt": time(self.expires_at),
            "category": self.category.map(Category::as_str),
            "data": self.data.map(Data::value),
        });
        let mut text = String::new();
        write_canonical(&canonical, &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// What a send with an idempotency key carries down to its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// [`Sender::column`].
    pub sender: String,
    pub key: IdempotencyKey,
    /// [`SendInput::hash`].
    pub request_hash: String,
}

impl Idempotency {
    pub fn new(sender: Sender, key: IdempotencyKey, input: &SendInput<'_>) -> Self {
        Self {
            sender: sender.column(),
            key,
            request_hash: input.hash(),
        }
    }
}

/// Compact JSON with every object's keys in sorted order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A string's Display is its JSON text, escaped.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, ExternalId};

    struct Owned {
        to: Option<Recipient>,
        title: Title,
        content: Content,
        send_at: Option<DateTime<Utc>>,
        category: Option<Category>,
        data: Option<Data>,
    }

    impl Owned {
        fn new() -> Self {
            Self {
                to: Some(Recipient::Id(7)),
                title: Title::parse("Invoice").expect("title"),
                content: Content::parse("Due soon".to_owned()).expect("content"),
                send_at: None,
                category: None,
                data: None,
            }
        }

        fn hash(&self) -> String {
            SendInput {
                to: self.to.as_ref(),
                title: &self.title,
                content: &self.content,
                send_at: self.send_at,
                expires_at: None,
                category: self.category.as_ref(),
                data: self.data.as_ref(),
            }
            .hash()
        }
    }

    fn data(text: &str) -> Data {
        Data::parse(serde_json::from_str(text).expect("json")).expect("data")
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        let hash = Owned::new().hash();
        assert_eq!(hash.len(), 64);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(hash, Owned::new().hash(), "stable");
    }

    #[test]
    fn data_hashes_the_same_whatever_its_key_order() {
        let (mut a, mut b) = (Owned::new(), Owned::new());
        a.data = Some(data(
            r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": null}}"#,
        ));
        b.data = Some(data(
            r#"{"a": {"x": null, "y": [1, {"p": 3, "q": 2}]}, "b": 1}"#,
        ));
        assert_eq!(a.hash(), b.hash());
        b.data = Some(data(
            r#"{"a": {"x": null, "y": [{"p": 3, "q": 2}, 1]}, "b": 1}"#,
        ));
        assert_ne!(a.hash(), b.hash(), "array order counts");
    }

    #[test]
    fn times_hash_as_the_same_instant() {
        let (mut a, mut b) = (Owned::new(), Owned::new());
        a.send_at = DateTime::parse_from_rfc3339("2030-01-01T12:00:00+02:00")
            .ok()
            .map(|t| t.to_utc());
        b.send_at = DateTime::parse_from_rfc3339("2030-01-01T10:00:00.000Z")
            .ok()
            .map(|t| t.to_utc());
        assert!(a.send_at.is_some());
        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn every_field_counts() {
        let base = Owned::new().hash();
        let changes: [fn(&mut Owned); 7] = [
            |o| o.to = None,
            |o| o.to = Some(Recipient::Id(8)),
            |o| {
                o.to = Some(Recipient::External {
                    id: ExternalId::parse("to.externalId", "7").expect("id"),
                    email: None,
                });
            },
            |o| o.title = Title::parse("Invoice!").expect("title"),
            |o| o.content = Content::parse("Due now".to_owned()).expect("content"),
            |o| o.category = Some(Category::parse("billing").expect("category")),
            |o| o.data = Some(data("{}")),
        ];
        for change in changes {
            let mut other = Owned::new();
            change(&mut other);
            assert_ne!(other.hash(), base);
        }
        let mut email = Owned::new();
        email.to = Some(Recipient::Email(
            Email::parse("a@example.com").expect("email"),
        ));
        assert_ne!(email.hash(), base);
    }

    #[test]
    fn senders_are_kept_apart() {
        assert_eq!(Sender::App(3).column(), "app:3");
        assert_eq!(Sender::User(3).column(), "user:3");
    }
}
