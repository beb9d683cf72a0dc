//! The transformer: the hooked forward pass over the blocks a family's builder made (see
//! [`crate::arch`]), incremental decoding with a [`KvCache`], and greedy generation.

use std::collections::BTreeMap;

use autointerp_core::HookPoint;
use tch::{Device, Kind, Tensor};

use crate::cache::KvCache;
use crate::config::{Config, LayerAttention};
use crate::decoder::{AttnMask, Block, Ctx, Parts};
use crate::hooks::{Hooks, Logits};
use crate::layers::{Norm, Rope};
use crate::weights::Weights;
use crate::{Error, Result};

/// The inputs of a forward pass.
///
/// `attention_mask` is 1 for real tokens and 0 for padding (left or right); `position_ids`
/// default to what HF generation computes: `cumsum(mask) - 1`, with 1 at padded positions
/// (`0..seq` without a mask), continuing after the cached positions in
/// [`Model::forward_step`].
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Token ids, `[batch, seq]`, int64 (int32 is accepted).
    pub input_ids: &'a Tensor,
    /// `[batch, seq]`, 1 = token, 0 = padding.
    pub attention_mask: Option<&'a Tensor>,
    /// `[batch, seq]` int64.
    pub position_ids: Option<&'a Tensor>,
}

impl<'a> Input<'a> {
    /// Token ids without padding.
    ///
    /// # Shapes
    /// `input_ids`: `[batch, seq]`.
    pub fn new(input_ids: &'a Tensor) -> Self {
        Self {
            input_ids,
            attention_mask: None,
            position_ids: None,
        }
    }

    /// Adds an attention mask.
    ///
    /// # Shapes
    /// `mask`: `[batch, seq]`, like the ids.
    #[must_use]
    pub fn with_attention_mask(mut self, mask: &'a Tensor) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Adds explicit position ids.
    ///
    /// # Shapes
    /// `positions`: `[batch, seq]`, like the ids.
    #[must_use]
    pub fn with_position_ids(mut self, positions: &'a Tensor) -> Self {
        self.position_ids = Some(positions);
        self
    }
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct Output {
    /// `[batch, seq, vocab]` ([`Logits::All`]), `[batch, 1, vocab]` ([`Logits::Last`]), or
    /// `None` ([`Logits::None`]).
    pub logits: Option<Tensor>,
    /// The captured hook points, each `[batch, seq, dim]` (`dim` = d_model, or the MLP width
    /// for [`HookPoint::MlpHidden`]).
    pub captures: BTreeMap<HookPoint, Tensor>,
}

impl Output {
    /// The tensor captured at `point`.
    pub fn get(&self, point: HookPoint) -> Option<&Tensor> {
        self.captures.get(&point)
    }

    /// Removes and returns the tensor captured at `point`.
    pub fn take(&mut self, point: HookPoint) -> Option<Tensor> {
        self.captures.remove(&point)
    }
}

/// Options of [`Model::generate`] (greedy decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// How many tokens to add at most.
    pub max_new_tokens: usize,
    /// Tokens that end a row; once every row has ended, generation stops.
    pub eos_token_ids: Vec<i64>,
    /// What ended rows get instead of further tokens.
    pub pad_token_id: i64,
}

impl GenerateOptions {
    /// `max_new_tokens` tokens, no end token, padding id 0.
    pub fn new(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            eos_token_ids: Vec::new(),
            pad_token_id: 0,
        }
    }

    /// Stops rows at these tokens.
    #[must_use]
    pub fn with_eos_token_ids(mut self, ids: impl IntoIterator<Item = i64>) -> Self {
        self.eos_token_ids = ids.into_iter().collect();
        self
    }

    /// The id given to rows after their end token.
    #[must_use]
    pub fn with_pad_token_id(mut self, id: i64) -> Self {
        self.pad_token_id = id;
        self
    }
}

/// A decoder-only transformer LM on libtorch with named hook points.
///
/// Built by [`Model::load`] and friends; all tensors live on one device in one dtype (Gemma's
/// norm weights stay `f32`, as HF computes those norms in `f32`). `tch::Tensor` is not `Sync`,
/// so neither is the model: keep it on one thread.
#[derive(Debug)]
pub struct Model {
    config: Config,
    device: Device,
    kind: Kind,
    /// `[vocab, d_model]`.
    embed: Tensor,
    /// GPT-2's learned positions, `[n_positions, d_model]`.
    pos_embed: Option<Tensor>,
    /// Gemma's `sqrt(d_model)`, a 0-dim tensor in the model dtype.
    embed_scale: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// `[vocab, d_model]` (the embedding when tied).
    lm_head: Tensor,
    rope: Option<Rope>,
    rope_local: Option<Rope>,
    /// GPT-2's `-inf` on future keys (`Parts::future_neg_inf`).
    future_neg_inf: bool,
}

impl Model {
    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The number of transformer blocks.
    pub fn n_layers(&self) -> usize {
        self.config.num_layers
    }

    /// d_model.
    pub fn d_model(&self) -> usize {
        self.config.hidden_size
    }

    /// The vocabulary size (the logits' last dimension).
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Where the weights live.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The weights' (and activations') dtype.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Every hook point of this model, in forward order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        let mut points = vec![HookPoint::Embed];
        for i in 0..self.n_layers() {
            points.extend([
                HookPoint::Attn(i),
                HookPoint::MlpInput(i),
                HookPoint::MlpHidden(i),
                HookPoint::Mlp(i),
                HookPoint::Residual(i),
            ]);
        }
        points
    }

    /// The last dimension of the tensor at `point`: the MLP width for [`HookPoint::MlpHidden`],
    /// d_model otherwise.
    ///
    /// # Errors
    /// [`Error::HookLayer`] if the layer is out of range.
    pub fn hook_dim(&self, point: HookPoint) -> Result<usize> {
        if point.layer().is_some_and(|l| l >= self.n_layers()) {
            return Err(Error::HookLayer {
                hook: point,
                n_layers: self.n_layers(),
            });
        }
        Ok(match point {
            HookPoint::MlpHidden(_) => self.config.intermediate_size,
            _ => self.config.hidden_size,
        })
    }

    /// Hook point names parsed and checked against this model (layer in range), repeats
    /// dropped; each name may itself be a comma-separated list (`layers.3,layers.5`).
    ///
    /// # Errors
    /// An unknown name ([`Error::Core`]) or a layer out of range ([`Error::HookLayer`]).
    pub fn parse_hook_points(&self, names: &[impl AsRef<str>]) -> Result<Vec<HookPoint>> {
        let mut hooks = Vec::new();
        let names = names.iter().flat_map(|s| s.as_ref().split(','));
        for name in names.map(str::trim).filter(|s| !s.is_empty()) {
            let hook: HookPoint = name.parse()?;
            self.hook_dim(hook)?;
            if !hooks.contains(&hook) {
                hooks.push(hook);
            }
        }
        Ok(hooks)
    }

    /// An empty KV cache for [`Model::forward_step`].
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.n_layers())
    }

    /// A KV cache that already holds `layers` (keys and values kept from earlier steps, e.g. a
    /// shared prompt prefix), as if [`Model::forward_step`] had computed them; `mask` marks
    /// which positions are real (`None`: all). Rows may have masked positions anywhere, not
    /// only on the left: positions are counted over the real ones, so a prefix padded on the
    /// left and a new chunk padded on the left give each token its own position. Models with
    /// sliding-window layers count the window in cache slots, so padding between real tokens
    /// widens it: give them masks with padding on the left only.
    ///
    /// # Shapes
    /// `layers`: one `(keys, values)` per layer, each `[batch, kv_heads, len, head_dim]`;
    /// `mask`: `[batch, len]`.
    ///
    /// # Errors
    /// [`Error::Input`] for the wrong number of layers or inconsistent shapes.
    pub fn cache_from_layers(
        &self,
        layers: Vec<(Tensor, Tensor)>,
        mask: Option<Tensor>,
    ) -> Result<KvCache> {
        if layers.len() != self.n_layers() {
            return Err(Error::Input(format!(
                "{} cached layers for a model of {}",
                layers.len(),
                self.n_layers()
            )));
        }
        let mut cache = self.new_cache();
        let mut shape: Option<Vec<i64>> = None;
        for (i, (k, v)) in layers.into_iter().enumerate() {
            let (ks, vs) = (k.size(), v.size());
            let kv_heads = self.config.num_kv_heads as i64;
            let fits = ks.len() == 4 && ks[1] == kv_heads && vs.len() == 4 && vs[1] == kv_heads;
            let same = shape
                .as_ref()
                .is_none_or(|s| s[0] == ks[0] && s[2] == ks[2]);
            if !fits || !same || ks[..3] != vs[..3] {
                return Err(Error::Input(format!(
                    "layer {i}: keys {ks:?} and values {vs:?} do not fit [batch, {kv_heads}, len, \
                     head_dim] like the other layers"
                )));
            }
            shape.get_or_insert(ks);
            cache.layers[i] = Some((k.f_to_device(self.device)?, v.f_to_device(self.device)?));
        }
        let Some(shape) = shape else {
            return Ok(cache);
        };
        let (batch, len) = (shape[0], shape[2]);
        if let Some(m) = &mask {
            if m.size() != [batch, len] {
                return Err(Error::Input(format!(
                    "cache mask has shape {:?}, the keys [{batch}, {len}]",
                    m.size()
                )));
            }
        }
        cache.mask = mask
            .map(|m| m.f_to_device(self.device)?.f_to_kind(Kind::Int64))
            .transpose()?;
        cache.len = len;
        cache.batch = Some(batch);
        Ok(cache)
    }

    /// Runs the model on a batch: captures and intervenes as `hooks` say and computes the logits
    /// they ask for. With [`Logits::None`] the pass stops right after the deepest captured hook
    /// point (and does nothing at all when nothing is captured).
    ///
    /// # Shapes
    /// `input`: ids `[batch, seq]` → logits `[batch, seq, vocab]` (or `[batch, 1, vocab]`),
    /// captures `[batch, seq, dim]`.
    ///
    /// # Errors
    /// [`Error::Input`] for inputs of the wrong rank, dtype or shape; [`Error::HookLayer`] for a
    /// hook point beyond the last layer; [`Error::Intervention`] when an intervention changes
    /// the shape; [`Error::Torch`] if libtorch fails (e.g. a token id beyond the vocabulary).
    pub fn forward(&self, input: &Input<'_>, hooks: &Hooks) -> Result<Output> {
        self.run(input, hooks, None)
    }

    /// Like [`Model::forward`], but the new positions follow those in `cache`, and their keys
    /// and values are appended to it: call it first with the prompt (the prefill), then with
    /// one token per row at a time. The attention mask, if given, covers the new positions only
    /// (the cache remembers the earlier ones). Every layer runs, whatever the hooks.
    ///
    /// # Shapes
    /// As [`Model::forward`]; the batch must match the cache's.
    ///
    /// # Errors
    /// As [`Model::forward`], and [`Error::Input`] if the batch size differs from the cache's.
    pub fn forward_step(
        &self,
        input: &Input<'_>,
        cache: &mut KvCache,
        hooks: &Hooks,
    ) -> Result<Output> {
        self.run(input, hooks, Some(cache))
    }

    /// Greedy decoding with a KV cache, as HF's `generate(do_sample=False)`: the prompt (left
    /// padded when rows differ in length) is prefilled, then one token per row is added per
    /// step. Rows that produced an end token get `pad_token_id` afterwards; generation stops
    /// after `max_new_tokens` or when every row has ended.
    ///
    /// # Shapes
    /// `input_ids`, `attention_mask`: `[batch, prompt]` → `[batch, prompt + new]`.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn generate(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        options: &GenerateOptions,
    ) -> Result<Tensor> {
        self.generate_with(input_ids, attention_mask, options, Hooks::new())
    }

    /// [`Model::generate`] with `hooks`' interventions applied in every forward step: at every
    /// prompt position in the prefill and at each new token's, as a PyTorch forward hook
    /// stays registered through `generate`. Steering and ablation generate this way (see
    /// `autointerp_sae::edit`). Captures are not kept; only the last position's logits are
    /// computed.
    ///
    /// # Errors
    /// As [`Model::forward`], including a failed intervention.
    pub fn generate_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        options: &GenerateOptions,
        hooks: Hooks,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let mut cache = self.new_cache();
        let hooks = hooks.without_captures().with_logits(Logits::Last);
        let ids = input_ids.f_to_device(self.device)?.f_to_kind(Kind::Int64)?;
        let mut input = Input::new(&ids);
        if let Some(m) = attention_mask {
            input = input.with_attention_mask(m);
        }
        let mut out = self.forward_step(&input, &mut cache, &hooks)?;
        let batch = ids.size()[0];
        let eos = (!options.eos_token_ids.is_empty())
            .then(|| Tensor::from_slice(&options.eos_token_ids).to_device(self.device));
        let mut unfinished = Tensor::f_ones([batch, 1], (Kind::Bool, self.device))?;
        let mut pieces = vec![ids.shallow_clone()];
        let ones = Tensor::f_ones([batch, 1], (Kind::Int64, self.device))?;
        for step in 0..options.max_new_tokens {
            let logits = out
                .logits
                .take()
                .ok_or_else(|| Error::Input("no logits".into()))?;
            let mut next = logits.f_select(1, -1)?.f_argmax(-1, true)?;
            if let Some(eos) = &eos {
                let pad = next.f_full_like(options.pad_token_id)?;
                next = next.f_where_self(&unfinished, &pad)?;
                let ended = Tensor::f_isin(&next, eos, false, false)?;
                unfinished = unfinished.f_logical_and(&ended.f_logical_not()?)?;
            }
            pieces.push(next.shallow_clone());
            if step + 1 == options.max_new_tokens {
                break;
            }
            // One host sync per step, only when there is an end token to watch for.
            if eos.is_some() && unfinished.f_any()?.f_int64_value(&[])? == 0 {
                break;
            }
            let step_input = Input::new(&next).with_attention_mask(&ones);
            out = self.forward_step(&step_input, &mut cache, &hooks)?;
        }
        Ok(Tensor::f_cat(&pieces, 1)?)
    }

    /// Logits of residual-stream vectors: the final norm, the unembedding and (Gemma 2) the
    /// final softcap. Applied to [`HookPoint::Residual`] of the last layer this gives the
    /// model's logits; of an earlier layer, the "logit lens".
    ///
    /// # Shapes
    /// `x`: `[..., d_model]` → `[..., vocab]`.
    ///
    /// # Errors
    /// [`Error::Torch`] if the shape or dtype does not fit.
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let h = self.final_norm.forward(x)?;
        let logits = h.f_linear::<Tensor>(&self.lm_head, None)?;
        Ok(match self.config.final_logit_softcap {
            Some(cap) => logits.f_div_scalar(cap)?.f_tanh()?.f_mul_scalar(cap)?,
            None => logits,
        })
    }

    /// The logit deltas of residual-stream directions, e.g. sparse coders' decoder rows: the
    /// "logit lens" of a direction rather than of an activation. Each direction goes through
    /// the final norm as a direction does (its gain, and LayerNorm's mean subtraction; see
    /// below), then through the unembedding: `W_U · (g ⊙ d)`.
    ///
    /// The norm's division by the activation's own scale is left out, because it belongs to
    /// the context the direction is added to, not to the direction, and it is a positive
    /// factor that leaves the order of the tokens unchanged; for the same reason Gemma 2's
    /// final softcap (a saturation of the total logits) is not applied. LayerNorm's mean
    /// subtraction is kept: it is linear, so it removes the same component from `x + d` as
    /// from `x`, and that component never reaches the unembedding. Gemma's RMSNorm scales by
    /// `1 + w`, as in its forward pass.
    ///
    /// Computed in the model's dtype on its device (the gain in `f32` first).
    ///
    /// # Shapes
    /// `directions`: `[n, d_model]` → `[n, vocab]`.
    ///
    /// # Errors
    /// [`Error::Input`] when the last dimension is not d_model, [`Error::Torch`] if libtorch
    /// fails.
    pub fn direction_logits(&self, directions: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let size = directions.size();
        if size.last().copied() != Some(self.d_model() as i64) {
            return Err(Error::Input(format!(
                "directions of shape {size:?}: the last dimension must be d_model {}",
                self.d_model()
            )));
        }
        let d = directions.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let d = self.final_norm.direction(&d)?;
        Ok(d.f_linear::<Tensor>(&self.lm_head, None)?)
    }

    fn run(
        &self,
        input: &Input<'_>,
        hooks: &Hooks,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Output> {
        let _guard = tch::no_grad_guard();
        hooks.check_layers(self.n_layers())?;
        let ids = input.input_ids;
        if ids.dim() != 2 {
            return Err(Error::Input(format!(
                "input_ids must be [batch, seq], got {:?}",
                ids.size()
            )));
        }
        if !matches!(ids.kind(), Kind::Int64 | Kind::Int) {
            return Err(Error::Input(format!(
                "input_ids must be int64, got {:?}",
                ids.kind()
            )));
        }
        let size = ids.size();
        let (b, s) = (size[0], size[1]);
        if b == 0 || s == 0 {
            return Err(Error::Input(format!("empty input_ids {size:?}")));
        }
        let ids = ids.f_to_device(self.device)?.f_to_kind(Kind::Int64)?;
        let same_shape = |t: &Tensor, what: &str| -> Result<Tensor> {
            if t.size() != size {
                return Err(Error::Input(format!(
                    "{what} has shape {:?}, input_ids {size:?}",
                    t.size()
                )));
            }
            Ok(t.f_to_device(self.device)?.f_to_kind(Kind::Int64)?)
        };
        let new_mask = input
            .attention_mask
            .map(|m| same_shape(m, "attention_mask"))
            .transpose()?;
        let past = cache.as_ref().map_or(0, |c| c.len);
        if let Some(c) = cache.as_ref() {
            if c.batch.is_some_and(|cb| cb != b) {
                return Err(Error::Input(format!(
                    "batch of {b} rows, but the KV cache holds {} rows",
                    c.batch.unwrap_or(0)
                )));
            }
        }
        // The mask over every key position: cached ones, then the new ones.
        let key_mask = match (cache.as_ref().and_then(|c| c.mask.as_ref()), &new_mask) {
            (None, None) => None,
            (None, Some(m)) if past == 0 => Some(m.shallow_clone()),
            (old, new) => {
                let old = match old {
                    Some(o) => o.shallow_clone(),
                    None => Tensor::f_ones([b, past], (Kind::Int64, self.device))?,
                };
                let new = match new {
                    Some(n) => n.shallow_clone(),
                    None => Tensor::f_ones([b, s], (Kind::Int64, self.device))?,
                };
                Some(Tensor::f_cat(&[old, new], 1)?)
            }
        };
        let positions = match (input.position_ids, &key_mask) {
            (Some(p), _) => same_shape(p, "position_ids")?,
            (None, Some(km)) => {
                let pos = km.f_cumsum(-1, Kind::Int64)?.f_sub_scalar(1)?;
                pos.f_masked_fill(&km.f_eq(0)?, 1)?.f_narrow(1, past, s)?
            }
            (None, None) => Tensor::f_arange_start(past, past + s, (Kind::Int64, self.device))?
                .f_unsqueeze(0)?
                .f_expand([b, s], false)?,
        };

        let mut captures = BTreeMap::new();
        let limit = match (hooks.logits(), cache.is_some()) {
            (Logits::None, false) => match hooks.deepest() {
                Some(h) => Some(h.depth()),
                None => {
                    return Ok(Output {
                        logits: None,
                        captures,
                    })
                }
            },
            _ => None,
        };

        let mut x = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
        if let Some(wpe) = &self.pos_embed {
            x = x.f_add(&Tensor::f_embedding(wpe, &positions, -1, false, false)?)?;
        }
        if let Some(scale) = &self.embed_scale {
            x = x.f_mul(scale)?;
        }
        let mut x = hooks.apply(HookPoint::Embed, x, &mut captures)?;
        if limit.is_some_and(|l| HookPoint::Embed.depth() >= l) {
            return Ok(Output {
                logits: None,
                captures,
            });
        }

        let key_ok = key_mask.as_ref().map(|m| m.f_ne(0)).transpose()?;
        let manual = self.config.attn_logit_softcap.is_some();
        let kv_len = past + s;
        let full = self.mask(key_ok.as_ref(), past, s, None, manual)?;
        let sliding = match self.config.sliding_window {
            Some(w) if self.config.layer_types.contains(&LayerAttention::Sliding) => {
                // A window that reaches every key changes nothing.
                let w = w as i64;
                self.mask(key_ok.as_ref(), past, s, (kv_len > w).then_some(w), manual)?
            }
            _ => AttnMask::Nothing,
        };
        let ctx = Ctx {
            rope: self
                .rope
                .as_ref()
                .map(|r| r.cos_sin(&positions, self.kind))
                .transpose()?,
            rope_local: self
                .rope_local
                .as_ref()
                .map(|r| r.cos_sin(&positions, self.kind))
                .transpose()?,
            full,
            sliding,
        };

        for block in &self.blocks {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[block.index]);
            match block.forward(x, &ctx, hooks, &mut captures, limit, slot)? {
                Some(y) => x = y,
                None => {
                    return Ok(Output {
                        logits: None,
                        captures,
                    })
                }
            }
        }
        if let Some(c) = cache {
            c.len = kv_len;
            c.batch = Some(b);
            c.mask = key_mask;
        }
        let logits = match hooks.logits() {
            Logits::All => Some(self.unembed(&x)?),
            Logits::Last => Some(self.unembed(&x.f_narrow(1, s - 1, 1)?)?),
            Logits::None => None,
        };
        Ok(Output { logits, captures })
    }

    /// The attention mask of one layer kind for `s` new queries after `past` cached positions.
    ///
    /// HF (masking_utils): key `kv` is visible to query `q` iff `kv <= q`, the key is not
    /// padding and, with a window, `kv > q - window`; indices count padding. The additive mask
    /// is 0 or the dtype's minimum, so a query that sees nothing (a left-pad position) attends
    /// uniformly to every key, as in HF. GPT-2 adds its own causal mask on top, so there future
    /// keys get -inf and such a query attends uniformly to the keys before it.
    ///
    /// # Shapes
    /// `key_ok`: `[batch, past + s]` bool → mask `[batch or 1, 1, s, past + s]`.
    fn mask(
        &self,
        key_ok: Option<&Tensor>,
        past: i64,
        s: i64,
        window: Option<i64>,
        need_tensor: bool,
    ) -> Result<AttnMask> {
        if key_ok.is_none() && window.is_none() {
            if s == 1 && !need_tensor {
                return Ok(AttnMask::Nothing);
            }
            if past == 0 && !need_tensor {
                return Ok(AttnMask::Causal);
            }
        }
        let kv = past + s;
        let q_idx = Tensor::f_arange_start(past, kv, (Kind::Int64, self.device))?.f_unsqueeze(1)?;
        let k_idx = Tensor::f_arange(kv, (Kind::Int64, self.device))?.f_unsqueeze(0)?;
        let causal = k_idx.f_le_tensor(&q_idx)?;
        let mut allowed = causal.shallow_clone();
        if let Some(w) = window {
            allowed = allowed.f_logical_and(&k_idx.f_gt_tensor(&q_idx.f_sub_scalar(w)?)?)?;
        }
        let mut allowed = allowed.f_view([1, 1, s, kv])?;
        if let Some(k) = key_ok {
            let b = k.size()[0];
            allowed = allowed.f_logical_and(&k.f_view([b, 1, 1, kv])?)?;
        }
        let min = match self.kind {
            Kind::Half => f64::from(half::f16::MIN),
            Kind::BFloat16 => f64::from(half::bf16::MIN),
            _ => f64::from(f32::MIN),
        };
        let mut mask = Tensor::f_where_scalar(&allowed, 0.0, min)?.f_to_kind(self.kind)?;
        if self.future_neg_inf && key_ok.is_some() {
            mask = mask.f_masked_fill(
                &causal.f_logical_not()?.f_view([1, 1, s, kv])?,
                f64::NEG_INFINITY,
            )?;
        }
        Ok(AttnMask::Additive(mask))
    }

    /// Builds the model from `config` and the checkpoint's tensors, with the weight builder
    /// of `config`'s family.
    pub(crate) fn build(config: Config, mut w: Weights) -> Result<Self> {
        let device = w.device;
        let kind = w.kind;
        let Parts {
            embed,
            pos_embed,
            embed_scale,
            blocks,
            final_norm,
            lm_head,
            future_neg_inf,
        } = (config.arch.family().build)(&config, &mut w)?;
        w.finish()?;
        let rope = config
            .rope
            .as_ref()
            .map(|r| Rope::new(r, device))
            .transpose()?;
        let rope_local = config
            .rope_local
            .as_ref()
            .map(|r| Rope::new(r, device))
            .transpose()?;
        tracing::debug!(arch = ?config.arch, layers = config.num_layers, d_model = config.hidden_size, "model built");
        Ok(Self {
            config,
            device,
            kind,
            embed,
            pos_embed,
            embed_scale,
            blocks,
            final_norm,
            lm_head,
            rope,
            rope_local,
            future_neg_inf,
        })
    }
}
