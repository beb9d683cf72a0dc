//! [`LocalIntervener`]: steers the engine's model along a latent's decoder direction, with the
//! strength calibrated per latent to a target KL divergence of the next-token distribution, and
//! continues a fixed set of neutral prompts with and without the steering: what the causal
//! scorers of `autointerp-score` (`intervention`, `surprisal-intervention`) judge.
//!
//! After Paulo et al. (2024), §3.3.5 ("intervention scoring"), and the open delphi pull request
//! #151: strengths are chosen so that every latent moves the model's next-token distribution by
//! the same KL(clean ‖ steered), which makes latents with decoder rows of any norm, at any
//! layer, comparable. Unlike delphi's code, which (through the KV cache) steers only the last
//! prompt token, the direction is added at every position, prompt and generated, as
//! Neuronpedia steers; the clean continuations are shared by every latent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use autointerp_client::{Intervener, Intervention, SteeredPair};
use autointerp_core::{HookPoint, LatentId};
use autointerp_sae::edit::{Edit, SharedCoder, Steering};
use tokio::sync::OnceCell;

use crate::{engine_error, GenerateRequest, LocalEngine, Result};

/// Neutral openings: no topic of their own, so that what a steered continuation talks about
/// comes from the latent.
pub const NEUTRAL_PROMPTS: &[&str] = &[
    "I think that",
    "The most important thing is",
    "Yesterday,",
    "Here is what happened:",
    "My favourite",
    "She said that",
    "In the beginning",
    "We",
];

/// Options of a [`LocalIntervener`].
#[derive(Debug, Clone, PartialEq)]
pub struct InterventionConfig {
    /// The prompts continued.
    pub prompts: Vec<String>,
    /// The KL divergence (nats) each latent's strength is calibrated to.
    pub target_kl: f64,
    /// Calibration stops within this fraction of `target_kl`.
    pub kl_tolerance: f64,
    /// Strengths tried at most per latent.
    pub max_steps: usize,
    /// The search's bounds on the strength (a multiplier of the raw decoder row).
    pub strength_range: (f64, f64),
    /// Tokens of each continuation (greedy).
    pub max_new_tokens: usize,
    /// Latents whose interventions are remembered (the random control and the other causal
    /// scorer ask for the same latents again).
    pub remember: usize,
}

impl Default for InterventionConfig {
    fn default() -> Self {
        Self {
            prompts: NEUTRAL_PROMPTS.iter().map(|&p| p.to_owned()).collect(),
            target_kl: 1.0,
            kl_tolerance: 0.1,
            max_steps: 16,
            strength_range: (1e-2, 1e4),
            max_new_tokens: 16,
            remember: 4096,
        }
    }
}

/// A prompt, its clean next-token distribution and its clean continuation.
struct CleanPrompt {
    ids: Vec<u32>,
    text: String,
    /// Log-probabilities of the whole vocabulary after the prompt.
    next: Vec<f32>,
    continuation: String,
}

/// Interventions by latent, each computed once (concurrent askers wait for the first).
#[derive(Default)]
struct Memo {
    cells: HashMap<LatentId, Arc<OnceCell<Arc<Intervention>>>>,
    order: VecDeque<LatentId>,
}

/// An [`Intervener`] on a [`LocalEngine`] and the sparse coders of its hook points.
pub struct LocalIntervener {
    engine: LocalEngine,
    coders: HashMap<HookPoint, SharedCoder>,
    config: InterventionConfig,
    clean: OnceCell<Arc<Vec<CleanPrompt>>>,
    memo: Mutex<Memo>,
}

impl std::fmt::Debug for LocalIntervener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIntervener")
            .field("hooks", &self.coders.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `req` under `steering`, if any.
fn steered(req: GenerateRequest, steering: Option<&Steering>) -> GenerateRequest {
    match steering {
        Some(s) => req.with_steering(s.clone()),
        None => req,
    }
}

/// KL(p ‖ q) of two log-probability vectors over the same vocabulary; infinite when `q` is
/// not a distribution (NaN from an overflowing steering), so the strength search backs off.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let d = p
        .iter()
        .zip(q)
        .map(|(&lp, &lq)| {
            let (lp, lq) = (f64::from(lp), f64::from(lq));
            if lp == f64::NEG_INFINITY {
                0.0
            } else {
                lp.exp() * (lp - lq)
            }
        })
        .sum::<f64>();
    if d.is_nan() {
        f64::INFINITY
    } else {
        d.max(0.0)
    }
}

impl LocalIntervener {
    /// Steers `engine`'s model with `coders` (each at the hook point it reads and writes; a
    /// transcoder is refused, its decoder writing elsewhere).
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a transcoder, a coder without a decoder, a coder whose
    /// width does not fit its hook point, an empty prompt list or a bad option; an engine
    /// without a tokenizer.
    pub fn new(
        engine: LocalEngine,
        coders: impl IntoIterator<Item = (HookPoint, SharedCoder)>,
        config: InterventionConfig,
    ) -> Result<Self> {
        engine.tokenizer_or_error()?;
        let bad = |what: String| crate::Error::Config(format!("intervention scoring: {what}"));
        if config.prompts.iter().all(|p| p.trim().is_empty()) {
            return Err(bad("no prompts to continue".into()));
        }
        let (lo, hi) = config.strength_range;
        if !(config.target_kl > 0.0 && lo > 0.0 && hi > lo && config.max_steps > 0) {
            return Err(bad(format!(
                "target KL {} and strength range {lo}..{hi}: need a positive KL and 0 < low < high",
                config.target_kl
            )));
        }
        let mut map = HashMap::new();
        for (hook, coder) in coders {
            {
                let c = coder.lock().unwrap_or_else(PoisonError::into_inner);
                if c.is_transcoder() || c.d_in() != c.d_out() {
                    return Err(bad(format!(
                        "the coder at {hook} is a transcoder: its decoder writes at another hook \
                         point, which steering does not support yet"
                    )));
                }
                if c.decoder_weight().is_none() {
                    return Err(bad(format!("the coder at {hook} has no decoder (W_dec)")));
                }
                let d = engine.hook_dim(hook)?;
                if d != c.d_out() {
                    return Err(bad(format!(
                        "the coder at {hook} writes width {}, the model's {hook} is {d} wide",
                        c.d_out()
                    )));
                }
            }
            map.insert(hook, coder);
        }
        Ok(Self {
            engine,
            coders: map,
            config,
            clean: OnceCell::new(),
            memo: Mutex::new(Memo::default()),
        })
    }

    /// The options.
    pub fn config(&self) -> &InterventionConfig {
        &self.config
    }

    /// The engine it steers.
    pub fn engine(&self) -> &LocalEngine {
        &self.engine
    }

    fn vocab(&self) -> usize {
        self.engine.shared.vocab_size
    }

    /// Log-probabilities of the whole vocabulary after each prompt, under `steering`.
    async fn next_tokens(
        &self,
        prompts: &[Vec<u32>],
        steering: Option<&Steering>,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.vocab();
        let asks = prompts.iter().map(|ids| {
            let req = GenerateRequest::new(ids.clone(), 1)
                .with_stop_token_ids([])
                .with_logprobs(vocab);
            self.engine.generate(steered(req, steering))
        });
        futures::future::try_join_all(asks)
            .await?
            .into_iter()
            .map(|g| {
                let first = g
                    .logprobs
                    .and_then(|l| l.into_iter().next())
                    .ok_or_else(|| engine_error("no logprobs for the next token"))?;
                let mut dense = vec![f32::NEG_INFINITY; vocab];
                for (id, lp) in first.top {
                    if let Some(slot) = dense.get_mut(id as usize) {
                        *slot = lp;
                    }
                }
                Ok(dense)
            })
            .collect()
    }

    /// Greedy continuations of each prompt under `steering`, as text.
    async fn continue_prompts(
        &self,
        prompts: &[Vec<u32>],
        steering: Option<&Steering>,
    ) -> Result<Vec<String>> {
        let tok = self.engine.tokenizer_or_error()?;
        let asks = prompts.iter().map(|ids| {
            let req = GenerateRequest::new(ids.clone(), self.config.max_new_tokens);
            self.engine.generate(steered(req, steering))
        });
        futures::future::try_join_all(asks)
            .await?
            .into_iter()
            .map(|g| {
                tok.decode(&g.tokens, true)
                    .map_err(crate::detok::tokenizer_error)
            })
            .collect()
    }

    async fn clean(&self) -> Result<Arc<Vec<CleanPrompt>>> {
        self.clean
            .get_or_try_init(|| async {
                let tok = self.engine.tokenizer_or_error()?;
                let texts: Vec<String> = self
                    .config
                    .prompts
                    .iter()
                    .filter(|p| !p.trim().is_empty())
                    .cloned()
                    .collect();
                let ids = texts
                    .iter()
                    .map(|t| tok.encode(t, true).map_err(crate::detok::tokenizer_error))
                    .collect::<Result<Vec<_>>>()?;
                let next = self.next_tokens(&ids, None).await?;
                let continuations = self.continue_prompts(&ids, None).await?;
                Ok(Arc::new(
                    texts
                        .into_iter()
                        .zip(ids)
                        .zip(next)
                        .zip(continuations)
                        .map(|(((text, ids), next), continuation)| CleanPrompt {
                            ids,
                            text,
                            next,
                            continuation,
                        })
                        .collect(),
                ))
            })
            .await
            .cloned()
    }

    /// The steering of `latent` at `strength`.
    fn steering(&self, latent: LatentId, strength: f64) -> Result<Steering> {
        let coder = self.coders.get(&latent.hookpoint).ok_or_else(|| {
            crate::Error::Config(format!(
                "intervention scoring: no sparse coder at {}",
                latent.hookpoint
            ))
        })?;
        let edit = Edit::steer(coder, latent.index as usize, strength).map_err(engine_error)?;
        Ok(Steering::one(latent.hookpoint, edit))
    }

    async fn compute(&self, latent: LatentId) -> Result<Intervention> {
        let clean = self.clean().await?;
        let ids: Vec<Vec<u32>> = clean.iter().map(|c| c.ids.clone()).collect();
        let target = self.config.target_kl;
        let mean_kl = |steered: &[Vec<f32>]| {
            clean
                .iter()
                .zip(steered)
                .map(|(c, s)| kl(&c.next, s))
                .sum::<f64>()
                / clean.len() as f64
        };
        // Bisection in log strength: KL grows with the strength (not strictly everywhere,
        // so the closest strength seen is kept).
        let (mut lo, mut hi) = (
            self.config.strength_range.0.ln(),
            self.config.strength_range.1.ln(),
        );
        let mut best: Option<(f64, f64, Vec<Vec<f32>>)> = None;
        for _ in 0..self.config.max_steps {
            let s = ((lo + hi) / 2.0).exp();
            let steering = self.steering(latent, s)?;
            let next = self.next_tokens(&ids, Some(&steering)).await?;
            let k = mean_kl(&next);
            if best
                .as_ref()
                .is_none_or(|(_, b, _)| (k - target).abs() < (b - target).abs())
            {
                best = Some((s, k, next));
            }
            if (k - target).abs() <= self.config.kl_tolerance * target {
                break;
            }
            if k < target {
                lo = s.ln();
            } else {
                hi = s.ln();
            }
        }
        let (strength, reached, next) = best.expect("max_steps > 0, checked in new");
        let promoted = self.token_change(&clean, &next)?;
        let steering = self.steering(latent, strength)?;
        let steered = self.continue_prompts(&ids, Some(&steering)).await?;
        Ok(Intervention {
            strength,
            target_kl: target,
            kl: reached,
            converged: (reached - target).abs() <= self.config.kl_tolerance * target,
            pairs: clean
                .iter()
                .zip(steered)
                .map(|(c, steered)| SteeredPair {
                    prompt: c.text.clone(),
                    clean: c.continuation.clone(),
                    steered,
                })
                .collect(),
            promoted,
        })
    }

    /// The [`TOKEN_CHANGE`] tokens whose probability after the prompts rose most under the
    /// steering (`steered`: its next-token log-probabilities per prompt), mean rise first.
    fn token_change(
        &self,
        clean: &[CleanPrompt],
        steered: &[Vec<f32>],
    ) -> Result<Vec<(String, f64)>> {
        let tok = self.engine.tokenizer_or_error()?;
        let mut rise = vec![0.0f64; self.vocab()];
        for (c, s) in clean.iter().zip(steered) {
            for (r, (&lc, &ls)) in rise.iter_mut().zip(c.next.iter().zip(s)) {
                *r += (f64::from(ls).exp() - f64::from(lc).exp()) / clean.len() as f64;
            }
        }
        let mut order: Vec<usize> = (0..rise.len()).filter(|&i| rise[i] > 0.0).collect();
        order.sort_by(|&a, &b| rise[b].total_cmp(&rise[a]));
        order
            .into_iter()
            .take(TOKEN_CHANGE)
            .map(|i| {
                let text = tok
                    .decode(&[i as u32], false)
                    .map_err(crate::detok::tokenizer_error)?;
                Ok((text, rise[i]))
            })
            .collect()
    }
}

/// Tokens kept in [`Intervention::promoted`].
pub const TOKEN_CHANGE: usize = 10;

impl Intervener for LocalIntervener {
    async fn intervene(&self, latent: LatentId) -> Result<Arc<Intervention>> {
        let cell = {
            let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(cell) = memo.cells.get(&latent) {
                Arc::clone(cell)
            } else {
                while memo.order.len() >= self.config.remember.max(1) {
                    if let Some(old) = memo.order.pop_front() {
                        memo.cells.remove(&old);
                    }
                }
                let cell = Arc::new(OnceCell::new());
                memo.cells.insert(latent, Arc::clone(&cell));
                memo.order.push_back(latent);
                cell
            }
        };
        cell.get_or_try_init(|| async { self.compute(latent).await.map(Arc::new) })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::kl;

    #[test]
    fn kl_of_log_distributions() {
        let p = [0.5f32.ln(), 0.5f32.ln(), f32::NEG_INFINITY];
        assert!(kl(&p, &p).abs() < 1e-12);
        let q = [0.25f32.ln(), 0.25f32.ln(), 0.5f32.ln()];
        assert!((kl(&p, &q) - std::f64::consts::LN_2).abs() < 1e-6);
        assert_eq!(kl(&p, &[f32::NAN; 3]), f64::INFINITY);
    }
}
