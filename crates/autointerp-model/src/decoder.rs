//! The blocks every family is made of: attention, the MLP and the residual block that joins
//! them with its hook points, plus [`Parts`], what a family's weight builder hands the model.
//! Families differ only in how their weights fill these structs (see [`crate::arch`]).

use std::collections::BTreeMap;

use autointerp_core::HookPoint;
use tch::{Kind, Tensor};

use crate::config::{Activation, Config, LayerAttention};
use crate::hooks::Hooks;
use crate::layers::{activate, apply_rope, Linear, Norm};
use crate::weights::Weights;
use crate::Result;

/// What a family's weight builder produces; [`crate::Model`] adds the RoPE tables.
pub(crate) struct Parts {
    /// `[vocab, d_model]`.
    pub(crate) embed: Tensor,
    /// Learned positions (GPT-2), `[n_positions, d_model]`.
    pub(crate) pos_embed: Option<Tensor>,
    /// A factor on the embeddings (Gemma's `sqrt(d_model)`), a 0-dim tensor in the model dtype.
    pub(crate) embed_scale: Option<Tensor>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) final_norm: Norm,
    /// `[vocab, d_model]` (the embedding when tied).
    pub(crate) lm_head: Tensor,
    /// Future keys get `-inf` rather than the dtype's minimum when there is padding: GPT-2
    /// applies its own causal mask on top of the padding mask, which changes what a query that
    /// sees no key (a left-pad position) attends to.
    pub(crate) future_neg_inf: bool,
}

impl Parts {
    /// A model without learned positions or an embedding scale, masked as most families are.
    pub(crate) fn new(
        embed: Tensor,
        blocks: Vec<Block>,
        final_norm: Norm,
        lm_head: Tensor,
    ) -> Self {
        Self {
            embed,
            pos_embed: None,
            embed_scale: None,
            blocks,
            final_norm,
            lm_head,
            future_neg_inf: false,
        }
    }
}

/// The unembedding `name` (`[vocab, d_model]`), or `embed` itself when `c` ties them (a copy
/// the checkpoint may still hold is then left unread).
pub(crate) fn lm_head(c: &Config, w: &mut Weights, embed: &Tensor, name: &str) -> Result<Tensor> {
    if c.tie_word_embeddings {
        w.ignore(name);
        Ok(embed.shallow_clone())
    } else {
        w.get(name, &[c.vocab_size as i64, c.hidden_size as i64])
    }
}

/// `(d_model, vocab, intermediate, heads, kv_heads, head_dim)` as tensor sizes.
pub(crate) fn sizes(c: &Config) -> (i64, i64, i64, i64, i64, i64) {
    (
        c.hidden_size as i64,
        c.vocab_size as i64,
        c.intermediate_size as i64,
        c.num_heads as i64,
        c.num_kv_heads as i64,
        c.head_dim as i64,
    )
}

/// How a layer masks attention in one forward pass.
pub(crate) enum AttnMask {
    /// Every key is visible (one new query, no padding, no window in reach).
    Nothing,
    /// Plain causal: SDPA's `is_causal`.
    Causal,
    /// Added to the scores: 0 where allowed, the dtype's minimum (or -inf) elsewhere.
    /// `[batch or 1, 1, seq, kv_len]`.
    Additive(Tensor),
}

/// Per-forward values shared by all layers.
pub(crate) struct Ctx {
    pub(crate) rope: Option<(Tensor, Tensor)>,
    pub(crate) rope_local: Option<(Tensor, Tensor)>,
    pub(crate) full: AttnMask,
    pub(crate) sliding: AttnMask,
}

#[derive(Debug)]
pub(crate) struct Attention {
    /// q, k and v fused: `[(heads + 2 kv_heads) * head_dim, d_model]`.
    qkv: Linear,
    o: Linear,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
    scale: f64,
    softcap: Option<f64>,
}

impl Attention {
    /// # Shapes
    /// `x`: `[batch, seq, d_model]` → `[batch, seq, d_model]`.
    fn forward(
        &self,
        x: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        mask: &AttnMask,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let size = x.size();
        let (b, s) = (size[0], size[1]);
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let qkv = self.qkv.forward(x)?;
        let q = qkv.f_narrow(-1, 0, nh * hd)?.f_reshape([b, s, nh, hd])?;
        let k = qkv
            .f_narrow(-1, nh * hd, nkv * hd)?
            .f_reshape([b, s, nkv, hd])?;
        let v = qkv
            .f_narrow(-1, (nh + nkv) * hd, nkv * hd)?
            .f_reshape([b, s, nkv, hd])?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let (mut q, mut k, mut v) = (
            q.f_transpose(1, 2)?,
            k.f_transpose(1, 2)?,
            v.f_transpose(1, 2)?,
        );
        if let Some((cos, sin)) = rope {
            q = apply_rope(&q, cos, sin)?;
            k = apply_rope(&k, cos, sin)?;
        }
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::f_cat(&[pk, &k], 2)?;
                v = Tensor::f_cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        let out = match self.softcap {
            None => self.sdpa(&q, &k, &v, mask)?,
            Some(cap) => self.softcapped(&q, &k, &v, mask, cap)?,
        };
        let out = out.f_transpose(1, 2)?.f_reshape([b, s, nh * hd])?;
        self.o.forward(&out)
    }

    /// Repeats each kv head for its `heads / kv_heads` query heads (HF's `repeat_kv`).
    ///
    /// # Shapes
    /// `t`: `[batch, kv_heads, len, head_dim]` → `[batch, heads, len, head_dim]`.
    fn repeat_kv(&self, t: &Tensor) -> Result<Tensor> {
        let n_rep = self.n_heads / self.n_kv_heads;
        if n_rep == 1 {
            return Ok(t.shallow_clone());
        }
        let s = t.size();
        Ok(t.f_unsqueeze(2)?
            .f_expand([s[0], s[1], n_rep, s[2], s[3]], false)?
            .f_reshape([s[0], s[1] * n_rep, s[2], s[3]])?)
    }

    /// libtorch's fused attention.
    ///
    /// # Shapes
    /// `q`: `[batch, heads, seq, head_dim]`; `k`, `v`: `[batch, kv_heads, kv_len, head_dim]`
    /// → `[batch, heads, seq, head_dim]`.
    fn sdpa(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttnMask) -> Result<Tensor> {
        let (m, causal) = match mask {
            AttnMask::Nothing => (None, false),
            AttnMask::Causal => (None, true),
            AttnMask::Additive(m) => (Some(m), false),
        };
        // enable_gqa: libtorch pairs each kv head with its query heads itself (no copy).
        Ok(Tensor::f_scaled_dot_product_attention(
            q,
            k,
            v,
            m,
            0.0,
            causal,
            Some(self.scale),
            self.n_heads != self.n_kv_heads,
        )?)
    }

    /// Gemma 2's eager attention: `softmax(tanh(q·k * scale / cap) * cap + mask)` in `f32`.
    ///
    /// # Shapes
    /// As [`Attention::sdpa`].
    fn softcapped(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &AttnMask,
        cap: f64,
    ) -> Result<Tensor> {
        let (k, v) = (self.repeat_kv(k)?, self.repeat_kv(v)?);
        let scores = q
            .f_matmul(&k.f_transpose(2, 3)?)?
            .f_mul_scalar(self.scale)?;
        let mut scores = scores.f_div_scalar(cap)?.f_tanh()?.f_mul_scalar(cap)?;
        match mask {
            AttnMask::Additive(m) => scores = scores.f_add(m)?,
            AttnMask::Nothing => {}
            AttnMask::Causal => unreachable!("softcapped layers always get an additive mask"),
        }
        let probs = scores.f_softmax(-1, Kind::Float)?.f_to_kind(q.kind())?;
        Ok(probs.f_matmul(&v)?)
    }
}

#[derive(Debug)]
pub(crate) struct Mlp {
    /// Gated: gate and up fused, `[2 * inter, d_model]`; else the first projection.
    up: Linear,
    down: Linear,
    act: Activation,
    gated: bool,
    inter: i64,
}

impl Mlp {
    /// The input of the down projection.
    ///
    /// # Shapes
    /// `x`: `[batch, seq, d_model]` → `[batch, seq, inter]`.
    fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.up.forward(x)?;
        if self.gated {
            let gate = h.f_narrow(-1, 0, self.inter)?;
            let up = h.f_narrow(-1, self.inter, self.inter)?;
            Ok(activate(self.act, &gate)?.f_mul(&up)?)
        } else {
            activate(self.act, &h)
        }
    }
}

#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) index: usize,
    ln1: Norm,
    attn: Attention,
    /// Gemma's norm of what attention adds.
    pub(crate) post_attn_norm: Option<Norm>,
    ln2: Norm,
    mlp: Mlp,
    /// Gemma's norm of what the MLP adds.
    pub(crate) post_mlp_norm: Option<Norm>,
    /// GPT-NeoX's parallel residual.
    pub(crate) parallel: bool,
    sliding: bool,
    local_rope: bool,
}

impl Block {
    /// Runs the block, applying hooks; `None` when `limit` (a hook depth) was reached inside it.
    ///
    /// # Shapes
    /// `x`: `[batch, seq, d_model]` → same.
    pub(crate) fn forward(
        &self,
        x: Tensor,
        ctx: &Ctx,
        hooks: &Hooks,
        captures: &mut BTreeMap<HookPoint, Tensor>,
        limit: Option<(usize, u8)>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Option<Tensor>> {
        let i = self.index;
        let done = |p: HookPoint| limit.is_some_and(|l| p.depth() >= l);
        let rope = if self.local_rope {
            ctx.rope_local.as_ref()
        } else {
            ctx.rope.as_ref()
        };
        let mask = if self.sliding {
            &ctx.sliding
        } else {
            &ctx.full
        };
        let mut a = self
            .attn
            .forward(&self.ln1.forward(&x)?, rope, mask, cache)?;
        if let Some(n) = &self.post_attn_norm {
            a = n.forward(&a)?;
        }
        let a = hooks.apply(HookPoint::Attn(i), a, captures)?;
        if done(HookPoint::Attn(i)) {
            return Ok(None);
        }
        // Parallel (GPT-NeoX): the MLP reads the block input; sequential: the updated residual.
        let (mlp_in, residual) = if self.parallel {
            (self.ln2.forward(&x)?, None)
        } else {
            let h = x.f_add(&a)?;
            (self.ln2.forward(&h)?, Some(h))
        };
        let mlp_in = hooks.apply(HookPoint::MlpInput(i), mlp_in, captures)?;
        if done(HookPoint::MlpInput(i)) {
            return Ok(None);
        }
        let hidden = hooks.apply(HookPoint::MlpHidden(i), self.mlp.hidden(&mlp_in)?, captures)?;
        if done(HookPoint::MlpHidden(i)) {
            return Ok(None);
        }
        let mut m = self.mlp.down.forward(&hidden)?;
        if let Some(n) = &self.post_mlp_norm {
            m = n.forward(&m)?;
        }
        let m = hooks.apply(HookPoint::Mlp(i), m, captures)?;
        if done(HookPoint::Mlp(i)) {
            return Ok(None);
        }
        let out = match residual {
            // HF NeoX: mlp_output + attn_output + hidden_states.
            None => m.f_add(&a)?.f_add(&x)?,
            Some(h) => h.f_add(&m)?,
        };
        let out = hooks.apply(HookPoint::Residual(i), out, captures)?;
        if done(HookPoint::Residual(i)) {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

impl Attention {
    /// Attention with `qkv` the fused q, k and v projections (`[(heads + 2 kv_heads) *
    /// head_dim, d_model]`), heads, scale and softcap as `c` says.
    pub(crate) fn new(
        c: &Config,
        qkv: Linear,
        o: Linear,
        q_norm: Option<Norm>,
        k_norm: Option<Norm>,
    ) -> Self {
        Self {
            qkv,
            o,
            q_norm,
            k_norm,
            n_heads: c.num_heads as i64,
            n_kv_heads: c.num_kv_heads as i64,
            head_dim: c.head_dim as i64,
            scale: c.attn_scale,
            softcap: c.attn_logit_softcap,
        }
    }
}

impl Mlp {
    /// `down(act(gate(x)) * up(x))` with `up` the gate and up projections fused (`[2 * inter,
    /// d_model]`), or with `gated` false `down(act(up(x)))`.
    pub(crate) fn new(c: &Config, up: Linear, down: Linear, gated: bool) -> Self {
        Self {
            up,
            down,
            act: c.activation,
            gated,
            inter: c.intermediate_size as i64,
        }
    }
}

impl Block {
    /// Block `index` as most families have it: `x + attn(ln1(x))`, then `h + mlp(ln2(h))`; set
    /// the public fields for Gemma's post-branch norms or NeoX's parallel residual.
    pub(crate) fn new(
        c: &Config,
        index: usize,
        ln1: Norm,
        attn: Attention,
        ln2: Norm,
        mlp: Mlp,
    ) -> Self {
        Self {
            index,
            ln1,
            attn,
            post_attn_norm: None,
            ln2,
            mlp,
            post_mlp_norm: None,
            parallel: false,
            sliding: c.layer_types[index] == LayerAttention::Sliding,
            local_rope: c.uses_local_rope(index),
        }
    }
}
