//! Examples shown to people: one line each, activating tokens marked.
//!
//! This is the terminal view (`autointerp latents show`): every token above 0 is marked on its
//! own, by colour or `<<...>>`, and nothing is escaped. Prompts for LLMs need another rendering
//! (runs above a threshold, text escaped so that it cannot forge a highlight), which is
//! autointerp-explain's `highlight`.

use autointerp_core::Example;

/// How [`render_example`] marks activating tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Style {
    /// `<<token>>` around each activating token: for logs, pipes and files.
    #[default]
    Plain,
    /// ANSI 256-colour red, brighter for stronger activations: for a terminal.
    Colour,
}

/// Renders `example` on one line (line breaks become `↵`), each token whose activation is above
/// 0 marked as `style` says.
///
/// ```
/// use autointerp_core::Example;
/// use autointerp_latents::{render_example, Style};
///
/// let ex = Example {
///     tokens: vec![1, 2, 3],
///     str_tokens: vec!["a".into(), " b".into(), "\n".into()],
///     activations: vec![0.0, 2.0, 0.0],
///     normalized: vec![0, 10, 0],
///     quantile: None,
///     distance: None,
/// };
/// assert_eq!(render_example(&ex, Style::Plain), "a<< b>>↵");
/// ```
pub fn render_example(example: &Example, style: Style) -> String {
    let mut out = String::new();
    let max = example.max_activation();
    for (text, &act) in example.str_tokens.iter().zip(&example.activations) {
        let text = text.replace('\n', "↵");
        match style {
            _ if act <= 0.0 => out.push_str(&text),
            Style::Colour => {
                // Brighter red for stronger activations: 5 shades of the 256-colour palette.
                let shade = [224, 217, 210, 203, 196]
                    [((act / max.max(f32::MIN_POSITIVE)) * 4.0).round() as usize % 5];
                out.push_str(&format!("\x1b[1;38;5;{shade}m{text}\x1b[0m"));
            }
            Style::Plain => out.push_str(&format!("<<{text}>>")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rendering_marks_activating_tokens() {
        let ex = Example {
            tokens: vec![1, 2, 3],
            str_tokens: vec!["a".into(), " b".into(), "\n".into()],
            activations: vec![0.0, 2.0, 0.0],
            normalized: vec![0, 10, 0],
            quantile: None,
            distance: None,
        };
        assert_eq!(render_example(&ex, Style::Plain), "a<< b>>↵");
        let coloured = render_example(&ex, Style::Colour);
        assert!(
            coloured.contains("\x1b[1;38;5;196m b\x1b[0m"),
            "{coloured:?}"
        );
        assert!(coloured.starts_with('a') && coloured.ends_with('↵'));
    }
}
