//! Extracting the explanation from an explainer's answer.

use crate::{Error, Result};

/// The line of the answer that carries the explanation starts with this marker.
pub const EXPLANATION_MARKER: &str = "[EXPLANATION]:";

/// A line without the marker is only taken as the explanation when it is at most this long.
const MAX_FALLBACK_CHARS: usize = 400;

/// Extracts the explanation from an explainer's answer.
///
/// - The explanation is the text after the **last** `[EXPLANATION]` marker (ASCII, any case,
///   the colon optional, markdown emphasis around it allowed), up to the first blank line.
/// - Without a marker, the last non-empty line is taken, after dropping a leading
///   `Explanation:` label, if it is at most 400 characters and does not end with `:`.
/// - Code fences, wrapping quotes, backticks and `**` are stripped, and lines are joined with
///   spaces.
///
/// An answer from which nothing containing a letter or digit is left is a
/// [`Error::ParseFailure`]: the latent then has no explanation.
///
/// ```
/// use autointerp_explain::parse_explanation;
/// let answer = "Step 1: the marked tokens are units.\n[EXPLANATION]: \"Units of time.\"";
/// assert_eq!(parse_explanation(answer)?, "Units of time.");
/// assert!(parse_explanation("```\n```").is_err());
/// # Ok::<(), autointerp_explain::Error>(())
/// ```
pub fn parse_explanation(answer: &str) -> Result<String> {
    parse_explanation_with(answer, EXPLANATION_MARKER)
}

/// [`parse_explanation`] for a prompt whose answer marker is `marker` (a prompt template's
/// `answer_marker`): the marker is matched without its trailing colon, in any ASCII case.
///
/// ```
/// use autointerp_explain::parse_explanation_with;
/// assert_eq!(parse_explanation_with("Hmm.\nAnswer: Rivers.", "Answer:")?, "Rivers.");
/// # Ok::<(), autointerp_explain::Error>(())
/// ```
pub fn parse_explanation_with(answer: &str, marker: &str) -> Result<String> {
    let fail = |reason: &str| Error::ParseFailure {
        reason: reason.to_string(),
        answer: answer.to_string(),
    };
    if answer.trim().is_empty() {
        return Err(fail("empty answer"));
    }
    let tag = marker_tag(marker);
    if tag.is_empty() {
        return Err(fail("the prompt's answer marker is empty"));
    }
    let found = answer
        .as_bytes()
        .windows(tag.len())
        .rposition(|w| w.eq_ignore_ascii_case(tag.as_bytes()));
    let text = match found {
        Some(at) => {
            let rest = &answer[at + tag.len()..];
            // `[EXPLANATION]:`, `**[EXPLANATION]:**`, `**[EXPLANATION]**:`: emphasis that closes
            // the marker touches it; emphasis after a space belongs to the explanation.
            let rest = rest
                .trim_start_matches([':', '*', '_'])
                .trim_start_matches(|c: char| c == ':' || c.is_whitespace());
            first_paragraph(&strip_fences(rest))
        }
        None => {
            let body = strip_fences(answer);
            let Some(line) = body.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
                return Err(fail("only code fences"));
            };
            let line = strip_label(line);
            if line.chars().count() > MAX_FALLBACK_CHARS || line.trim_end().ends_with(':') {
                return Err(fail(&format!(
                    "no {marker} marker, and the last line is not an explanation"
                )));
            }
            line.to_string()
        }
    };
    let text = clean(&text);
    if !text.chars().any(char::is_alphanumeric) {
        return Err(fail(&if found.is_some() {
            format!("nothing after the {marker} marker")
        } else {
            format!("no {marker} marker and no text")
        }));
    }
    Ok(text)
}

/// What is searched for in an answer: the marker without surrounding space and trailing colons,
/// so that `[EXPLANATION]:` also finds `[EXPLANATION]` and `**[EXPLANATION]**:`.
pub(crate) fn marker_tag(marker: &str) -> &str {
    marker.trim().trim_end_matches(':').trim_end()
}

/// The first 200 characters of an answer, for error messages.
pub(crate) fn preview(answer: &str) -> String {
    let mut s: String = answer.chars().take(200).collect();
    if s.len() < answer.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Removes lines that are code fences (```` ``` ```` or ```` ```text ````).
fn strip_fences(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Text up to the first blank line, its lines joined with spaces.
fn first_paragraph(text: &str) -> String {
    text.trim_start()
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Drops a leading `Explanation:` / `Final explanation:` label.
fn strip_label(line: &str) -> &str {
    let lower = line.to_ascii_lowercase();
    for label in ["final explanation:", "explanation:", "answer:"] {
        let trimmed = lower.trim_start_matches(['*', '#', ' ']);
        if trimmed.starts_with(label) {
            let start = line.len() - trimmed.len() + label.len();
            return line[start..].trim_start_matches(['*', ' ']);
        }
    }
    line
}

/// Strips whitespace and wrapping quotes, backticks and emphasis until nothing changes.
fn clean(text: &str) -> String {
    const PAIRS: [(&str, &str); 7] = [
        ("\"", "\""),
        ("'", "'"),
        ("`", "`"),
        ("“", "”"),
        ("‘", "’"),
        ("**", "**"),
        ("*", "*"),
    ];
    let mut s = text.trim();
    loop {
        let before = s;
        for (l, r) in PAIRS {
            if s.len() >= l.len() + r.len() && s.starts_with(l) && s.ends_with(r) {
                s = s[l.len()..s.len() - r.len()].trim();
            }
        }
        s = s.trim_start_matches("```").trim_end_matches("```").trim();
        if s == before {
            return s.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn takes_the_text_after_the_last_marker() {
        let a = "[EXPLANATION]: draft\nThinking more...\n[EXPLANATION]: Final one.";
        assert_eq!(parse_explanation(a).unwrap(), "Final one.");
        assert_eq!(
            parse_explanation("**[Explanation]:** `Dates in footnotes`").unwrap(),
            "Dates in footnotes"
        );
        assert_eq!(
            parse_explanation("[EXPLANATION]\n\n\"Names of rivers\"\n\nHope this helps!").unwrap(),
            "Names of rivers"
        );
        assert_eq!(
            parse_explanation("```\n[EXPLANATION]: Closing brackets in code\n```").unwrap(),
            "Closing brackets in code"
        );
        assert_eq!(
            parse_explanation("[EXPLANATION]: Words that\nend a clause.").unwrap(),
            "Words that end a clause."
        );
    }

    #[test]
    fn other_markers_are_found_in_any_case() {
        assert_eq!(
            parse_explanation_with("x\n**answer:** Rivers.", "ANSWER:").unwrap(),
            "Rivers."
        );
        // The default marker is then just text: the last line is taken.
        assert_eq!(
            parse_explanation_with("[EXPLANATION]: Rivers.\nFinal: Lakes.", "Final:").unwrap(),
            "Lakes."
        );
        assert!(parse_explanation_with("Rivers.", ":").is_err());
    }

    #[test]
    fn falls_back_to_the_last_line() {
        assert_eq!(
            parse_explanation("Hmm.\n\nExplanation: Plural nouns.\n").unwrap(),
            "Plural nouns."
        );
        assert_eq!(
            parse_explanation("\"Numbers in tables\"").unwrap(),
            "Numbers in tables"
        );
    }

    #[test]
    fn garbage_is_a_failure() {
        for bad in [
            "",
            "   \n",
            "```\n```",
            "[EXPLANATION]:",
            "[EXPLANATION]: \"\"",
            "...",
            "Here is my answer:",
        ] {
            let err = parse_explanation(bad).unwrap_err();
            assert!(matches!(err, Error::ParseFailure { .. }), "{bad:?}: {err}");
        }
        let long = "word ".repeat(200);
        assert!(parse_explanation(&long).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(answer in "\\PC{0,80}") {
            let _ = parse_explanation(&answer);
        }

        #[test]
        fn recovers_a_marked_explanation(
            prose in "[a-z .\n]{0,40}",
            expl in "[A-Za-z][A-Za-z ,]{0,30}[a-z.]",
            quote in prop::sample::select(vec!["", "\"", "`", "**"]),
        ) {
            let answer = format!("{prose}\n[EXPLANATION]: {quote}{expl}{quote}\n");
            prop_assert_eq!(parse_explanation(&answer).unwrap(), expl.trim());
        }

        #[test]
        fn a_result_always_has_content(answer in "[\\[\\]A-Za-z:*`\"' \n]{0,60}") {
            if let Ok(e) = parse_explanation(&answer) {
                prop_assert!(e.chars().any(char::is_alphanumeric));
                prop_assert_eq!(e.trim(), e.as_str());
            }
        }
    }
}
