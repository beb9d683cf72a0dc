//! The key/value cache of incremental decoding.

use tch::Tensor;

/// Keys and values of the positions a model has seen, per layer, plus their attention mask.
///
/// Made by [`Model::new_cache`](crate::Model::new_cache) and filled by
/// [`Model::forward_step`](crate::Model::forward_step): the first call (the prefill) sets the
/// batch size, later calls append positions. Sliding-window layers keep every position and
/// mask the old ones, which gives the same result as HF's window-sized cache. After a
/// forward step fails, discard the cache: some layers may hold the failed step's positions.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys and values `[batch, kv_heads, len, head_dim]`.
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[batch, len]` int64 0/1; `None` while every position so far is real.
    pub(crate) mask: Option<Tensor>,
    pub(crate) len: i64,
    pub(crate) batch: Option<i64>,
}

impl KvCache {
    pub(crate) fn new(n_layers: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| None).collect(),
            mask: None,
            len: 0,
            batch: None,
        }
    }

    /// The number of positions cached (padding included).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch size, once the first step has run.
    pub fn batch_size(&self) -> Option<usize> {
        self.batch.map(|b| b as usize)
    }

    /// The attention mask of the cached positions, `[batch, len]` int64; `None` when all are real.
    pub fn attention_mask(&self) -> Option<&Tensor> {
        self.mask.as_ref()
    }

    /// The keys and values of layer `i`, each `[batch, kv_heads, len, head_dim]`; `None` before
    /// the first step or beyond the last layer.
    pub fn layer(&self, i: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers.get(i)?.as_ref().map(|(k, v)| (k, v))
    }

    /// Empties the cache so that it can serve another batch.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
        self.mask = None;
        self.len = 0;
        self.batch = None;
    }
}
