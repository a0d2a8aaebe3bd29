//! The strict check of a Clockify delivery body, in one pass over the bytes: a JSON object
//! in UTF-8, no object with the same key twice (compared after unescaping), at most
//! [`MAX_DEPTH`] levels of nesting, numbers that fit an i64, u64 or f64, and a top-level
//! `workspaceId` that, when present, is a string. Anything else could be read two ways (a
//! parser that keeps the first duplicate and one that keeps the last disagree on the
//! workspace), so it is refused rather than guessed at.
//!
//! The pass is a serde visitor that builds nothing: keys are borrowed from the body unless
//! they contain escapes, and the keys of the objects being read sit on one stack (each object
//! scans its own part of it; an object with many keys gets a hash set), so a body costs a
//! couple of allocations, not one per key.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest nesting of objects and arrays accepted (the body itself is level 1).
pub const MAX_DEPTH: usize = 64;
/// Keys of one object compared by scanning the list; a larger object gets a hash set.
const SCAN_KEYS: usize = 32;

/// Why a body was refused; `reason()` labels the rejection metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not valid UTF-8")]
    Utf8,
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("an object has the key {0:?} more than once")]
    DuplicateKey(String),
    #[error("the body nests objects and arrays deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("workspaceId must be a string")]
    WorkspaceNotString,
}

impl BodyError {
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Utf8 => "invalid_utf8",
            BodyError::Json(_) => "invalid_json",
            BodyError::NotObject => "not_object",
            BodyError::DuplicateKey(_) => "duplicate_key",
            BodyError::TooDeep => "too_deep",
            BodyError::WorkspaceNotString => "workspace_not_string",
        }
    }
}

/// Checks a delivery body and returns its top-level `workspaceId`, if it has one.
pub fn delivery_workspace(bytes: &[u8]) -> Result<Option<String>, BodyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BodyError::Utf8)?;
    let mut state = State::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let outcome = Node {
        depth: 1,
        state: &mut state,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    match (outcome, state.problem) {
        (Ok(()), _) => Ok(state.workspace),
        // The visitor says why it stopped; serde_json only carries the message.
        (Err(_), Some(problem)) => Err(problem),
        (Err(e), None) => Err(BodyError::Json(e.to_string())),
    }
}

/// What the pass collects: the workspace, the first problem, and the keys of the objects
/// being read (outer objects' first).
struct State<'de> {
    workspace: Option<String>,
    problem: Option<BodyError>,
    keys: Vec<Cow<'de, str>>,
}

impl Default for State<'_> {
    fn default() -> Self {
        State {
            workspace: None,
            problem: None,
            // Enough for the objects of a typical delivery without growing.
            keys: Vec::with_capacity(128),
        }
    }
}

impl<'de> State<'de> {
    fn fail<E: serde::de::Error>(&mut self, problem: BodyError) -> E {
        let error = E::custom(&problem);
        self.problem.get_or_insert(problem);
        error
    }
}

/// One value at `depth`.
struct Node<'a, 'de> {
    depth: usize,
    state: &'a mut State<'de>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

macro_rules! accept {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: serde::de::Error>(self, _: $ty) -> Result<(), E> {
            self.not_top()
        }
    )*};
}

impl Node<'_, '_> {
    /// A scalar is fine anywhere but at the top.
    fn not_top<E: serde::de::Error>(self) -> Result<(), E> {
        if self.depth == 1 {
            return Err(self.state.fail(BodyError::NotObject));
        }
        Ok(())
    }

    /// Entering a container at this depth: the depth of its children.
    fn enter<E: serde::de::Error>(&mut self) -> Result<usize, E> {
        if self.depth > MAX_DEPTH {
            return Err(self.state.fail(BodyError::TooDeep));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> Visitor<'de> for Node<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    accept!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.not_top()
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if self.depth == 1 {
            return Err(self.state.fail(BodyError::NotObject));
        }
        let depth = self.enter()?;
        while seq
            .next_element_seed(Node {
                depth,
                state: self.state,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let child = self.enter()?;
        // This object's keys: from `start` on the stack (its members' own come and go above).
        let start = self.state.keys.len();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            let workspace = self.depth == 1 && key == "workspaceId";
            let seen = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let own = &self.state.keys[start..];
                    let seen = own.contains(&key);
                    if !seen && own.len() >= SCAN_KEYS {
                        let mut set: HashSet<Cow<'de, str>> = own.iter().cloned().collect();
                        set.insert(key.clone());
                        many = Some(set);
                    }
                    seen
                }
            };
            if seen {
                return Err(self.state.fail(BodyError::DuplicateKey(key.into_owned())));
            }
            if many.is_none() {
                self.state.keys.push(key);
            }
            if workspace {
                self.state.workspace = map.next_value_seed(Workspace { state: self.state })?;
                continue;
            }
            map.next_value_seed(Node {
                depth: child,
                state: self.state,
            })?;
        }
        self.state.keys.truncate(start);
        Ok(())
    }
}

/// The top-level `workspaceId`: a string, or `null` (read as absent).
struct Workspace<'a, 'de> {
    state: &'a mut State<'de>,
}

impl<'de> DeserializeSeed<'de> for Workspace<'_, 'de> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Workspace<'_, 'de> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, ws: &str) -> Result<Self::Value, E> {
        Ok(Some(ws.to_string()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.state.fail(BodyError::WorkspaceNotString))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.state.fail(BodyError::WorkspaceNotString))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.state.fail(BodyError::WorkspaceNotString))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.state.fail(BodyError::WorkspaceNotString))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.state.fail(BodyError::WorkspaceNotString))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.state.fail(BodyError::WorkspaceNotString))
    }
}

/// A key, borrowed from the body unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_objects_pass_with_their_workspace() {
        let sample = include_bytes!("../../assets/samples/NEW_TIME_ENTRY.json");
        assert!(delivery_workspace(sample).unwrap().is_some());
        assert_eq!(delivery_workspace(br#"{"id":"x"}"#), Ok(None));
        assert_eq!(
            delivery_workspace(br#"{"workspaceId":null,"a":[1,-2,3.5,true,null,{"b":{}}]}"#),
            Ok(None)
        );
        assert_eq!(
            delivery_workspace(br#" {"a":{"x":1},"b":{"x":2},"workspaceId":"w\u0041"} "#),
            Ok(Some("wA".into()))
        );
        // The same key in sibling or nested objects is not a duplicate.
        assert!(
            delivery_workspace(br#"{"a":{"id":1,"b":{"id":2}},"id":3,"c":[{"id":4},{"id":5}]}"#)
                .is_ok()
        );
        // Many keys (past the scanned list) are checked too.
        let many: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!("{{{}}}", many.join(","));
        assert!(delivery_workspace(body.as_bytes()).is_ok());
        let body = format!("{{{},\"k7\":0}}", many.join(","));
        assert_eq!(
            delivery_workspace(body.as_bytes()),
            Err(BodyError::DuplicateKey("k7".into()))
        );
    }

    #[test]
    fn ambiguous_or_malformed_bodies_are_refused_with_their_reason() {
        let reason = |body: &[u8]| delivery_workspace(body).unwrap_err().reason();
        assert_eq!(
            reason(br#"{"workspaceId":"B","workspaceId":"B"}"#),
            "duplicate_key"
        );
        assert_eq!(
            reason(br#"{"workspaceId":"B","workspace\u0049d":"A"}"#),
            "duplicate_key"
        );
        assert_eq!(reason(br#"{"a":{"x":1,"x":2}}"#), "duplicate_key");
        assert_eq!(reason(br#"{"workspaceId":42}"#), "workspace_not_string");
        assert_eq!(reason(br#"{"workspaceId":["A"]}"#), "workspace_not_string");
        assert_eq!(reason(b"[1,2]"), "not_object");
        assert_eq!(reason(b"\"text\""), "not_object");
        assert_eq!(reason(b"42"), "not_object");
        assert_eq!(reason(b"{\"a\":\"\xff\"}"), "invalid_utf8");
        assert_eq!(reason(b"{\"a\":1e400}"), "invalid_json");
        assert_eq!(reason(b"{\"a\":1} {}"), "invalid_json");
        assert_eq!(reason(b"{nope"), "invalid_json");
        assert_eq!(reason(b""), "invalid_json");
        let nested = |levels: usize| {
            let mut body = String::from("{\"a\":");
            body.push_str(&"[".repeat(levels - 1));
            body.push_str(&"]".repeat(levels - 1));
            body.push('}');
            body
        };
        assert!(delivery_workspace(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(reason(nested(MAX_DEPTH + 1).as_bytes()), "too_deep");
        assert_eq!(reason(nested(10_000).as_bytes()), "too_deep");
    }
}
