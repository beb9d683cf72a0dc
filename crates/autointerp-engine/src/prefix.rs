//! Prompt prefixes kept between batches: a radix tree keyed by token ids whose nodes hold the
//! keys, values and final residual stream of their span of tokens, evicted least recently used
//! first under a byte budget.
//!
//! Keys and values of position `i` depend only on the tokens up to `i` (causal attention), and
//! RoPE is applied before they are stored, at the token's own position; so a prompt that
//! starts with a stored prefix can take that prefix's keys and values and prefill only the
//! rest, whatever other tokens it ends with.

use std::collections::HashMap;

use tch::Tensor;

/// Keys, values and the last layer's residual stream of consecutive prompt positions.
#[derive(Debug)]
pub(crate) struct Span {
    /// Per layer: keys and values, `[1, kv_heads, len, head_dim]`.
    pub(crate) kv: Vec<(Tensor, Tensor)>,
    /// The last layer's residual stream (what prompt logprobs unembed), `[len, d_model]`.
    pub(crate) resid: Tensor,
    pub(crate) len: usize,
}

type TchResult<T> = std::result::Result<T, tch::TchError>;

fn bytes_of(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

impl Span {
    fn shallow_clone(&self) -> Self {
        Self {
            kv: self
                .kv
                .iter()
                .map(|(k, v)| (k.shallow_clone(), v.shallow_clone()))
                .collect(),
            resid: self.resid.shallow_clone(),
            len: self.len,
        }
    }

    /// Positions `start..start + len`, as views.
    pub(crate) fn narrow(&self, start: usize, len: usize) -> TchResult<Self> {
        let (s, n) = (start as i64, len as i64);
        Ok(Self {
            kv: self
                .kv
                .iter()
                .map(|(k, v)| Ok((k.f_narrow(2, s, n)?, v.f_narrow(2, s, n)?)))
                .collect::<TchResult<_>>()?,
            resid: self.resid.f_narrow(0, s, n)?,
            len,
        })
    }

    fn bytes(&self) -> usize {
        self.kv
            .iter()
            .map(|(k, v)| bytes_of(k) + bytes_of(v))
            .sum::<usize>()
            + bytes_of(&self.resid)
    }
}

/// A prompt's positions from 0 on, as consecutive spans (views of stored or computed tensors).
#[derive(Debug, Default)]
pub(crate) struct Pieces {
    spans: Vec<Span>,
    len: usize,
}

impl Pieces {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, span: Span) {
        self.len += span.len;
        self.spans.push(span);
    }

    /// The first `len` positions, as views.
    pub(crate) fn truncate(&self, len: usize) -> TchResult<Self> {
        let mut out = Self::default();
        for span in &self.spans {
            let take = span.len.min(len - out.len);
            if take == 0 {
                break;
            }
            out.push(span.narrow(0, take)?);
        }
        Ok(out)
    }

    /// The residual stream of positions `start..end`, `[end - start, d_model]`.
    pub(crate) fn resid(&self, start: usize, end: usize) -> TchResult<Tensor> {
        let mut parts = Vec::new();
        let mut at = 0;
        for span in &self.spans {
            let (lo, hi) = (start.max(at), end.min(at + span.len));
            if lo < hi {
                parts.push(span.resid.f_narrow(0, (lo - at) as i64, (hi - lo) as i64)?);
            }
            at += span.len;
        }
        Tensor::f_cat(&parts, 0)
    }

    /// Layer `l`'s keys and values with `pad` zero positions before them, for a batch cache
    /// whose other rows reuse longer prefixes; `like`: `[1, kv_heads, _, head_dim]` keys of
    /// the layer, for the shape of the padding when there is no span.
    ///
    /// # Shapes
    /// → `[1, kv_heads, pad + len, head_dim]` each.
    pub(crate) fn layer_padded(
        &self,
        l: usize,
        pad: usize,
        like: &Tensor,
    ) -> TchResult<(Tensor, Tensor)> {
        let mut ks = Vec::with_capacity(self.spans.len() + 1);
        let mut vs = Vec::with_capacity(self.spans.len() + 1);
        if pad > 0 {
            let size = like.size();
            let zeros = Tensor::f_zeros(
                [1, size[1], pad as i64, size[3]],
                (like.kind(), like.device()),
            )?;
            ks.push(zeros.shallow_clone());
            vs.push(zeros);
        }
        for span in &self.spans {
            ks.push(span.kv[l].0.shallow_clone());
            vs.push(span.kv[l].1.shallow_clone());
        }
        Ok((Tensor::f_cat(&ks, 2)?, Tensor::f_cat(&vs, 2)?))
    }

    /// Some stored keys of layer `l`, `[1, kv_heads, _, head_dim]`.
    pub(crate) fn some_keys(&self, l: usize) -> Option<&Tensor> {
        self.spans.first().map(|s| &s.kv[l].0)
    }

    /// Positions `start..end` in tensors of their own (copies, so that a stored span does not
    /// keep a whole batch's cache alive).
    ///
    /// # Shapes
    /// → keys and values `[1, kv_heads, end - start, head_dim]`, residual `[end - start, d_model]`.
    pub(crate) fn slice(&self, start: usize, end: usize) -> TchResult<Span> {
        let mut parts: Vec<Span> = Vec::new();
        let mut at = 0;
        for span in &self.spans {
            let (lo, hi) = (start.max(at), end.min(at + span.len));
            if lo < hi {
                parts.push(span.narrow(lo - at, hi - lo)?);
            }
            at += span.len;
        }
        let n_layers = self.spans.first().map_or(0, |s| s.kv.len());
        let kv = (0..n_layers)
            .map(|l| {
                let ks: Vec<&Tensor> = parts.iter().map(|p| &p.kv[l].0).collect();
                let vs: Vec<&Tensor> = parts.iter().map(|p| &p.kv[l].1).collect();
                Ok((Tensor::f_cat(&ks, 2)?, Tensor::f_cat(&vs, 2)?))
            })
            .collect::<TchResult<_>>()?;
        let rs: Vec<&Tensor> = parts.iter().map(|p| &p.resid).collect();
        Ok(Span {
            kv,
            resid: Tensor::f_cat(&rs, 0)?,
            len: end - start,
        })
    }
}

/// One node: a span of tokens after its parent's.
#[derive(Debug)]
struct Node {
    tokens: Vec<u32>,
    /// `None` for the root (no tokens).
    span: Option<Span>,
    parent: usize,
    /// By first token.
    children: HashMap<u32, usize>,
    last_used: u64,
}

/// The tree. Node 0 is the root; removed nodes leave free slots.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
    budget: usize,
    bytes: usize,
    clock: u64,
}

impl PrefixCache {
    /// An empty cache that keeps at most `budget` bytes of tensors.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            nodes: vec![Some(Node {
                tokens: Vec::new(),
                span: None,
                parent: 0,
                children: HashMap::new(),
                last_used: 0,
            })],
            free: Vec::new(),
            budget,
            bytes: 0,
            clock: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("a live node")
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("a live node")
    }

    /// Walks down along `tokens` (at most `max` of them), marking the nodes it passes as used:
    /// the deepest node reached, and how many tokens match up to it and within it.
    fn walk(&mut self, tokens: &[u32], max: usize) -> Vec<(usize, usize)> {
        self.clock += 1;
        let clock = self.clock;
        let tokens = &tokens[..max.min(tokens.len())];
        let mut path = Vec::new();
        let mut at = 0;
        let mut node = 0;
        while at < tokens.len() {
            let Some(&child) = self.node(node).children.get(&tokens[at]) else {
                break;
            };
            let own = &self.node(child).tokens;
            let m = own
                .iter()
                .zip(&tokens[at..])
                .take_while(|(a, b)| a == b)
                .count();
            self.node_mut(child).last_used = clock;
            path.push((child, m));
            at += m;
            if m < self.node(child).tokens.len() {
                break;
            }
            node = child;
        }
        path
    }

    /// The longest stored prefix of `tokens`, at most `max` tokens long.
    pub(crate) fn lookup(&mut self, tokens: &[u32], max: usize) -> TchResult<Pieces> {
        let mut pieces = Pieces::default();
        for (i, m) in self.walk(tokens, max) {
            let span = self
                .node(i)
                .span
                .as_ref()
                .expect("only the root has no span");
            pieces.push(if m == span.len {
                span.shallow_clone()
            } else {
                span.narrow(0, m)?
            });
        }
        Ok(pieces)
    }

    /// Stores `tokens`, whose keys, values and residuals `source` holds (positions 0 on): only
    /// what the tree lacks is copied. Then evicts the least recently used leaves until the
    /// cache fits its budget; a new span that would not fit alone is cut to what does. The path just stored is the most recent, so it goes last.
    pub(crate) fn insert(&mut self, tokens: &[u32], source: &Pieces) -> TchResult<()> {
        let n = tokens.len().min(source.len());
        let path = self.walk(tokens, n);
        let at: usize = path.iter().map(|&(_, m)| m).sum();
        let mut parent = 0;
        if let Some(&(last, m)) = path.last() {
            parent = last;
            if m < self.node(last).tokens.len() {
                self.split(last, m)?;
            }
        }
        if at < n {
            let first = source.slice(at, at + 1)?;
            let per_token = first.bytes().max(1);
            let room = self.budget / per_token;
            let end = n.min(at + room);
            if end > at {
                let span = source.slice(at, end)?;
                self.bytes += span.bytes();
                let node = Node {
                    tokens: tokens[at..end].to_vec(),
                    span: Some(span),
                    parent,
                    children: HashMap::new(),
                    last_used: self.clock,
                };
                let id = self.add(node);
                self.node_mut(parent).children.insert(tokens[at], id);
            }
        }
        self.evict();
        Ok(())
    }

    /// Cuts node `i` after its first `m` tokens: the rest becomes its only child.
    fn split(&mut self, i: usize, m: usize) -> TchResult<()> {
        let span = self
            .node(i)
            .span
            .as_ref()
            .expect("only the root has no span");
        let old = span.bytes();
        // Copies, so that each half frees its memory when evicted; made before anything
        // changes, so that a failure leaves the tree as it was.
        let mut whole = Pieces::default();
        whole.push(span.shallow_clone());
        let head = whole.slice(0, m)?;
        let tail = whole.slice(m, whole.len())?;
        self.bytes = self.bytes - old + head.bytes() + tail.bytes();
        let node = self.node_mut(i);
        let tail_tokens = node.tokens.split_off(m);
        let first = tail_tokens[0];
        let tail = Node {
            tokens: tail_tokens,
            span: Some(tail),
            parent: i,
            children: std::mem::take(&mut node.children),
            last_used: node.last_used,
        };
        node.span = Some(head);
        let t = self.add(tail);
        let grandchildren: Vec<usize> = self.node(t).children.values().copied().collect();
        for g in grandchildren {
            self.node_mut(g).parent = t;
        }
        self.node_mut(i).children.insert(first, t);
        Ok(())
    }

    fn add(&mut self, node: Node) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    /// Drops least recently used leaves until the cache fits its budget. Leaves used by the
    /// latest walk are dropped last (a parent is never less recent than its children).
    fn evict(&mut self) {
        while self.bytes > self.budget {
            let victim = self
                .nodes
                .iter()
                .enumerate()
                .skip(1)
                .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
                .filter(|(_, n)| n.children.is_empty())
                .min_by_key(|(_, n)| n.last_used)
                .map(|(i, _)| i);
            let Some(v) = victim else { break };
            let node = self.nodes[v].take().expect("a live node");
            self.free.push(v);
            self.bytes -= node.span.as_ref().map_or(0, Span::bytes);
            self.node_mut(node.parent).children.remove(&node.tokens[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// `len` positions whose every value is the position.
    fn counting_span(len: usize, n_layers: usize) -> Span {
        let pos = Tensor::arange(len as i64, (Kind::Float, tch::Device::Cpu));
        let kv = (0..n_layers)
            .map(|_| {
                let t = pos.view([1, 1, len as i64, 1]).repeat([1, 2, 1, 4]);
                (t.shallow_clone(), t)
            })
            .collect();
        Span {
            kv,
            resid: pos.view([len as i64, 1]).repeat([1, 3]),
            len,
        }
    }

    fn source(len: usize) -> Pieces {
        let mut p = Pieces::default();
        p.push(counting_span(len, 2));
        p
    }

    fn positions(p: &Pieces) -> Vec<f32> {
        let s = p.slice(0, p.len()).unwrap();
        Vec::<f32>::try_from(s.resid.select(1, 0)).unwrap()
    }

    #[test]
    fn a_lookup_finds_the_longest_stored_prefix_even_inside_a_node() {
        let mut cache = PrefixCache::new(usize::MAX);
        cache.insert(&[1, 2, 3, 4, 5], &source(5)).unwrap();
        cache.insert(&[1, 2, 9], &source(3)).unwrap();
        let hit = cache.lookup(&[1, 2, 3, 7], 10).unwrap();
        assert_eq!(positions(&hit), [0.0, 1.0, 2.0]);
        let hit = cache.lookup(&[1, 2, 9, 9], 10).unwrap();
        assert_eq!(hit.len(), 3);
        assert_eq!(cache.lookup(&[1, 2, 3, 4, 5], 4).unwrap().len(), 4);
        assert_eq!(cache.lookup(&[8, 1], 4).unwrap().len(), 0);
        // One copy of the shared [1, 2]: 5 + 1 positions stored.
        let per_position = source(1).slice(0, 1).unwrap().bytes();
        assert_eq!(cache.bytes(), 6 * per_position);
    }

    #[test]
    fn the_least_recently_used_leaf_goes_first() {
        let per_position = source(1).slice(0, 1).unwrap().bytes();
        let mut cache = PrefixCache::new(8 * per_position);
        cache.insert(&[1, 2, 3, 4], &source(4)).unwrap();
        cache.insert(&[1, 2, 5, 6], &source(4)).unwrap();
        cache.lookup(&[1, 2, 3], 3).unwrap();
        // [7, 8, 9] needs room: the leaf [5, 6] is the least recent.
        cache.insert(&[7, 8, 9], &source(3)).unwrap();
        assert!(cache.bytes() <= 8 * per_position);
        assert_eq!(cache.lookup(&[1, 2, 5, 6], 4).unwrap().len(), 2);
        assert_eq!(cache.lookup(&[1, 2, 3, 4], 4).unwrap().len(), 4);
        assert_eq!(cache.lookup(&[7, 8, 9], 3).unwrap().len(), 3);
        // Too long to fit at all: the first eight positions are kept.
        cache.insert(&[4; 20], &source(20)).unwrap();
        assert_eq!(cache.lookup(&[4; 20], 20).unwrap().len(), 8);
        assert!(cache.bytes() <= 8 * per_position);
    }
}
