//! The dataset: which latents of which hook points, and the lazy, parallel record iterator.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use autointerp_core::split::Tokens;
use autointerp_core::{Example, HookPoint, LatentId, LatentRecord, LatentStats, VocabProjection};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::cache::{Grouped, Hit, HookCache, LatentCache};
use crate::config::{LatentsConfig, NonActivatingSource};
use crate::constructor::{activating_windows, example, window_activations, Activating, WindowGrid};
use autointerp_core::Embedder;

use crate::embedding::{embed_normalized, EmbeddingPool};
use crate::neighbours::{NeighbourLists, WindowIndex};
use crate::non_activating::random_windows;
use crate::sampler::{sample, Pick};
use crate::{Error, Result};

/// Turns token ids into display text (the tokenizer lives in the model crate; this crate does
/// not depend on it). Any `Fn(u32) -> String + Send + Sync` closure is a `Decode`.
pub trait Decode: Send + Sync {
    /// The text of one token on its own.
    fn decode(&self, token: u32) -> String;

    /// The text of each token of a window; override when a batch call is cheaper.
    fn decode_all(&self, tokens: &[u32]) -> Vec<String> {
        tokens.iter().map(|&t| self.decode(t)).collect()
    }
}

impl<F: Fn(u32) -> String + Send + Sync> Decode for F {
    fn decode(&self, token: u32) -> String {
        self(token)
    }
}

/// A latent's record, with the firing statistics `LatentStats` has no field for.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltRecord {
    /// The record: train and test examples, non-activating examples, stats.
    pub record: LatentRecord,
    /// Aligned `example_ctx_len`-token windows in the cache (delphi's contexts).
    pub n_windows: u64,
    /// Those in which the latent fires at least once.
    pub n_active_windows: u64,
}

impl BuiltRecord {
    /// Nonzero activations per cached token (delphi's `per_token_frequency`).
    pub fn per_token_frequency(&self) -> f64 {
        self.record.stats.firing_rate()
    }

    /// Fraction of windows in which the latent fires (delphi's `per_context_frequency`).
    pub fn per_context_frequency(&self) -> f64 {
        if self.n_windows == 0 {
            0.0
        } else {
            self.n_active_windows as f64 / self.n_windows as f64
        }
    }
}

/// Records of chosen latents of a [`LatentCache`], built lazily and in parallel.
///
/// Made by [`LatentDataset::builder`]. [`LatentDataset::records`] reads one split file at a time
/// (every shard's copy of it), groups its nonzeros by latent, and builds the records of its
/// latents in parallel on the current rayon pool, `batch` latents at a time, so memory holds one
/// split's nonzeros of the chosen latents, the token grid of one hook point and one batch of
/// records. Records come out in order (hook point, then latent) and are the same for the same
/// config and cache whatever the thread count. Cheap to clone.
#[derive(Clone)]
pub struct LatentDataset {
    inner: Arc<Inner>,
}

struct Inner {
    cache: LatentCache,
    cfg: LatentsConfig,
    /// Hook points (index into `cache.hooks()`) with their chosen latents (`None`: all), sorted.
    selection: Vec<(usize, Option<Vec<u32>>)>,
    decode: Arc<dyn Decode>,
    neighbours: HashMap<HookPoint, Arc<NeighbourLists>>,
    embedder: Option<Arc<dyn Embedder>>,
    batch: usize,
}

impl std::fmt::Debug for LatentDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatentDataset")
            .field("cache", &self.inner.cache.path())
            .field("cfg", &self.inner.cfg)
            .field("hooks", &self.inner.selection.len())
            .finish_non_exhaustive()
    }
}

/// Chooses what a [`LatentDataset`] covers and what it needs; [`DatasetBuilder::build`] checks it.
#[must_use]
pub struct DatasetBuilder {
    cache: LatentCache,
    cfg: LatentsConfig,
    decode: Arc<dyn Decode>,
    hooks: Option<Vec<HookPoint>>,
    latents: BTreeMap<HookPoint, Vec<u32>>,
    neighbours: HashMap<HookPoint, Arc<NeighbourLists>>,
    embedder: Option<Arc<dyn Embedder>>,
    batch: usize,
}

impl LatentDataset {
    /// Starts a dataset over every latent of every hook point of `cache`; `decode` turns token ids
    /// into the examples' display text.
    pub fn builder(
        cache: LatentCache,
        cfg: LatentsConfig,
        decode: impl Decode + 'static,
    ) -> DatasetBuilder {
        DatasetBuilder {
            cache,
            cfg,
            decode: Arc::new(decode),
            hooks: None,
            latents: BTreeMap::new(),
            neighbours: HashMap::new(),
            embedder: None,
            batch: 256,
        }
    }

    /// The cache read.
    pub fn cache(&self) -> &LatentCache {
        &self.inner.cache
    }

    /// The config records are built with.
    pub fn config(&self) -> &LatentsConfig {
        &self.inner.cfg
    }

    /// The latents covered (records are built for those with at least `min_examples` examples).
    pub fn latents(&self) -> Vec<LatentId> {
        let mut out = Vec::new();
        for (h, chosen) in &self.inner.selection {
            let hook = &self.inner.cache.hooks()[*h];
            match chosen {
                Some(ls) => out.extend(ls.iter().map(|&l| LatentId::new(hook.hook(), l))),
                None => out.extend((0..hook.width()).map(|l| LatentId::new(hook.hook(), l))),
            }
        }
        out
    }

    /// Every covered latent's record, lazily: see [`Records`].
    pub fn records(&self) -> Records {
        Records {
            ds: self.clone(),
            next_hook: 0,
            state: None,
            next_split: 0,
            current: None,
            prefetch: None,
            ready: VecDeque::new(),
            skipped: 0,
        }
    }

    /// The record of one latent, reading only its split file; `None` when it has fewer than
    /// `min_examples` activating examples.
    pub fn record(&self, id: LatentId) -> Result<Option<BuiltRecord>> {
        let cache = &self.inner.cache;
        let h = cache
            .hooks()
            .iter()
            .position(|c| c.hook() == id.hookpoint)
            .ok_or_else(|| Error::HookNotCached {
                hook: id.hookpoint.to_string(),
                cached: cache.hooks().iter().map(|c| c.name().to_string()).collect(),
            })?;
        let hook = &cache.hooks()[h];
        let split = hook
            .split_of(id.index)
            .ok_or_else(|| hook.not_cached(id.index))?;
        let state = self.hook_state(h, Some(&[id.index]))?;
        let grouped = hook.read_grouped(split, &|l| l == id.index)?;
        self.build_one(&state, id.index, grouped.hits(id.index))
    }

    /// The chosen latents of selection entry `sel` held by split `split`, ascending.
    fn latents_in_split(&self, sel: usize, split: usize) -> VecDeque<u32> {
        let (h, chosen) = &self.inner.selection[sel];
        let range = &self.inner.cache.hooks()[*h].splits()[split];
        match chosen {
            None => (range.start..=range.end).collect(),
            Some(ls) => ls
                .iter()
                .copied()
                .filter(|l| (range.start..=range.end).contains(l))
                .collect(),
        }
    }

    /// The first split from `from` on that holds chosen latents of selection entry `sel`.
    fn next_split(&self, sel: usize, from: usize) -> Option<usize> {
        let (h, chosen) = &self.inner.selection[sel];
        let splits = self.inner.cache.hooks()[*h].splits();
        (from..splits.len()).find(|&s| match chosen {
            None => true,
            Some(ls) => ls
                .iter()
                .any(|l| (splits[s].start..=splits[s].end).contains(l)),
        })
    }

    /// Reads split `split` of selection entry `sel`, grouped by latent, keeping the chosen latents.
    fn read_split(&self, sel: usize, split: usize) -> Result<Grouped> {
        let (h, chosen) = &self.inner.selection[sel];
        let hook = &self.inner.cache.hooks()[*h];
        match chosen {
            None => hook.read_grouped(split, &|_| true),
            Some(ls) => hook.read_grouped(split, &|l| ls.binary_search(&l).is_ok()),
        }
    }

    /// Loads what every record of hook point `h` shares: the token grid, and the neighbours'
    /// windows or the embedding pool when the config asks for them.
    fn hook_state(&self, h: usize, latents: Option<&[u32]>) -> Result<HookState> {
        let inner = &self.inner;
        let hook = &inner.cache.hooks()[h];
        let c = &inner.cfg.constructor;
        let tokens = hook.read_tokens()?;
        let grid = WindowGrid::new(tokens.rows, tokens.ctx_len, c.example_ctx_len);
        let mut state = HookState {
            h,
            tokens,
            grid,
            neighbours: None,
            pool: None,
            vocab: hook.vocab_projection(),
        };
        match c.non_activating_source {
            NonActivatingSource::Random => {}
            NonActivatingSource::Neighbours => {
                let lists = inner
                    .neighbours
                    .get(&hook.hook())
                    .ok_or_else(|| Error::MissingNeighbours(hook.name().into()))?;
                let mut wanted: Vec<u32> = match latents {
                    Some(ls) => ls
                        .iter()
                        .flat_map(|&l| lists.get(l).iter().map(|n| n.latent))
                        .collect(),
                    None => (0..hook.width())
                        .flat_map(|l| lists.get(l).iter().map(|n| n.latent))
                        .collect(),
                };
                wanted.sort_unstable();
                wanted.dedup();
                let index = WindowIndex::build(hook, &grid, &wanted, c.neighbour_windows)?;
                state.neighbours = Some((Arc::clone(lists), index));
            }
            NonActivatingSource::Embedding => {
                let embedder = inner.embedder.as_deref().ok_or(Error::MissingEmbedder)?;
                let mut rng = stream(inner.cfg.seed, hook.hook(), u32::MAX, Purpose::Pool);
                state.pool = Some(EmbeddingPool::build(
                    &grid,
                    &state.tokens,
                    inner.decode.as_ref(),
                    embedder,
                    c.embedding_pool,
                    &mut rng,
                )?);
            }
        }
        Ok(state)
    }

    /// Builds one latent's record from its hits (sorted by row, position).
    fn build_one(&self, st: &HookState, latent: u32, hits: &[Hit]) -> Result<Option<BuiltRecord>> {
        let inner = &self.inner;
        let c = &inner.cfg.constructor;
        let hook = &inner.cache.hooks()[st.h];
        let decode = inner.decode.as_ref();
        let max = hits.iter().map(|h| h.act).fold(0.0f32, f32::max);
        let stats = LatentStats {
            n_activations: hits.len() as u64,
            n_tokens: hook.n_tokens(),
            max_activation: max,
        };
        let act = activating_windows(hits, &st.grid, c.center_examples, c.max_examples);
        if act.windows.is_empty() || act.windows.len() < c.min_examples {
            tracing::debug!(latent = %LatentId::new(hook.hook(), latent), examples = act.windows.len(), "skipped: too few examples");
            return Ok(None);
        }
        let picks = sample(
            act.windows.len(),
            &inner.cfg.sampler,
            &mut stream(inner.cfg.seed, hook.hook(), latent, Purpose::Sampler),
        );
        let activating = |p: &Pick| {
            let w = act.windows[p.rank];
            let acts = window_activations(hits, w.row, w.start, c.example_ctx_len);
            let mut e = example(&st.tokens, w.row, w.start, acts, max, decode);
            e.quantile = p.quantile;
            e
        };
        let train = picks.train.iter().map(activating).collect();
        let test = picks.test.iter().map(activating).collect();
        let non_activating = self.non_activating(st, latent, &act)?;
        Ok(Some(BuiltRecord {
            record: LatentRecord {
                id: LatentId::new(hook.hook(), latent),
                train,
                test,
                non_activating,
                stats,
                logits: st
                    .vocab
                    .as_ref()
                    .and_then(|p| p.logits(latent, |t| decode.decode(t))),
            },
            n_windows: st.grid.n_windows(),
            n_active_windows: act.active.len() as u64,
        }))
    }

    /// The record's non-activating examples: windows where `latent` never fires. Those taken
    /// from a neighbour carry the neighbour's activations (delphi's contrastive examples); the
    /// others carry zeros. Scorers label them by the list they are in, never by their
    /// activations.
    fn non_activating(
        &self,
        st: &HookState,
        latent: u32,
        act: &Activating,
    ) -> Result<Vec<Example>> {
        let inner = &self.inner;
        let c = &inner.cfg.constructor;
        let hook = st.hook(&inner.cache);
        let n = c.n_non_activating;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut rng = stream(inner.cfg.seed, hook.hook(), latent, Purpose::NonActivating);
        let random = |rng: &mut ChaCha8Rng| -> Vec<Silent> {
            random_windows(&act.active, st.grid.n_windows(), n, rng)
                .into_iter()
                .map(|window| Silent {
                    window,
                    distance: None,
                    neighbour: None,
                })
                .collect()
        };
        let chosen: Vec<Silent> = match (&st.neighbours, &st.pool) {
            (Some((lists, index)), _) => {
                let mut used = HashSet::new();
                let mut out = Vec::new();
                for nb in lists.get(latent) {
                    let mut from_this = 0;
                    for w in index.windows(nb.latent) {
                        if out.len() >= n || from_this >= c.n_examples_per_neighbour {
                            break;
                        }
                        if act.active.binary_search(&w.id).is_err() && used.insert(w.id) {
                            // The neighbour's own activations, as delphi keeps them: fuzzing and
                            // intruder highlight where the neighbour fires, which looks like the
                            // latent's firing but is not.
                            out.push(Silent {
                                window: w.id,
                                distance: Some(1.0 - nb.similarity),
                                neighbour: Some((
                                    w.activations(c.example_ctx_len),
                                    index.peak(nb.latent),
                                )),
                            });
                            from_this += 1;
                        }
                    }
                    if out.len() >= n {
                        break;
                    }
                }
                if out.is_empty() {
                    // No neighbour fires where this latent does not: fall back to random windows,
                    // as delphi does.
                    random(&mut rng)
                } else {
                    out
                }
            }
            (None, Some(pool)) => {
                let texts: Vec<String> = act
                    .windows
                    .iter()
                    .take(c.embedding_queries.max(1))
                    .map(|w| {
                        let ids = &st.tokens.row(w.row as usize)
                            [w.start as usize..w.start as usize + c.example_ctx_len];
                        inner.decode.decode_all(ids).concat()
                    })
                    .collect();
                let embedder = inner.embedder.as_deref().ok_or(Error::MissingEmbedder)?;
                let queries = embed_normalized(embedder, &texts)?;
                pool.nearest(&queries, &act.active, n)
                    .into_iter()
                    .map(|(window, sim)| Silent {
                        window,
                        distance: Some(1.0 - sim),
                        neighbour: None,
                    })
                    .collect()
            }
            (None, None) => random(&mut rng),
        };
        Ok(chosen
            .into_iter()
            .map(|s| {
                let (row, start) = st.grid.bounds(s.window);
                let (acts, max) = s
                    .neighbour
                    .unwrap_or_else(|| (vec![0.0; c.example_ctx_len], 1.0));
                let mut e = example(&st.tokens, row, start, acts, max, inner.decode.as_ref());
                e.distance = s.distance;
                e
            })
            .collect())
    }
}

/// A non-activating window chosen for a record.
struct Silent {
    window: u32,
    /// 1 − similarity, for windows found by similarity.
    distance: Option<f32>,
    /// With neighbour windows: the neighbour's activations there, and its largest activation
    /// (their normalisation scale).
    neighbour: Option<(Vec<f32>, f32)>,
}

impl DatasetBuilder {
    /// Covers only these hook points (all their latents unless [`DatasetBuilder::latents`] narrows
    /// one). Without this, the hook points given to `latents` are covered, or every hook point.
    pub fn hooks(mut self, hooks: impl IntoIterator<Item = HookPoint>) -> Self {
        self.hooks = Some(hooks.into_iter().collect());
        self
    }

    /// Covers only these latents of `hook`; only the split files holding them are read.
    pub fn latents(mut self, hook: HookPoint, latents: impl IntoIterator<Item = u32>) -> Self {
        self.latents.entry(hook).or_default().extend(latents);
        self
    }

    /// Neighbour lists of `hook`, needed when `non_activating_source` is `neighbours`.
    pub fn neighbours(mut self, hook: HookPoint, lists: NeighbourLists) -> Self {
        self.neighbours.insert(hook, Arc::new(lists));
        self
    }

    /// The sentence embedder, needed when `non_activating_source` is `embedding`.
    pub fn embedder(mut self, embedder: impl Embedder + 'static) -> Self {
        self.embedder = Some(Arc::new(embedder));
        self
    }

    /// Latents whose records are built in parallel at a time (default 256): the most records
    /// held in memory at once.
    pub fn batch(mut self, latents: usize) -> Self {
        self.batch = latents.max(1);
        self
    }

    /// Checks the config against the cache and the choices made.
    pub fn build(self) -> Result<LatentDataset> {
        self.cfg.validate()?;
        let cache = &self.cache;
        let hooks: Vec<HookPoint> = match &self.hooks {
            Some(h) => h.clone(),
            None if !self.latents.is_empty() => self.latents.keys().copied().collect(),
            None => cache.hooks().iter().map(HookCache::hook).collect(),
        };
        let mut selection = Vec::new();
        for hook in hooks {
            let h = cache
                .hooks()
                .iter()
                .position(|c| c.hook() == hook)
                .ok_or_else(|| Error::HookNotCached {
                    hook: hook.to_string(),
                    cached: cache.hooks().iter().map(|c| c.name().to_string()).collect(),
                })?;
            if selection.iter().any(|(i, _)| *i == h) {
                continue;
            }
            let hc = &cache.hooks()[h];
            let c = &self.cfg.constructor;
            if c.example_ctx_len > hc.ctx_len() {
                return Err(Error::Config(format!(
                    "constructor.example_ctx_len is {}, longer than the {}-token rows of {}",
                    c.example_ctx_len,
                    hc.ctx_len(),
                    hc.name()
                )));
            }
            // Window ids, and segment ids (windows plus each row's ragged tail), are u32.
            if hc.rows() * (hc.ctx_len() / c.example_ctx_len + 1) as u64 > u64::from(u32::MAX) {
                return Err(Error::Config(format!(
                    "{} has more than 2^32 windows; use longer examples",
                    hc.name()
                )));
            }
            match c.non_activating_source {
                NonActivatingSource::Neighbours if !self.neighbours.contains_key(&hook) => {
                    return Err(Error::MissingNeighbours(hc.name().into()))
                }
                NonActivatingSource::Embedding if self.embedder.is_none() => {
                    return Err(Error::MissingEmbedder)
                }
                _ => {}
            }
            let chosen = match self.latents.get(&hook) {
                None => None,
                Some(ls) => {
                    let mut ls = ls.clone();
                    ls.sort_unstable();
                    ls.dedup();
                    if let Some(&bad) = ls.iter().find(|&&l| l >= hc.width()) {
                        return Err(hc.not_cached(bad));
                    }
                    Some(ls)
                }
            };
            selection.push((h, chosen));
        }
        Ok(LatentDataset {
            inner: Arc::new(Inner {
                cache: self.cache,
                cfg: self.cfg,
                selection,
                decode: self.decode,
                neighbours: self.neighbours,
                embedder: self.embedder,
                batch: self.batch,
            }),
        })
    }
}

/// What every record of one hook point shares.
struct HookState {
    h: usize,
    tokens: Tokens,
    grid: WindowGrid,
    neighbours: Option<(Arc<NeighbourLists>, WindowIndex)>,
    pool: Option<EmbeddingPool>,
    /// The hook's vocabulary projection, when the cache has one.
    vocab: Option<VocabProjection>,
}

impl HookState {
    fn hook<'c>(&self, cache: &'c LatentCache) -> &'c HookCache {
        &cache.hooks()[self.h]
    }
}

/// The records of a [`LatentDataset`], in order (hook point, then latent), built a batch at a
/// time in parallel. Latents with fewer than `min_examples` examples, or none, are skipped (see
/// [`Records::skipped`]). A split that cannot be read yields one error and the iteration goes on
/// with the next; stop at the first error to treat any as fatal.
pub struct Records {
    ds: LatentDataset,
    next_hook: usize,
    state: Option<Arc<HookState>>,
    next_split: usize,
    /// The split being built: its grouped nonzeros and the latents left to build.
    current: Option<(Arc<Grouped>, VecDeque<u32>)>,
    /// The next split, being read on a helper thread while the current one is built.
    prefetch: Option<(usize, std::thread::JoinHandle<Result<Grouped>>)>,
    ready: VecDeque<Result<BuiltRecord>>,
    skipped: usize,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Latents skipped so far for having too few activating examples.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl Iterator for Records {
    type Item = Result<BuiltRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            let inner = Arc::clone(&self.ds.inner);
            // Build the next batch of the current split.
            if let (Some((grouped, left)), Some(state)) = (&mut self.current, &self.state) {
                if !left.is_empty() {
                    let take = inner.batch.min(left.len());
                    let batch: Vec<u32> = left.drain(..take).collect();
                    let built: Vec<Result<Option<BuiltRecord>>> = batch
                        .par_iter()
                        .map(|&l| self.ds.build_one(state, l, grouped.hits(l)))
                        .collect();
                    for r in built {
                        match r {
                            Ok(Some(rec)) => self.ready.push_back(Ok(rec)),
                            Ok(None) => self.skipped += 1,
                            Err(e) => self.ready.push_back(Err(e)),
                        }
                    }
                    continue;
                }
                self.current = None;
            }
            // Read the next split of the current hook point (prefetched, as a rule).
            if self.state.is_some() {
                let sel = self.next_hook - 1;
                let Some(split) = self.ds.next_split(sel, self.next_split) else {
                    self.state = None;
                    self.prefetch = None;
                    continue;
                };
                self.next_split = split + 1;
                let read = match self.prefetch.take() {
                    Some((s, handle)) if s == split => handle.join().unwrap_or_else(|_| {
                        Err(Error::Config("the split reader thread panicked".into()))
                    }),
                    _ => self.ds.read_split(sel, split),
                };
                if let Some(next) = self.ds.next_split(sel, split + 1) {
                    let ds = self.ds.clone();
                    self.prefetch = std::thread::Builder::new()
                        .name("autointerp-split-reader".into())
                        .spawn(move || ds.read_split(sel, next))
                        .ok()
                        .map(|h| (next, h));
                }
                match read {
                    Ok(g) => {
                        let latents = self.ds.latents_in_split(sel, split);
                        self.current = Some((Arc::new(g), latents));
                    }
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            // Move to the next hook point.
            let (h, chosen) = inner.selection.get(self.next_hook)?;
            self.next_hook += 1;
            self.next_split = 0;
            match self.ds.hook_state(*h, chosen.as_deref()) {
                Ok(s) => self.state = Some(Arc::new(s)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// What a random stream is for: each gets its own, so that changing one part of the config
/// leaves the draws of the others alone.
#[derive(Clone, Copy)]
enum Purpose {
    Sampler = 1,
    NonActivating = 2,
    Pool = 3,
}

/// The random stream of one latent (or hook point) for one purpose, from the config seed.
fn stream(seed: u64, hook: HookPoint, latent: u32, purpose: Purpose) -> ChaCha8Rng {
    // FNV-1a over the canonical hook name, so folder spellings (`transformer.h.0`) do not matter.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in hook.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut x = seed ^ splitmix(h) ^ splitmix(u64::from(latent) << 8 | purpose as u64);
    x = splitmix(x);
    ChaCha8Rng::seed_from_u64(x)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
