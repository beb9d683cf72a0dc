//! The engine thread: owns the model, gathers requests into batches and runs them (left-padded
//! prefill, then decoding with the KV cache until every row has finished).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use autointerp_core::HookPoint;
use autointerp_model::{pad_batch, Hooks, Input, Logits, Model, PaddingSide, Tokenizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};
use tokio::sync::{mpsc, oneshot};

use super::detok::IncrementalDecoder;
use super::{EngineConfig, EngineStats, FinishReason, GenerateRequest, Generation, TokenLogprob};
use crate::{Error, Result};

/// Prompt positions unembedded at once for prompt logprobs (`[chunk, vocab]` floats).
const PROMPT_CHUNK: i64 = 256;
/// Temperatures below this are greedy (vLLM's `_SAMPLING_EPS`).
pub(crate) const GREEDY_BELOW: f32 = 1e-5;

/// One request on its way to the engine thread.
pub(crate) struct Job {
    pub(crate) req: GenerateRequest,
    /// The end tokens (the request's, or the engine's).
    pub(crate) stop_ids: Vec<u32>,
    /// The most tokens it may add (max_tokens, capped by the context).
    pub(crate) max_new: usize,
    pub(crate) reply: oneshot::Sender<Result<Generation>>,
}

pub(crate) struct Worker {
    pub(crate) model: Model,
    pub(crate) tokenizer: Option<Tokenizer>,
    pub(crate) config: EngineConfig,
    pub(crate) pad_id: u32,
    pub(crate) stats: Arc<Mutex<EngineStats>>,
}

fn engine_error(e: impl std::fmt::Display) -> Error {
    Error::Engine {
        problem: e.to_string(),
    }
}

impl Worker {
    /// Serves jobs until every sender is gone.
    pub(crate) fn run(self, mut rx: mpsc::Receiver<Job>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("local engine: cannot start its runtime: {e}");
                return;
            }
        };
        let mut pending: VecDeque<Job> = VecDeque::new();
        let mut open = true;
        loop {
            let first = match pending.pop_front() {
                Some(job) => job,
                None if open => match rt.block_on(rx.recv()) {
                    Some(job) => job,
                    None => break,
                },
                None => break,
            };
            if first.reply.is_closed() {
                continue;
            }
            let batch = self.gather(first, &mut pending, &mut rx, &rt, &mut open);
            self.run_batch(batch);
        }
        tracing::debug!("local engine stopped");
    }

    /// Adds to `first` the jobs waiting in `pending` and those that arrive within the batch
    /// wait, up to the batch size and padded-token budget; a job that does not fit is kept
    /// for the next batch.
    fn gather(
        &self,
        first: Job,
        pending: &mut VecDeque<Job>,
        rx: &mut mpsc::Receiver<Job>,
        rt: &tokio::runtime::Runtime,
        open: &mut bool,
    ) -> Vec<Job> {
        let max_batch = self.config.max_batch_size.max(1);
        let budget = self.config.max_batch_tokens.max(1);
        let mut longest = first.req.prompt.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + self.config.batch_wait;
        // Whether `job` may join: false keeps it (first in line) for the next batch.
        let mut admit = |job: &Job, batch: &Vec<Job>| {
            let len = longest.max(job.req.prompt.len());
            if (batch.len() + 1) * len > budget {
                return false;
            }
            longest = len;
            true
        };
        while batch.len() < max_batch {
            let job = if let Some(job) = pending.pop_front() {
                job
            } else if !*open {
                break;
            } else {
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        *open = false;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left == Duration::ZERO {
                            break;
                        }
                        // The timer must be made inside the runtime.
                        let wait = async { tokio::time::timeout(left, rx.recv()).await };
                        match rt.block_on(wait) {
                            Ok(Some(job)) => job,
                            Ok(None) => {
                                *open = false;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
            };
            if job.reply.is_closed() {
                continue;
            }
            if !admit(&job, &batch) {
                pending.push_front(job);
                break;
            }
            batch.push(job);
        }
        batch
    }

    /// Runs one batch and answers each of its jobs; a failure (or a panic in libtorch) fails
    /// the whole batch but not the engine.
    fn run_batch(&self, jobs: Vec<Job>) {
        let n = jobs.len();
        let started = Instant::now();
        let mut rows: Vec<Row> = jobs.into_iter().map(Row::new).collect();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _guard = tch::no_grad_guard();
            self.generate(&mut rows)
        }));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the engine panicked".into()),
            ),
        };
        let generated: usize = rows.iter().map(|r| r.tokens.len()).sum();
        let prompt: usize = rows.iter().map(|r| r.job.req.prompt.len()).sum();
        {
            let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            stats.batches += 1;
            stats.requests += n as u64;
            stats.largest_batch = stats.largest_batch.max(n);
            stats.prompt_tokens += prompt as u64;
            stats.generated_tokens += generated as u64;
        }
        tracing::debug!(
            rows = n,
            generated,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local engine batch"
        );
        for row in rows {
            let (generation, reply) = row.into_parts();
            let result = match &failure {
                Some(problem) => Err(engine_error(problem)),
                None => Ok(generation),
            };
            // The receiver may be gone (a cancelled request): nothing to do then.
            let _ = reply.send(result);
        }
    }

    /// Prefill and decode.
    fn generate(&self, rows: &mut [Row]) -> Result<()> {
        let model = &self.model;
        let device = model.device();
        let prompts: Vec<Vec<u32>> = rows.iter().map(|r| r.job.req.prompt.clone()).collect();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let need_prompt_lp = rows.iter().any(|r| r.job.req.prompt_logprobs.is_some());
        let need_decode = rows.iter().any(|r| r.finish.is_none());
        if !need_prompt_lp && !need_decode {
            return Ok(());
        }
        let (ids, mask) =
            pad_batch(&prompts, self.pad_id, PaddingSide::Left).map_err(engine_error)?;
        let ids = ids.f_to_device(device).map_err(engine_error)?;
        let padded = prompts.iter().any(|p| p.len() != longest);
        let mask = mask.f_to_device(device).map_err(engine_error)?;
        let mut input = Input::new(&ids);
        if padded {
            input = input.with_attention_mask(&mask);
        }
        let last_layer = HookPoint::Residual(model.n_layers().saturating_sub(1));
        let mut hooks = Hooks::new().with_logits(if need_decode {
            Logits::Last
        } else {
            Logits::None
        });
        if need_prompt_lp {
            hooks = hooks.capture(last_layer);
        }
        let mut cache = model.new_cache();
        let mut out = model
            .forward_step(&input, &mut cache, &hooks)
            .map_err(engine_error)?;

        if let Some(resid) = out.take(last_layer) {
            for (r, row) in rows.iter_mut().enumerate() {
                if let Some(k) = row.job.req.prompt_logprobs {
                    let pad = longest - row.job.req.prompt.len();
                    row.prompt_logprobs = Some(self.prompt_logprobs(
                        &resid,
                        r,
                        pad,
                        &row.job.req.prompt,
                        k,
                        row.job.req.prompt_logprobs_start,
                    )?);
                }
            }
        }
        if !need_decode {
            return Ok(());
        }

        let step_hooks = Hooks::new().with_logits(Logits::Last);
        let mut logits = out
            .logits
            .take()
            .ok_or_else(|| engine_error("the model returned no logits"))?;
        loop {
            // [batch, vocab] in f32.
            let last = logits
                .f_select(1, -1)
                .and_then(|t| t.f_to_kind(Kind::Float))
                .map_err(engine_error)?;
            let choice = choose(&last, rows).map_err(engine_error)?;
            for (r, row) in rows.iter_mut().enumerate() {
                if row.finish.is_none() {
                    row.accept(
                        choice.next[r],
                        choice.logprobs_of(r, row),
                        self.tokenizer.as_ref(),
                    )?;
                }
            }
            if rows.iter().all(|r| r.finish.is_some()) {
                break;
            }
            let feed: Vec<i64> = rows
                .iter()
                .zip(&choice.next)
                .map(|(row, &t)| {
                    if row.finish.is_some() {
                        i64::from(self.pad_id)
                    } else {
                        t
                    }
                })
                .collect();
            let next = Tensor::f_from_slice(&feed)
                .and_then(|t| t.f_view([rows.len() as i64, 1]))
                .and_then(|t| t.f_to_device(device))
                .map_err(engine_error)?;
            out = model
                .forward_step(&Input::new(&next), &mut cache, &step_hooks)
                .map_err(engine_error)?;
            logits = out
                .logits
                .take()
                .ok_or_else(|| engine_error("the model returned no logits"))?;
        }
        Ok(())
    }

    /// The log-probability of each prompt token from `start` on (and of the `k` likeliest
    /// tokens there) given the tokens before it, unembedding the final residual stream a chunk
    /// at a time.
    ///
    /// # Shapes
    /// `resid`: `[batch, longest, d_model]`, row `r` left-padded by `pad`.
    fn prompt_logprobs(
        &self,
        resid: &Tensor,
        r: usize,
        pad: usize,
        prompt: &[u32],
        k: usize,
        start: usize,
    ) -> Result<Vec<Option<TokenLogprob>>> {
        let n = prompt.len();
        let mut out = vec![None; n];
        let start = start.max(1);
        if start >= n {
            return Ok(out);
        }
        let device = self.model.device();
        let row = resid.f_select(0, r as i64).map_err(engine_error)?;
        let k = k.min(self.model.vocab_size()) as i64;
        let mut j0 = start;
        while j0 < n {
            let j1 = (j0 + PROMPT_CHUNK as usize).min(n);
            let c = (j1 - j0) as i64;
            let targets: Vec<i64> = prompt[j0..j1].iter().map(|&t| i64::from(t)).collect();
            let run = || -> std::result::Result<_, Box<dyn std::error::Error>> {
                // Position j is predicted by the hidden state at j - 1.
                let h = row.f_narrow(0, (pad + j0 - 1) as i64, c)?;
                let lsm = self.model.unembed(&h)?.f_log_softmax(-1, Kind::Float)?;
                let tgt = Tensor::f_from_slice(&targets)?
                    .f_view([c, 1])?
                    .f_to_device(device)?;
                let lp = to_vec_f32(&lsm.f_gather(1, &tgt, false)?)?;
                let top = if k > 0 {
                    let (vals, idx) = lsm.f_topk(k, -1, true, true)?;
                    Some((to_vec_f32(&vals)?, to_vec_i64(&idx)?))
                } else {
                    None
                };
                Ok((lp, top))
            };
            let (lp, top) = run().map_err(engine_error)?;
            for i in 0..(j1 - j0) {
                let top = top.as_ref().map_or_else(Vec::new, |(vals, idx)| {
                    let ku = k as usize;
                    (0..ku)
                        .map(|a| (idx[i * ku + a] as u32, vals[i * ku + a]))
                        .collect()
                });
                out[j0 + i] = Some(TokenLogprob {
                    id: prompt[j0 + i],
                    logprob: lp[i],
                    top,
                });
            }
            j0 = j1;
        }
        Ok(out)
    }
}

/// The next token of every row, and what logprobs were asked for.
struct Choice {
    next: Vec<i64>,
    logprobs: Option<StepLogprobs>,
}

/// Logprobs of one decoding step, on the host.
struct StepLogprobs {
    /// The chosen tokens', `[batch]`.
    chosen: Vec<f32>,
    /// Alternatives per row.
    k: usize,
    /// The `k` likeliest tokens, `[batch, k]`.
    ids: Vec<i64>,
    /// Their logprobs, `[batch, k]`.
    values: Vec<f32>,
}

impl Choice {
    fn logprobs_of(&self, r: usize, row: &Row) -> Option<TokenLogprob> {
        let want = row.job.req.logprobs?;
        let lp = self.logprobs.as_ref()?;
        let k = lp.k;
        let top = (0..want.min(k))
            .map(|a| (lp.ids[r * k + a] as u32, lp.values[r * k + a]))
            .collect();
        Some(TokenLogprob {
            id: self.next[r] as u32,
            logprob: lp.chosen[r],
            top,
        })
    }
}

/// Picks every row's next token from `logits` `[batch, vocab]` (f32): argmax for greedy rows;
/// for sampling rows, temperature, top-k and top-p, then inverse-CDF sampling with one uniform
/// number from the row's own generator, so a seeded row draws the same tokens whatever batch it
/// is in. Logprobs are the log-softmax of the raw logits (temperature 1).
fn choose(logits: &Tensor, rows: &mut [Row]) -> std::result::Result<Choice, tch::TchError> {
    let b = rows.len() as i64;
    let device = logits.device();
    let vocab = logits.size()[1];
    let greedy = logits.f_argmax(-1, false)?;
    let sampling: Vec<bool> = rows
        .iter()
        .map(|r| r.finish.is_none() && r.rng.is_some())
        .collect();
    let next = if sampling.iter().any(|&s| s) {
        let mut temps = Vec::with_capacity(rows.len());
        let mut top_p = Vec::with_capacity(rows.len());
        let mut top_k = Vec::with_capacity(rows.len());
        let mut uniform = Vec::with_capacity(rows.len());
        for (row, &s) in rows.iter_mut().zip(&sampling) {
            let req = &row.job.req;
            if s {
                temps.push(f64::from(req.temperature));
                top_p.push(f64::from(req.top_p.clamp(f32::MIN_POSITIVE, 1.0)));
                top_k.push(req.top_k.map_or(vocab, |k| (k as i64).clamp(1, vocab)));
                uniform.push(row.rng.as_mut().map_or(0.0, |g| g.random::<f64>()));
            } else {
                temps.push(1.0);
                top_p.push(1.0);
                top_k.push(vocab);
                uniform.push(0.0);
            }
        }
        let col = |v: &[f64]| -> std::result::Result<Tensor, tch::TchError> {
            Tensor::f_from_slice(v)?.f_view([b, 1])?.f_to_device(device)
        };
        let temps = col(&temps)?;
        let top_p = col(&top_p)?;
        let uniform = col(&uniform)?;
        let top_k = Tensor::f_from_slice(&top_k)?
            .f_view([b, 1])?
            .f_to_device(device)?;
        let probs = logits
            .f_to_kind(Kind::Double)?
            .f_div(&temps)?
            .f_softmax(-1, Kind::Double)?;
        let (sorted, idx) = probs.f_sort_stable(true, -1, true)?;
        let before = sorted.f_cumsum(-1, Kind::Double)?.f_sub(&sorted)?;
        let rank = Tensor::f_arange(vocab, (Kind::Int64, device))?.f_view([1, vocab])?;
        // Dropped: beyond the nucleus, beyond the top k, or impossible. Always a suffix.
        let drop = before
            .f_ge_tensor(&top_p)?
            .f_logical_or(&rank.f_ge_tensor(&top_k)?)?
            .f_logical_or(&sorted.f_le(0.0)?)?;
        let kept = sorted.f_masked_fill(&drop, 0.0)?;
        let cum = kept.f_cumsum(-1, Kind::Double)?;
        let total = cum.f_narrow(1, vocab - 1, 1)?;
        let target = uniform.f_mul(&total)?;
        let n_kept = drop
            .f_logical_not()?
            .f_sum_dim_intlist(-1, true, Kind::Int64)?;
        let pos = cum
            .f_le_tensor(&target)?
            .f_sum_dim_intlist(-1, true, Kind::Int64)?
            .f_minimum(&n_kept.f_sub_scalar(1)?.f_clamp_min(0)?)?;
        let sampled = idx.f_gather(1, &pos, false)?.f_view([b])?;
        let mask: Vec<bool> = sampling.clone();
        let is_sampling = Tensor::f_from_slice(&mask)?.f_to_device(device)?;
        sampled.f_where_self(&is_sampling, &greedy)?
    } else {
        greedy
    };
    let k_max = rows
        .iter()
        .filter(|r| r.finish.is_none())
        .filter_map(|r| r.job.req.logprobs)
        .max();
    let logprobs = match k_max {
        None => None,
        Some(k) => {
            let k = (k as i64).min(vocab);
            let lsm = logits.f_log_softmax(-1, Kind::Float)?;
            let chosen = to_vec_f32(&lsm.f_gather(1, &next.f_view([b, 1])?, false)?)?;
            let (vals, ids) = if k > 0 {
                let (vals, ids) = lsm.f_topk(k, -1, true, true)?;
                (to_vec_f32(&vals)?, to_vec_i64(&ids)?)
            } else {
                (Vec::new(), Vec::new())
            };
            Some(StepLogprobs {
                chosen,
                k: k as usize,
                ids,
                values: vals,
            })
        }
    };
    Ok(Choice {
        next: to_vec_i64(&next)?,
        logprobs,
    })
}

fn to_vec_f32(t: &Tensor) -> std::result::Result<Vec<f32>, tch::TchError> {
    let flat = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?
        .f_view([-1])?;
    Vec::<f32>::try_from(&flat)
}

fn to_vec_i64(t: &Tensor) -> std::result::Result<Vec<i64>, tch::TchError> {
    let flat = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Int64)?
        .f_contiguous()?
        .f_view([-1])?;
    Vec::<i64>::try_from(&flat)
}

/// Watches a row's text for its stop strings.
struct StopWatch {
    decoder: IncrementalDecoder,
    text: String,
    stops: Vec<String>,
    longest: usize,
}

impl StopWatch {
    /// Adds `id`'s text; true once a stop string appears.
    fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<bool> {
        let piece = self.decoder.push(tokenizer, id)?;
        if piece.is_empty() {
            return Ok(false);
        }
        // Only where the new text could complete a stop string.
        let mut from = self
            .text
            .len()
            .saturating_sub(self.longest.saturating_sub(1));
        self.text.push_str(&piece);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let tail = &self.text[from..];
        Ok(self.stops.iter().any(|s| tail.contains(s.as_str())))
    }
}

/// One request in a running batch.
struct Row {
    job: Job,
    rng: Option<ChaCha8Rng>,
    tokens: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    finish: Option<FinishReason>,
    watch: Option<StopWatch>,
}

impl Row {
    fn new(job: Job) -> Self {
        let req = &job.req;
        let rng = (req.temperature >= GREEDY_BELOW)
            .then(|| ChaCha8Rng::seed_from_u64(req.seed.unwrap_or_else(rand::random)));
        let stops: Vec<String> = req.stop.iter().filter(|s| !s.is_empty()).cloned().collect();
        let watch = (!stops.is_empty()).then(|| StopWatch {
            // A little of the prompt as context, so that the first token's leading space
            // survives SentencePiece decoders.
            decoder: IncrementalDecoder::new(
                &req.prompt[req.prompt.len().saturating_sub(4)..],
                true,
            ),
            text: String::new(),
            longest: stops.iter().map(String::len).max().unwrap_or(0),
            stops,
        });
        let finish = (job.max_new == 0).then_some(FinishReason::Length);
        Self {
            rng,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            prompt_logprobs: None,
            finish,
            watch,
            job,
        }
    }

    /// Takes the next token and decides whether the row is done.
    fn accept(
        &mut self,
        token: i64,
        logprob: Option<TokenLogprob>,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<()> {
        let token = token as u32;
        self.tokens.push(token);
        if let Some(lp) = logprob {
            self.logprobs.push(lp);
        }
        if self.job.stop_ids.contains(&token) {
            self.finish = Some(FinishReason::Stop);
            return Ok(());
        }
        if let (Some(watch), Some(tok)) = (self.watch.as_mut(), tokenizer) {
            if watch.push(tok, token)? {
                self.finish = Some(FinishReason::Stop);
                return Ok(());
            }
        }
        if self.tokens.len() >= self.job.max_new {
            self.finish = Some(FinishReason::Length);
        } else if self.job.reply.is_closed() {
            // Nobody waits for it any more.
            self.finish = Some(FinishReason::Length);
        }
        Ok(())
    }

    /// The answer, and where to send it.
    fn into_parts(self) -> (Generation, oneshot::Sender<Result<Generation>>) {
        let generation = Generation {
            prompt_tokens: self.job.req.prompt.len(),
            logprobs: self.job.req.logprobs.map(|_| self.logprobs),
            prompt_logprobs: self.prompt_logprobs,
            tokens: self.tokens,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        };
        (generation, self.job.reply)
    }
}
