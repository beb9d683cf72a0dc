//! What a template declares about the text it renders, for the code that builds its variables and
//! reads the answers.

use minijinja::Value;

use super::{PromptError, PromptKind};
use crate::highlight::Markers;
use crate::parse::marker_tag;
use crate::EXPLANATION_MARKER;

/// The template variable holding [`PromptSettings::numbering_base`].
pub const NUMBERING_BASE: &str = "numbering_base";
/// The template variable holding [`Markers::open`] of [`PromptSettings::highlight`].
pub const HIGHLIGHT_OPEN: &str = "highlight_open";
/// The template variable holding [`Markers::close`] of [`PromptSettings::highlight`].
pub const HIGHLIGHT_CLOSE: &str = "highlight_close";
/// The template variable holding [`PromptSettings::answer_marker`].
pub const ANSWER_MARKER: &str = "answer_marker";
/// The template variable holding [`PromptSettings::document_start`].
pub const DOCUMENT_START: &str = "document_start";
/// The template variable holding [`PromptSettings::document_end`].
pub const DOCUMENT_END: &str = "document_end";

/// The default answer marker of the intruder prompt (the score crate's `INTRUDER_MARKER`).
pub(crate) const INTRUDER_MARKER: &str = "[INTRUDER]:";

/// Settings a template declares with top-level `{% set name = value %}` lines, read once when the
/// template is loaded; a setting it does not declare keeps its default. The template sees each
/// as a variable of that name either way, and the code that shows examples and reads answers
/// follows them, so that a template's numbering and markers are also what its answers are read
/// by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSettings {
    /// `numbering_base`: the number of the first excerpt (default 1). Detection and fuzzing
    /// answers of the form `Excerpt k: 1` and intruder answers are read with it.
    pub numbering_base: usize,
    /// `highlight_open`, `highlight_close`: the markers around highlighted tokens (default `<<`
    /// and `>>`), used in the examples given to the template.
    pub highlight: Markers,
    /// `answer_marker`: the text the answer follows (`[EXPLANATION]:` for the explainers,
    /// `[INTRUDER]:` for intruder; empty, and unused, elsewhere).
    pub answer_marker: String,
    /// `document_start`: in the simulation prompt, the line after which the document's tokens
    /// are listed (default `<start>`). Tokens that contain it are shown with it broken
    /// ([`defuse`](crate::highlight::defuse)), so the last one in a prompt is the document's.
    pub document_start: String,
    /// `document_end`: the line after the simulation document (default `<end>`), broken in
    /// tokens as `document_start` is.
    pub document_end: String,
}

impl PromptSettings {
    /// The settings of a `kind` template that declares none.
    pub fn defaults(kind: PromptKind) -> Self {
        let answer_marker = match kind {
            PromptKind::Explainer | PromptKind::Contrastive => EXPLANATION_MARKER,
            PromptKind::Intruder => INTRUDER_MARKER,
            _ => "",
        };
        Self {
            numbering_base: 1,
            highlight: Markers::default(),
            answer_marker: answer_marker.to_string(),
            document_start: "<start>".to_string(),
            document_end: "<end>".to_string(),
        }
    }

    /// The settings as template variables.
    pub(crate) fn variables(&self) -> Vec<(&'static str, Value)> {
        vec![
            (NUMBERING_BASE, Value::from(self.numbering_base)),
            (HIGHLIGHT_OPEN, Value::from(self.highlight.open.as_str())),
            (HIGHLIGHT_CLOSE, Value::from(self.highlight.close.as_str())),
            (ANSWER_MARKER, Value::from(self.answer_marker.as_str())),
            (DOCUMENT_START, Value::from(self.document_start.as_str())),
            (DOCUMENT_END, Value::from(self.document_end.as_str())),
        ]
    }

    /// The settings of a rendered `kind` template, looked up with `lookup` (the template's
    /// top-level variables); `error` makes the error for a setting declared in a form that
    /// cannot be used.
    pub(crate) fn read(
        kind: PromptKind,
        lookup: impl Fn(&str) -> Option<Value>,
        error: impl Fn(&str, String) -> PromptError,
    ) -> Result<Self, PromptError> {
        let mut s = Self::defaults(kind);
        let text = |name: &str, default: &str| -> Result<String, PromptError> {
            match lookup(name) {
                None => Ok(default.to_string()),
                Some(v) => match v.as_str() {
                    Some(t) if !t.is_empty() && !t.contains(['\n', '\r']) => Ok(t.to_string()),
                    _ => Err(error(
                        name,
                        format!("{name} must be a non-empty string on one line, not {v:?}"),
                    )),
                },
            }
        };
        if let Some(v) = lookup(NUMBERING_BASE) {
            s.numbering_base = v
                .as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| {
                    error(
                        NUMBERING_BASE,
                        format!("{NUMBERING_BASE} must be an integer from 0, not {v:?}"),
                    )
                })?;
        }
        s.highlight = Markers::new(
            text(HIGHLIGHT_OPEN, &s.highlight.open)?,
            text(HIGHLIGHT_CLOSE, &s.highlight.close)?,
        );
        if s.highlight.open == s.highlight.close {
            return Err(error(
                HIGHLIGHT_CLOSE,
                "highlight_open and highlight_close must differ".to_string(),
            ));
        }
        let reads_answer_marker = !s.answer_marker.is_empty();
        if let Some(v) = lookup(ANSWER_MARKER) {
            match v.as_str() {
                Some(t) if !t.contains(['\n', '\r']) => s.answer_marker = t.to_string(),
                _ => {
                    return Err(error(
                        ANSWER_MARKER,
                        format!("{ANSWER_MARKER} must be a string on one line, not {v:?}"),
                    ))
                }
            }
        }
        if reads_answer_marker && marker_tag(&s.answer_marker).is_empty() {
            return Err(error(
                ANSWER_MARKER,
                format!(
                    "{ANSWER_MARKER} {:?} has nothing to look for in an answer",
                    s.answer_marker
                ),
            ));
        }
        for (name, value) in [
            (DOCUMENT_START, &mut s.document_start),
            (DOCUMENT_END, &mut s.document_end),
        ] {
            *value = text(name, value)?;
            if value.contains('\t') || value.chars().count() < 2 {
                return Err(error(
                    name,
                    format!("{name} must be at least 2 characters and hold no tab"),
                ));
            }
        }
        Ok(s)
    }
}
