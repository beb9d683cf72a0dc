//! The statistical baseline explainer: which tokens a latent fires on, by share of its activation,
//! and what comes before them. No LLM is asked, so it costs nothing, never fails to parse and
//! never rambles; every LLM explanation should beat it (a standard baseline in the field: an
//! explanation that only names the activating tokens).

use std::collections::HashMap;
use std::future::Future;

use autointerp_client::Usage;
use autointerp_core::{Example, Explanation, LatentRecord};

use crate::{Error, ExplainOutcome, Explainer, Result};

/// Settings of [`TokenExplainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenExplainerConfig {
    /// The most tokens named.
    pub max_tokens: usize,
    /// A token is named only if it carries at least this share of the activation mass.
    pub min_share: f64,
    /// The preceding token is named only if it comes before at least this share of the
    /// activation mass.
    pub min_context_share: f64,
}

impl Default for TokenExplainerConfig {
    fn default() -> Self {
        Self {
            max_tokens: 5,
            min_share: 0.03,
            min_context_share: 0.3,
        }
    }
}

/// Explains a latent by its most frequent activating tokens: `Fires on "Congress" (41%),
/// "Senate" (12%); often after "the" (63%).` Shares are of the total activation over the train
/// examples, so a token the latent fires on weakly but often counts as it should.
///
/// ```
/// use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats};
/// use autointerp_explain::{Explainer, TokenExplainer};
///
/// let ex = |s: [&str; 3], a: [f32; 3]| Example {
///     tokens: vec![0; 3],
///     str_tokens: s.iter().map(|t| t.to_string()).collect(),
///     activations: a.to_vec(),
///     normalized: vec![0; 3],
///     quantile: Some(1),
///     distance: None,
/// };
/// let record = LatentRecord {
///     id: LatentId::new(HookPoint::Residual(6), 3),
///     train: vec![
///         ex(["the", " Senate", " voted"], [0.0, 3.0, 0.0]),
///         ex(["the", " Senate", "."], [0.0, 3.0, 0.0]),
///         ex(["a", " House", " bill"], [0.0, 2.0, 0.0]),
///     ],
///     test: vec![],
///     non_activating: vec![],
///     stats: LatentStats::default(),
///     logits: None,
/// };
/// let outcome = futures::executor::block_on(TokenExplainer::default().explain(&record))?;
/// assert_eq!(
///     outcome.explanation().unwrap().text,
///     r#"Fires on "Senate" (75%), "House" (25%); often after "the" (75%)."#
/// );
/// # Ok::<(), autointerp_explain::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenExplainer {
    config: TokenExplainerConfig,
}

impl TokenExplainer {
    /// An explainer with `config`.
    pub fn new(config: TokenExplainerConfig) -> Self {
        Self { config }
    }

    /// The explanation of `examples`, or `None` when nothing in them fires.
    pub fn describe(&self, examples: &[Example]) -> Option<String> {
        // Keyed by the token as shown, so that " Senate" and "Senate" count as one.
        let mut mass: HashMap<String, f64> = HashMap::new();
        let mut before: HashMap<String, f64> = HashMap::new();
        let mut total = 0.0;
        for ex in examples {
            for (i, (&act, tok)) in ex.activations.iter().zip(&ex.str_tokens).enumerate() {
                // NaN and negative activations do not fire.
                if act.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
                let act = f64::from(act);
                total += act;
                *mass.entry(shown(tok)).or_default() += act;
                if let Some(prev) = i.checked_sub(1).and_then(|j| ex.str_tokens.get(j)) {
                    *before.entry(shown(prev)).or_default() += act;
                }
            }
        }
        if total <= 0.0 {
            return None;
        }
        let tokens = ranked(mass, total);
        let named: Vec<String> = tokens
            .iter()
            .take(self.config.max_tokens.max(1))
            .enumerate()
            .filter(|(i, (_, share))| *i == 0 || *share >= self.config.min_share)
            .map(|(_, (tok, share))| format!("{tok} ({:.0}%)", share * 100.0))
            .collect();
        let mut text = format!("Fires on {}", named.join(", "));
        if let Some((prev, share)) = ranked(before, total).first() {
            if *share >= self.config.min_context_share {
                text.push_str(&format!("; often after {prev} ({:.0}%)", share * 100.0));
            }
        }
        text.push('.');
        Some(text)
    }
}

/// Tokens by share of `total`, largest first; ties broken by the token text, so that the
/// explanation is deterministic.
fn ranked(mass: HashMap<String, f64>, total: f64) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = mass.into_iter().map(|(t, w)| (t, w / total)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// A token as the explanation names it: quoted and trimmed, whitespace named.
fn shown(token: &str) -> String {
    let trimmed = token.trim();
    if trimmed.is_empty() {
        return match token {
            t if t.contains('\n') => "a line break".into(),
            "" => "an empty token".into(),
            _ => "a space".into(),
        };
    }
    format!("\"{trimmed}\"")
}

impl Explainer for TokenExplainer {
    fn name(&self) -> &'static str {
        "tokens"
    }

    fn explain(
        &self,
        record: &LatentRecord,
    ) -> impl Future<Output = Result<ExplainOutcome>> + Send {
        let outcome = if record.train.is_empty() {
            Err(Error::NoTrainExamples { latent: record.id })
        } else {
            Ok(match self.describe(&record.train) {
                Some(text) => ExplainOutcome::Explained {
                    answer: text.clone(),
                    explanation: Explanation {
                        latent: record.id,
                        text,
                    },
                    usage: Usage::default(),
                },
                None => ExplainOutcome::Failed {
                    latent: record.id,
                    reason: "no train example has a positive activation".into(),
                    answer: String::new(),
                    usage: Usage::default(),
                },
            })
        };
        std::future::ready(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(tokens: &[&str], acts: &[f32]) -> Example {
        Example {
            tokens: vec![0; tokens.len()],
            str_tokens: tokens.iter().map(|t| t.to_string()).collect(),
            activations: acts.to_vec(),
            normalized: vec![0; tokens.len()],
            quantile: Some(1),
            distance: None,
        }
    }

    #[test]
    fn shares_are_of_activation_mass_and_small_ones_are_left_out() {
        let e = TokenExplainer::default();
        let text = e
            .describe(&[
                ex(&["a", " cat"], &[0.0, 9.7]),
                ex(&["b", " dog"], &[0.0, 0.2]),
                ex(&["c", "\n"], &[0.0, 0.1]),
            ])
            .unwrap();
        assert_eq!(text, r#"Fires on "cat" (97%); often after "a" (97%)."#);
        let text = e
            .describe(&[ex(&["x", "\n", " \n"], &[0.0, 1.0, 1.0])])
            .unwrap();
        assert!(text.starts_with("Fires on a line break (100%)"), "{text}");
        assert_eq!(e.describe(&[ex(&["a"], &[0.0])]), None);
        assert_eq!(e.describe(&[ex(&["a"], &[f32::NAN])]), None);
    }

    #[test]
    fn a_record_without_train_examples_is_an_error_and_one_that_never_fires_a_failure() {
        use autointerp_core::{HookPoint, LatentId, LatentStats};
        let mut record = LatentRecord {
            id: LatentId::new(HookPoint::Residual(1), 2),
            train: vec![],
            test: vec![],
            non_activating: vec![],
            stats: LatentStats::default(),
            logits: None,
        };
        let e = TokenExplainer::default();
        assert!(futures::executor::block_on(e.explain(&record)).is_err());
        record.train.push(ex(&["a"], &[0.0]));
        assert!(futures::executor::block_on(e.explain(&record))
            .unwrap()
            .is_failed());
    }
}
