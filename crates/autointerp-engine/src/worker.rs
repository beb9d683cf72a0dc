//! The engine thread: owns the model, gathers requests into batches and runs them (left-padded
//! prefill, then decoding with the KV cache until every row has finished).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use autointerp_core::HookPoint;
use autointerp_model::{pad_batch, Hooks, Input, KvCache, Logits, Model, PaddingSide, Tokenizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};
use tokio::sync::{mpsc, oneshot};

use super::detok::IncrementalDecoder;
use super::prefix::{Pieces, PrefixCache, Span};
use super::{
    EngineConfig, EngineStats, FinishReason, GenerateRequest, Generation, Steering, TokenLogprob,
};
use crate::{Error, Result};

/// Prompt positions unembedded at once for prompt logprobs (`[chunk, vocab]` floats).
const PROMPT_CHUNK: i64 = 256;
/// Tokens that rows of one batch must share beyond what the prefix cache holds before their
/// common prefix is prefilled once, ahead of the batch: below this the extra forward pass costs
/// more than it saves.
const MIN_SHARED: usize = 16;
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
    /// `None` when switched off, or for models with sliding-window layers (their windows are
    /// counted in cache slots, which the padding between a reused prefix and the rest of a
    /// prompt would widen).
    pub(crate) prefix: Option<PrefixCache>,
}

/// What a prefill leaves.
struct Prefilled {
    cache: KvCache,
    /// `[batch, 1, vocab]`, when asked for.
    logits: Option<Tensor>,
    /// Per row, its whole prompt (reused and computed positions), when asked for: keys and
    /// values only when they are to be stored.
    rows: Vec<Pieces>,
}

fn engine_error(e: impl std::fmt::Display) -> Error {
    Error::Engine {
        problem: e.to_string(),
    }
}

impl Worker {
    /// Serves jobs until every sender is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
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
        let steering = first.req.steering.clone();
        // Jobs of another steering, passed over: back to the front of the queue, in order.
        let mut other = Vec::new();
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
            if job.req.steering != steering {
                other.push(job);
                continue;
            }
            if !admit(&job, &batch) {
                pending.push_front(job);
                break;
            }
            batch.push(job);
        }
        for job in other.into_iter().rev() {
            pending.push_front(job);
        }
        batch
    }

    /// Hooks that apply `steering`'s edits (none without one).
    fn edit_hooks(&self, steering: Option<&Steering>) -> Result<Hooks> {
        let mut hooks = Hooks::new();
        for (point, edit) in steering.map(Steering::edits).unwrap_or_default() {
            let edit = edit.prepare(self.model.device()).map_err(engine_error)?;
            hooks = hooks.try_intervene(*point, move |x| edit.apply(x));
        }
        Ok(hooks)
    }

    /// Runs one batch and answers each of its jobs; a failure (or a panic in libtorch) fails
    /// the whole batch but not the engine.
    fn run_batch(&mut self, jobs: Vec<Job>) {
        let n = jobs.len();
        let started = Instant::now();
        let mut rows: Vec<Row> = jobs.into_iter().map(Row::new).collect();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _guard = tch::no_grad_guard();
            self.generate(&mut rows)
        }));
        let mut cached = 0;
        let failure = match outcome {
            Ok(Ok(reused)) => {
                cached = reused;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the engine panicked".into()),
            ),
        };
        if failure.is_some() {
            // A step that failed half-way may have left the tree inconsistent.
            if let Some(prefix) = self.prefix.as_mut() {
                *prefix = PrefixCache::new(self.config.prefix_cache_bytes);
            }
        }
        let generated: usize = rows.iter().map(|r| r.tokens.len()).sum();
        let prompt: usize = rows.iter().map(|r| r.job.req.prompt.len()).sum();
        {
            let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            stats.batches += 1;
            stats.requests += n as u64;
            stats.largest_batch = stats.largest_batch.max(n);
            stats.prompt_tokens += prompt as u64;
            stats.generated_tokens += generated as u64;
            stats.cached_prompt_tokens += cached as u64;
            stats.prefix_cache_bytes = self.prefix.as_ref().map_or(0, PrefixCache::bytes) as u64;
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

    /// Prefill and decode; the number of prompt tokens taken from the prefix cache.
    fn generate(&mut self, rows: &mut [Row]) -> Result<usize> {
        let device = self.model.device();
        let prompts: Vec<&[u32]> = rows.iter().map(|r| r.job.req.prompt.as_slice()).collect();
        let need_prompt_lp = rows.iter().any(|r| r.job.req.prompt_logprobs.is_some());
        let need_decode = rows.iter().any(|r| r.finish.is_none());
        if !need_prompt_lp && !need_decode {
            return Ok(0);
        }
        let steering = rows.first().and_then(|r| r.job.req.steering.clone());
        // Stored keys and values are unsteered: steered rows neither reuse nor store them.
        let store = self.prefix.is_some() && steering.is_none();
        let reused = if steering.is_none() {
            self.reuse(&prompts)?
        } else {
            prompts.iter().map(|_| Pieces::default()).collect()
        };
        let cached: usize = reused.iter().map(Pieces::len).sum();
        let Prefilled {
            mut cache,
            logits,
            rows: pieces,
        } = self.prefill(
            &prompts,
            reused,
            need_decode,
            store || need_prompt_lp,
            store,
            steering.as_ref(),
        )?;
        if let Some(prefix) = self.prefix.as_mut().filter(|_| store) {
            for (prompt, p) in prompts.iter().zip(&pieces) {
                prefix.insert(prompt, p).map_err(engine_error)?;
            }
        }
        for (row, p) in rows.iter_mut().zip(&pieces) {
            if let Some(k) = row.job.req.prompt_logprobs {
                row.prompt_logprobs = Some(self.prompt_logprobs(
                    p,
                    &row.job.req.prompt,
                    k,
                    row.job.req.prompt_logprobs_start,
                )?);
            }
        }
        // The prefill's keys and values, before decoding copies them into longer tensors.
        drop(pieces);
        if !need_decode {
            return Ok(cached);
        }

        let model = &self.model;
        let step_hooks = self
            .edit_hooks(steering.as_ref())?
            .with_logits(Logits::Last);
        let mut logits = logits.ok_or_else(|| engine_error("the model returned no logits"))?;
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
            logits = model
                .forward_step(&Input::new(&next), &mut cache, &step_hooks)
                .map_err(engine_error)?
                .logits
                .take()
                .ok_or_else(|| engine_error("the model returned no logits"))?;
        }
        Ok(cached)
    }

    /// What each prompt reuses: the longest prefix the cache holds, or, where rows of the
    /// batch share more than that, their common prefix, prefilled once now (and stored). At
    /// least the last token of each prompt is left to prefill, for its logits.
    fn reuse(&mut self, prompts: &[&[u32]]) -> Result<Vec<Pieces>> {
        let Some(prefix) = self.prefix.as_mut() else {
            return Ok(prompts.iter().map(|_| Pieces::default()).collect());
        };
        let mut reused = prompts
            .iter()
            .map(|p| prefix.lookup(p, p.len() - 1))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(engine_error)?;
        let have: Vec<usize> = reused.iter().map(Pieces::len).collect();
        let (groups, members) = shared_prefixes(prompts, &have);
        if groups.is_empty() {
            return Ok(reused);
        }
        let group_prompts: Vec<&[u32]> =
            groups.iter().map(|&(r, len)| &prompts[r][..len]).collect();
        let group_reused = group_prompts
            .iter()
            .map(|p| prefix.lookup(p, p.len() - 1))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(engine_error)?;
        let done = self.prefill(&group_prompts, group_reused, false, true, true, None)?;
        let prefix = self.prefix.as_mut().expect("checked above");
        for (p, pieces) in group_prompts.iter().zip(&done.rows) {
            prefix.insert(p, pieces).map_err(engine_error)?;
        }
        for (r, member) in members.into_iter().enumerate() {
            if let Some((g, len)) = member {
                reused[r] = done.rows[g].truncate(len).map_err(engine_error)?;
            }
        }
        Ok(reused)
    }

    /// Prefills `prompts` after the prefixes they reuse: a cache of the reused keys and values
    /// (each row padded on the left to the longest reused prefix), then the rest of each
    /// prompt, padded on the left too, in one forward step. `logits`: compute the last
    /// position's; `resid`: keep each row's final residual stream in [`Prefilled::rows`];
    /// `kv`: also its keys and values.
    fn prefill(
        &self,
        prompts: &[&[u32]],
        reused: Vec<Pieces>,
        logits: bool,
        resid: bool,
        kv: bool,
        steering: Option<&Steering>,
    ) -> Result<Prefilled> {
        let model = &self.model;
        let device = model.device();
        let b = prompts.len();
        let have: Vec<usize> = reused.iter().map(Pieces::len).collect();
        let past = have.iter().copied().max().unwrap_or(0);
        let rests: Vec<Vec<u32>> = prompts
            .iter()
            .zip(&have)
            .map(|(p, &c)| p[c..].to_vec())
            .collect();
        let longest = rests.iter().map(Vec::len).max().unwrap_or(0);
        let mut cache = if past == 0 {
            model.new_cache()
        } else {
            let run = || -> std::result::Result<KvCache, Box<dyn std::error::Error>> {
                let mut layers = Vec::with_capacity(model.n_layers());
                for l in 0..model.n_layers() {
                    let like = reused
                        .iter()
                        .find_map(|p| p.some_keys(l))
                        .expect("some row reuses a prefix");
                    let (ks, vs): (Vec<Tensor>, Vec<Tensor>) = reused
                        .iter()
                        .zip(&have)
                        .map(|(p, &c)| p.layer_padded(l, past - c, like))
                        .collect::<std::result::Result<Vec<_>, _>>()?
                        .into_iter()
                        .unzip();
                    layers.push((Tensor::f_cat(&ks, 0)?, Tensor::f_cat(&vs, 0)?));
                }
                let mask = if have.iter().all(|&c| c == past) {
                    None
                } else {
                    let flags: Vec<i64> = have
                        .iter()
                        .flat_map(|&c| (0..past).map(move |i| i64::from(i >= past - c)))
                        .collect();
                    Some(Tensor::f_from_slice(&flags)?.f_view([b as i64, past as i64])?)
                };
                Ok(model.cache_from_layers(layers, mask)?)
            };
            run().map_err(engine_error)?
        };

        let (ids, mask) =
            pad_batch(&rests, self.pad_id, PaddingSide::Left).map_err(engine_error)?;
        let ids = ids.f_to_device(device).map_err(engine_error)?;
        let mask = mask.f_to_device(device).map_err(engine_error)?;
        let mut input = Input::new(&ids);
        if rests.iter().any(|p| p.len() != longest) {
            input = input.with_attention_mask(&mask);
        }
        let last_layer = HookPoint::Residual(model.n_layers().saturating_sub(1));
        let mut hooks = self.edit_hooks(steering)?.with_logits(if logits {
            Logits::Last
        } else {
            Logits::None
        });
        if resid {
            hooks = hooks.capture(last_layer);
        }
        let mut out = model
            .forward_step(&input, &mut cache, &hooks)
            .map_err(engine_error)?;
        let mut rows = Vec::new();
        if let Some(h) = out.take(last_layer) {
            for (r, (p, rest)) in reused.into_iter().zip(&rests).enumerate() {
                let n = rest.len() as i64;
                let run = || -> std::result::Result<Span, tch::TchError> {
                    let kv = if kv {
                        (0..model.n_layers())
                            .map(|l| {
                                let (k, v) = cache.layer(l).expect("every layer ran");
                                let at = k.size()[2] - n;
                                Ok((
                                    k.f_narrow(0, r as i64, 1)?.f_narrow(2, at, n)?,
                                    v.f_narrow(0, r as i64, 1)?.f_narrow(2, at, n)?,
                                ))
                            })
                            .collect::<std::result::Result<_, tch::TchError>>()?
                    } else {
                        Vec::new()
                    };
                    Ok(Span {
                        kv,
                        resid: h
                            .f_select(0, r as i64)?
                            .f_narrow(0, longest as i64 - n, n)?,
                        len: rest.len(),
                    })
                };
                let mut p = p;
                p.push(run().map_err(engine_error)?);
                rows.push(p);
            }
        }
        Ok(Prefilled {
            cache,
            logits: out.logits.take(),
            rows,
        })
    }

    /// The log-probability of each prompt token from `start` on (and of the `k` likeliest
    /// tokens there) given the tokens before it, unembedding the final residual stream (of
    /// `pieces`, the whole prompt) a chunk at a time.
    fn prompt_logprobs(
        &self,
        pieces: &Pieces,
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
        let k = k.min(self.model.vocab_size()) as i64;
        let mut j0 = start;
        while j0 < n {
            let j1 = (j0 + PROMPT_CHUNK as usize).min(n);
            let c = (j1 - j0) as i64;
            let targets: Vec<i64> = prompt[j0..j1].iter().map(|&t| i64::from(t)).collect();
            let run = || -> std::result::Result<_, Box<dyn std::error::Error>> {
                // Position j is predicted by the hidden state at j - 1.
                let h = pieces.resid(j0 - 1, j1 - 1)?;
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

/// Prefixes that rows of a batch share beyond the `have` tokens the cache gives each (by at
/// least [`MIN_SHARED`] tokens), leaving each row's last token out: the groups to prefill first,
/// each as (a row, the prefix length), none a prefix of another; and per row, its group and
/// how much of the group's prefix it shares.
#[allow(clippy::type_complexity)]
fn shared_prefixes(
    prompts: &[&[u32]],
    have: &[usize],
) -> (Vec<(usize, usize)>, Vec<Option<(usize, usize)>>) {
    let lcp = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by(|&a, &b| prompts[a].cmp(prompts[b]));
    // In sorted order, a row shares the most with one of its neighbours.
    let mut share = vec![0; prompts.len()];
    for w in order.windows(2) {
        let m = lcp(prompts[w[0]], prompts[w[1]]);
        share[w[0]] = share[w[0]].max(m);
        share[w[1]] = share[w[1]].max(m);
    }
    let mut wanted: Vec<(usize, usize)> = (0..prompts.len())
        .map(|r| (r, share[r].min(prompts[r].len() - 1)))
        .filter(|&(r, len)| len >= have[r] + MIN_SHARED)
        .collect();
    wanted.sort_by_key(|&(_, len)| std::cmp::Reverse(len));
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut members = vec![None; prompts.len()];
    for (r, len) in wanted {
        let within = groups
            .iter()
            .position(|&(g, glen)| prompts[g][..glen].starts_with(&prompts[r][..len]));
        let g = within.unwrap_or_else(|| {
            groups.push((r, len));
            groups.len() - 1
        });
        members[r] = Some((g, len));
    }
    (groups, members)
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
