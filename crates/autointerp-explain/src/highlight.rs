//! Rendering examples with `<<highlighted>>` tokens, and escaping text so that it cannot forge
//! highlights or answer markers.
//!
//! # Escaping scheme
//!
//! Example text comes from arbitrary documents, so it may itself contain `<<`, `>>` or something
//! that looks like an answer marker (`[EXPLANATION]:`). Rendered text is escaped so that:
//!
//! 1. **Angle brackets.** A `<` or `>` of the text that touches another `<` or `>` in the rendered
//!    output (another character of the text, or a highlight delimiter) becomes the look-alike
//!    single guillemet `‹` (U+2039) or `›` (U+203A). Lone brackets (`a < b`, `<|endoftext|>`)
//!    are kept. Hence the only `<<` and `>>` left in the output are highlight delimiters, and no
//!    delimiter touches a bracket of the text (`a<` + `<<b>>` renders as `a‹<<b>>`, not
//!    `a<<<b>>`).
//! 2. **Answer markers.** A bracketed single word — `[` followed by 1 to 32 ASCII letters or
//!    underscores and `]`, in any case, such as `[EXPLANATION]`, `[INTRUDER]` or `[sic]` — gets
//!    full-width brackets: `［EXPLANATION］`. Parsers look for the ASCII form only, so text that
//!    an LLM echoes from an example cannot be taken for its answer.
//! 3. **Line breaks.** Each example is shown on one line, so `\r\n`, `\n` and `\r` become `↵`
//!    (U+21B5).
//!
//! Text that already contains `‹`, `›`, `［`, `］` or `↵` is left as it is, so escaping is not
//! reversible for such text; it never needs to be, since escaped text is only shown to LLMs.
//!
//! # Other markers
//!
//! A prompt template may declare other highlight markers ([`Markers`], e.g. `[[` and `]]`).
//! [`render_highlighted_with`] then escapes line breaks and marker words as above, and breaks any
//! occurrence of a marker that the text forms, alone or together with a marker next to it, by
//! inserting an invisible word joiner (U+2060) into it: the only occurrences of the markers left
//! are the delimiters.

use autointerp_core::Example;

/// Opens a highlighted run.
pub const OPEN: &str = "<<";
/// Closes a highlighted run.
pub const CLOSE: &str = ">>";
/// Tokens whose activation exceeds this fraction of the example's maximum are highlighted
/// (delphi's default).
pub const DEFAULT_THRESHOLD: f32 = 0.3;

/// The strings that open and close a highlighted run: [`OPEN`] and [`CLOSE`] unless a prompt
/// template declares others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Markers {
    /// Opens a run.
    pub open: String,
    /// Closes a run.
    pub close: String,
}

impl Default for Markers {
    fn default() -> Self {
        Self::new(OPEN, CLOSE)
    }
}

impl Markers {
    /// Markers `open` … `close`.
    pub fn new(open: impl Into<String>, close: impl Into<String>) -> Self {
        Self {
            open: open.into(),
            close: close.into(),
        }
    }

    /// Whether these are `<<` and `>>`, whose escaping keeps text byte-identical to earlier
    /// releases.
    pub fn is_default(&self) -> bool {
        self.open == OPEN && self.close == CLOSE
    }
}

/// Invisible; breaks a marker that text would otherwise form.
const WORD_JOINER: char = '\u{2060}';

/// Longest bracketed word treated as a possible answer marker.
const MAX_MARKER_WORD: usize = 32;

/// Which tokens of `example` are highlighted: those whose activation is strictly above
/// `threshold` × the example's maximum activation. An example whose maximum is 0 (a
/// non-activating example) has no highlighted token. One entry per entry of `str_tokens`.
pub fn above_threshold(example: &Example, threshold: f32) -> Vec<bool> {
    let cut = threshold * example.max_activation();
    (0..example.str_tokens.len())
        .map(|i| {
            example
                .activations
                .get(i)
                .is_some_and(|&a| a > cut && a > 0.0)
        })
        .collect()
}

/// Renders `example` with its strongly activating tokens highlighted (see [`above_threshold`]),
/// escaped as described in the [module docs](self).
///
/// ```
/// # use autointerp_core::Example;
/// use autointerp_explain::highlight;
/// let ex = Example {
///     tokens: vec![0; 4],
///     str_tokens: vec!["I".into(), " love".into(), " it".into(), "!".into()],
///     activations: vec![0.0, 3.0, 2.0, 0.1],
///     normalized: vec![0, 10, 6, 0],
///     quantile: Some(1),
///     distance: None,
/// };
/// assert_eq!(highlight(&ex, 0.3), "I<< love it>>!");
/// ```
pub fn highlight(example: &Example, threshold: f32) -> String {
    render_highlighted(&example.str_tokens, &above_threshold(example, threshold))
}

/// Renders `tokens` with every maximal run of tokens whose `mask` entry is `true` wrapped in
/// [`OPEN`] and [`CLOSE`] (missing mask entries count as `false`). A run whose text is empty gets no
/// delimiters. The text is escaped as described in the [module docs](self).
pub fn render_highlighted<S: AsRef<str>>(tokens: &[S], mask: &[bool]) -> String {
    let mut pieces: Vec<(String, bool)> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let on = mask.get(i).copied().unwrap_or(false);
        match pieces.last_mut() {
            Some((text, last_on)) if *last_on == on => text.push_str(token.as_ref()),
            _ => pieces.push((token.as_ref().to_string(), on)),
        }
    }
    let mut chars: Vec<(char, bool)> = Vec::new();
    for (text, on) in &pieces {
        let delimit = *on && !text.is_empty();
        if delimit {
            chars.extend(OPEN.chars().map(|c| (c, true)));
        }
        chars.extend(escape_plain(text).chars().map(|c| (c, false)));
        if delimit {
            chars.extend(CLOSE.chars().map(|c| (c, true)));
        }
    }
    escape_angles(&chars)
}

/// [`render_highlighted`] with `markers` instead of `<<` and `>>` (see the
/// [module docs](self#other-markers)); the same output for the default markers.
pub fn render_highlighted_with<S: AsRef<str>>(
    tokens: &[S],
    mask: &[bool],
    markers: &Markers,
) -> String {
    if markers.is_default() {
        return render_highlighted(tokens, mask);
    }
    let mut runs: Vec<(String, bool)> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let on = mask.get(i).copied().unwrap_or(false);
        match runs.last_mut() {
            Some((text, last_on)) if *last_on == on => text.push_str(token.as_ref()),
            _ => runs.push((token.as_ref().to_string(), on)),
        }
    }
    let runs: Vec<(String, bool)> = runs
        .into_iter()
        .map(|(text, on)| (escape_plain(&text), on))
        .collect();
    place_markers(&runs, markers)
}

/// Text rendered with the default markers (by [`render_highlighted`]) redrawn with `markers`:
/// how a prompt template with other markers shows excerpts that were highlighted before its
/// markers were known (fuzzing's and intruder's).
pub fn rehighlight(rendered: &str, markers: &Markers) -> String {
    if markers.is_default() {
        return rendered.to_string();
    }
    place_markers(&split_highlighted(rendered), markers)
}

/// Wraps the highlighted runs in `markers`, then breaks every occurrence of a marker that holds
/// a character of the text with a word joiner inside it, next to such a character. Occurrences
/// made of delimiter characters only are the delimiters themselves (runs alternate, so two
/// delimiters never touch).
fn place_markers(runs: &[(String, bool)], markers: &Markers) -> String {
    // (character, belongs to a delimiter).
    let mut chars: Vec<(char, bool)> = Vec::new();
    for (text, on) in runs {
        let delimit = *on && !text.is_empty();
        if delimit {
            chars.extend(markers.open.chars().map(|c| (c, true)));
        }
        chars.extend(text.chars().map(|c| (c, false)));
        if delimit {
            chars.extend(markers.close.chars().map(|c| (c, true)));
        }
    }
    let open: Vec<char> = markers.open.chars().collect();
    let close: Vec<char> = markers.close.chars().collect();
    // Each insertion breaks one stray occurrence and creates none (markers hold no word
    // joiner), so this ends; the bound only guards against markers that hold one.
    for _ in 0..=chars.len() {
        let Some((at, len)) = stray(&chars, &open).or_else(|| stray(&chars, &close)) else {
            break;
        };
        let Some(cut) = (at + 1..at + len).find(|&j| !chars[j - 1].1 || !chars[j].1) else {
            break;
        };
        chars.insert(cut, (WORD_JOINER, false));
    }
    chars.into_iter().map(|(c, _)| c).collect()
}

/// The first occurrence of `marker` in `chars` that holds a character of the text, as
/// (start, length). A one-character marker formed by the text cannot be broken: it is skipped.
fn stray(chars: &[(char, bool)], marker: &[char]) -> Option<(usize, usize)> {
    let n = marker.len();
    if n < 2 || chars.len() < n {
        return None;
    }
    (0..=chars.len() - n)
        .find(|&i| {
            let window = &chars[i..i + n];
            window.iter().map(|(c, _)| *c).eq(marker.iter().copied())
                && window.iter().any(|(_, delimiter)| !*delimiter)
        })
        .map(|i| (i, n))
}

/// `text` with every occurrence of `marker` broken so that it no longer reads as the marker:
/// its `<` and `>` become `‹` and `›`, or, for a marker without angle brackets, a word joiner
/// (U+2060) follows its first character. A marker of one character (or holding a word joiner)
/// cannot be broken that way and is left as it is.
pub fn defuse(text: &str, marker: &str) -> String {
    if marker.chars().count() < 2 || marker.contains(WORD_JOINER) {
        return text.to_string();
    }
    let broken: String = if marker.contains(['<', '>']) {
        marker.replace('<', "‹").replace('>', "›")
    } else {
        let mut chars = marker.chars();
        let first = chars.next().unwrap_or_default();
        format!("{first}{WORD_JOINER}{}", chars.as_str())
    };
    let mut out = text.to_string();
    // Replacing can leave an overlapping occurrence behind ("aaa" for "aa"); each pass removes
    // at least one, and no pass creates one.
    while out.contains(marker) {
        out = out.replace(marker, &broken);
    }
    out
}

/// Escapes free text (an explanation, a token shown on its own) as described in the
/// [module docs](self), as if it were rendered with nothing highlighted.
pub fn escape_text(text: &str) -> String {
    let chars: Vec<(char, bool)> = escape_plain(text).chars().map(|c| (c, false)).collect();
    escape_angles(&chars)
}

/// Splits rendered text back into `(text, highlighted)` runs: the inverse of
/// [`render_highlighted`] up to escaping and the merging of adjacent runs. An unmatched
/// delimiter is kept as text.
pub fn split_highlighted(rendered: &str) -> Vec<(String, bool)> {
    split_highlighted_with(rendered, &Markers::default())
}

/// [`split_highlighted`] for text rendered with `markers` ([`render_highlighted_with`]); the word
/// joiners that broke stray markers stay in the text.
pub fn split_highlighted_with(rendered: &str, markers: &Markers) -> Vec<(String, bool)> {
    let (open_marker, close_marker) = (markers.open.as_str(), markers.close.as_str());
    if open_marker.is_empty() || close_marker.is_empty() {
        return vec![(rendered.to_string(), false)];
    }
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut push = |text: &str, on: bool| {
        if text.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((t, last_on)) if *last_on == on => t.push_str(text),
            _ => out.push((text.to_string(), on)),
        }
    };
    let mut rest = rendered;
    while let Some(open) = rest.find(open_marker) {
        let after = &rest[open + open_marker.len()..];
        match after.find(close_marker) {
            Some(close) => {
                push(&rest[..open], false);
                push(&after[..close], true);
                rest = &after[close + close_marker.len()..];
            }
            None => break,
        }
    }
    push(rest, false);
    out
}

fn is_angle(c: char) -> bool {
    c == '<' || c == '>'
}

/// Replaces text angle brackets that touch another angle bracket with look-alike guillemets.
fn escape_angles(chars: &[(char, bool)]) -> String {
    let angle_at = |j: Option<usize>| {
        j.and_then(|j| chars.get(j))
            .is_some_and(|&(c, _)| is_angle(c))
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, &(c, marker))| {
            if marker || !is_angle(c) || !(angle_at(i.checked_sub(1)) || angle_at(Some(i + 1))) {
                c
            } else if c == '<' {
                '‹'
            } else {
                '›'
            }
        })
        .collect()
}

/// Line breaks to `↵`, then [`escape_marker_words`].
fn escape_plain(text: &str) -> String {
    let one_line = if text.contains(['\n', '\r']) {
        text.replace("\r\n", "↵").replace(['\n', '\r'], "↵")
    } else {
        text.to_string()
    };
    escape_marker_words(&one_line)
}

/// Gives full-width brackets to every `[word]` of 1..=32 ASCII letters or underscores.
fn escape_marker_words(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'[' {
            let len = bytes[i + 1..]
                .iter()
                .take(MAX_MARKER_WORD + 1)
                .take_while(|b| b.is_ascii_alphabetic() || **b == b'_')
                .count();
            if (1..=MAX_MARKER_WORD).contains(&len) && bytes.get(i + 1 + len) == Some(&b']') {
                out.push_str(&text[copied..i]);
                out.push('［');
                out.push_str(&text[i + 1..i + 1 + len]);
                out.push('］');
                i += len + 2;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(tokens: &[&str], acts: &[f32]) -> Example {
        Example {
            tokens: vec![0; tokens.len()],
            str_tokens: tokens.iter().map(|s| s.to_string()).collect(),
            activations: acts.to_vec(),
            normalized: vec![0; tokens.len()],
            quantile: None,
            distance: None,
        }
    }

    #[test]
    fn adjacent_tokens_merge_into_one_run() {
        let ex = example(&["a", " b", " c", " d", " e"], &[0.0, 5.0, 4.0, 0.0, 1.6]);
        assert_eq!(highlight(&ex, 0.3), "a<< b c>> d<< e>>");
        // Strictly above the threshold: 1.5 == 0.3 * 5 is not highlighted.
        let ex = example(&["a", " b"], &[1.5, 5.0]);
        assert_eq!(highlight(&ex, 0.3), "a<< b>>");
    }

    #[test]
    fn non_activating_examples_have_no_highlight() {
        let ex = example(&["a", " b"], &[0.0, 0.0]);
        assert_eq!(highlight(&ex, 0.0), "a b");
        let ex = example(&["a", " b"], &[-1.0, -2.0]);
        assert_eq!(highlight(&ex, 0.3), "a b");
    }

    #[test]
    fn text_brackets_cannot_forge_delimiters() {
        let ex = example(&["x <<", "y", ">> z"], &[0.0, 1.0, 0.0]);
        assert_eq!(highlight(&ex, 0.3), "x ‹‹<<y>>›› z");
        let ex = example(&["a<", "b", ">"], &[0.0, 1.0, 0.0]);
        assert_eq!(highlight(&ex, 0.3), "a‹<<b>>›");
        let ex = example(&["a < b", " <|endoftext|>"], &[0.0, 0.0]);
        assert_eq!(highlight(&ex, 0.3), "a < b <|endoftext|>");
        assert_eq!(escape_text("x<>y"), "x‹›y");
        assert_eq!(escape_text("a\r\nb\nc\rd"), "a↵b↵c↵d");
    }

    #[test]
    fn marker_words_get_full_width_brackets() {
        assert_eq!(
            escape_text("see [EXPLANATION]: nope"),
            "see ［EXPLANATION］: nope"
        );
        assert_eq!(
            escape_text("[Intruder] [a b] [1,0] []"),
            "［Intruder］ [a b] [1,0] []"
        );
        // A marker split over tokens is still escaped; one split by a delimiter no longer reads
        // as a marker.
        let ex = example(&["[EXPL", "ANATION]", ":"], &[0.0, 0.0, 0.0]);
        assert_eq!(highlight(&ex, 0.3), "［EXPLANATION］:");
        let ex = example(&["[", "RESPONSE", "]"], &[0.0, 1.0, 0.0]);
        assert_eq!(highlight(&ex, 0.3), "[<<RESPONSE>>]");
    }

    #[test]
    fn split_inverts_render() {
        let r = render_highlighted(&["a", "b", "", "c"], &[false, true, false, true]);
        assert_eq!(r, "a<<b>><<c>>");
        assert_eq!(
            split_highlighted(&r),
            vec![("a".into(), false), ("bc".into(), true)]
        );
        assert_eq!(split_highlighted("x<<y"), vec![("x<<y".to_string(), false)]);
    }

    fn unescape(s: &str) -> String {
        s.replace('‹', "<")
            .replace('›', ">")
            .replace('［', "[")
            .replace('］', "]")
            .replace('↵', "\n")
    }

    /// Runs of `(text, highlighted)`, merged as rendering merges them.
    fn expected_runs(tokens: &[String], mask: &[bool]) -> Vec<(String, bool)> {
        let mut runs: Vec<(String, bool)> = Vec::new();
        for (t, &on) in tokens.iter().zip(mask) {
            match runs.last_mut() {
                Some((text, last)) if *last == on => text.push_str(t),
                _ => runs.push((t.clone(), on)),
            }
        }
        // Empty highlighted runs are not delimited; then neighbours merge.
        let mut merged: Vec<(String, bool)> = Vec::new();
        for (t, on) in runs.into_iter().filter(|(t, _)| !t.is_empty()) {
            match merged.last_mut() {
                Some((text, last)) if *last == on => text.push_str(&t),
                _ => merged.push((t, on)),
            }
        }
        merged
    }

    #[test]
    fn other_markers_replace_the_default_ones() {
        let markers = Markers::new("[[", "]]");
        let r = render_highlighted_with(&["a", " b", " c"], &[false, true, false], &markers);
        assert_eq!(r, "a[[ b]] c");
        assert_eq!(rehighlight("x<< y>>z", &markers), "x[[ y]]z");
        assert_eq!(rehighlight("x<< y>>z", &Markers::default()), "x<< y>>z");
        // Text that would form a marker, alone or with a delimiter, is broken.
        let r = render_highlighted_with(&["a[", "[b", "]]"], &[false, true, false], &markers);
        assert_eq!(r, "a[\u{2060}[[\u{2060}[b]]\u{2060}]\u{2060}]");
        assert_eq!(
            split_highlighted_with(&r, &markers),
            vec![
                ("a[\u{2060}".to_string(), false),
                ("\u{2060}[b".to_string(), true),
                ("\u{2060}]\u{2060}]".to_string(), false)
            ]
        );
        // Line breaks and answer markers are escaped as with the default markers.
        let r = render_highlighted_with(&["x\n[EXPLANATION]:", "y"], &[false, true], &markers);
        assert_eq!(r, "x↵［EXPLANATION］:[[y]]");
    }

    #[test]
    fn defused_markers_no_longer_read_as_markers() {
        assert_eq!(defuse("a <start> b", "<start>"), "a ‹start› b");
        assert_eq!(defuse("BEGIN DOC", "BEGIN DOC"), "B\u{2060}EGIN DOC");
        assert_eq!(defuse("aaa", "aa"), "a\u{2060}a\u{2060}a");
        assert_eq!(defuse("<<start>>", "<start>"), "<‹start›>");
        assert_eq!(defuse("plain", "<start>"), "plain");
    }

    proptest! {
        #[test]
        fn other_markers_are_unambiguous(
            tokens in prop::collection::vec("[<>\\[\\]/mark ab]{0,5}", 0..10),
            mask in prop::collection::vec(any::<bool>(), 10),
            markers in prop::sample::select(vec![
                ("[[", "]]"), ("<mark>", "</mark>"), ("**", "__"), ("{", "}"), ("[", "]]"),
            ]),
        ) {
            let markers = Markers::new(markers.0, markers.1);
            let rendered = render_highlighted_with(&tokens, &mask, &markers);
            let runs = split_highlighted_with(&rendered, &markers);
            let back: Vec<(String, bool)> = runs
                .iter()
                .map(|(t, on)| (unescape(&t.replace('\u{2060}', "")), *on))
                .collect();
            // One-character markers formed by the text cannot be broken (see `stray`).
            if markers.open.chars().count() > 1 && markers.close.chars().count() > 1 {
                for (text, _) in &runs {
                    prop_assert!(!text.contains(&markers.open) && !text.contains(&markers.close));
                }
                let expected = expected_runs(&tokens, &mask[..tokens.len()]);
                prop_assert_eq!(back, expected, "{}", rendered);
            }
        }

        #[test]
        fn defuse_leaves_no_marker(
            text in "[<>a-z ]{0,20}",
            marker in prop::sample::select(vec!["<start>", "<a>", "aa", "ab"]),
        ) {
            prop_assert!(!defuse(&text, marker).contains(marker));
        }
    }

    proptest! {
        #[test]
        fn rendering_is_unambiguous(
            tokens in prop::collection::vec("[<>ab \\[\\]:EXPLANATIONex\n]{0,6}", 0..10),
            mask in prop::collection::vec(any::<bool>(), 10),
        ) {
            let rendered = render_highlighted(&tokens, &mask);
            let runs = split_highlighted(&rendered);
            // Delimiters come back exactly where they were put.
            let back: Vec<(String, bool)> = runs.iter().map(|(t, on)| (unescape(t), *on)).collect();
            prop_assert_eq!(back, expected_runs(&tokens, &mask[..tokens.len()]));
            for (text, _) in &runs {
                prop_assert!(!text.contains("<<") && !text.contains(">>"), "{rendered:?}");
                prop_assert!(!text.to_ascii_uppercase().contains("[EXPLANATION]"), "{rendered:?}");
            }
            // Escaping only swaps look-alikes: the text is otherwise unchanged.
            let plain: String = runs.iter().map(|(t, _)| t.as_str()).collect();
            prop_assert_eq!(unescape(&plain), tokens.concat());
        }
    }
}
