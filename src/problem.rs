//! A validation problem: where it is (`actions[1].pathParams.id`, `limit`) and what is wrong.
//! Every check that can find several problems reports them all as a list of these.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Where the problem is: a field, a query parameter or a path into the body; empty when
    /// it concerns the request as a whole.
    pub path: String,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A problem written as `path: message` (the path is everything before the first `: `
    /// when it has no spaces), or a message about the whole request.
    pub fn from_text(text: &str) -> Problem {
        match text.split_once(": ") {
            Some((path, message)) if !path.is_empty() && !path.contains(' ') => {
                Problem::new(path, message)
            }
            _ => Problem::new("", text),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Problems written as `path: message` texts.
pub fn from_texts(texts: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<Problem> {
    texts
        .into_iter()
        .map(|t| Problem::from_text(t.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_split_at_a_path() {
        assert_eq!(
            Problem::from_text("actions[0].pathParams.id: required by x"),
            Problem::new("actions[0].pathParams.id", "required by x")
        );
        assert_eq!(
            Problem::from_text("getTasks does not accept add-on tokens"),
            Problem::new("", "getTasks does not accept add-on tokens")
        );
        let p = Problem::new("limit", "must be 1 to 200");
        assert_eq!(Problem::from_text(&p.to_string()), p);
    }
}
