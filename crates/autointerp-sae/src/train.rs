//! A TopK sparse autoencoder trainer (Gao et al. 2024, "Scaling and evaluating sparse
//! autoencoders"), writing EleutherAI sparsify's format so sparsify and delphi load the result.
//!
//! The recipe: decoder rows of unit norm (renormalised after every step, and the gradient
//! component along each row removed before it), encoder initialised as the decoder's transpose,
//! decoder bias initialised to the mean of the first batch, loss = FVU + α·AuxK where AuxK
//! reconstructs the residual error from the top `k_aux` dead latents, Adam with a learning rate
//! scaled as `2e-4 / sqrt(width / 2^14)`.

use std::ops::Range;
use std::path::Path;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Trainer settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Width = `expansion_factor × d_in`.
    pub expansion_factor: usize,
    /// Latents kept per token.
    pub k: usize,
    /// Learning rate; `None` scales it with the width as Gao et al. do.
    pub lr: Option<f64>,
    /// Weight of the AuxK loss.
    pub auxk_alpha: f64,
    /// A latent that has not fired for this many tokens counts as dead.
    pub dead_after_tokens: u64,
    /// Seed of the initialisation.
    pub seed: i64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            expansion_factor: 8,
            k: 32,
            lr: None,
            auxk_alpha: 1.0 / 32.0,
            dead_after_tokens: 100_000,
            seed: 0,
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Fraction of variance unexplained on the batch (before the step).
    pub fvu: f64,
    /// The AuxK loss (0 when no latent is dead).
    pub auxk: f64,
    /// Fraction of latents dead at this step.
    pub dead_fraction: f64,
}

/// Trains one TopK SAE on batches of activations.
pub struct Trainer {
    vs: nn::VarStore,
    opt: nn::Optimizer,
    w_enc: Tensor,
    b_enc: Tensor,
    w_dec: Tensor,
    b_dec: Tensor,
    /// Tokens since each latent last fired.
    since_fired: Tensor,
    cfg: TrainConfig,
    d_in: usize,
    initialised: bool,
    tokens_seen: u64,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("d_in", &self.d_in)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A fresh SAE for inputs of dimension `d_in`.
    pub fn new(d_in: usize, cfg: TrainConfig, device: Device) -> Result<Self> {
        let width = d_in * cfg.expansion_factor;
        if d_in == 0 || cfg.k == 0 || cfg.k > width {
            return Err(Error::Config {
                path: "train config".into(),
                problem: format!(
                    "need d_in > 0 and 0 < k <= width; got d_in {d_in}, k {}, width {width}",
                    cfg.k
                ),
            });
        }
        tch::manual_seed(cfg.seed);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (d, w) = (d_in as i64, width as i64);
        let init = Tensor::randn([w, d], (Kind::Float, device));
        let init = &init / init.norm_scalaropt_dim(2, [-1], true);
        let w_dec = root.var_copy("W_dec", &init);
        let w_enc = (&root / "encoder").var_copy("weight", &init);
        let b_enc = (&root / "encoder").zeros("bias", &[w]);
        let b_dec = root.zeros("b_dec", &[d]);
        let lr = cfg.lr.unwrap_or(2e-4 / (width as f64 / 16384.0).sqrt());
        let opt = nn::Adam {
            eps: 6.25e-10,
            ..Default::default()
        }
        .build(&vs, lr)?;
        Ok(Self {
            vs,
            opt,
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            since_fired: Tensor::zeros([w], (Kind::Int64, device)),
            cfg,
            d_in,
            initialised: false,
            tokens_seen: 0,
        })
    }

    /// Number of latents.
    pub fn width(&self) -> usize {
        self.d_in * self.cfg.expansion_factor
    }

    /// Tokens trained on so far.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    /// Decodes `(values, indices)` `[batch, k]` into `[batch, d_in]` without a dense latent matrix.
    fn decode(&self, values: &Tensor, indices: &Tensor) -> Tensor {
        let (b, k) = (indices.size()[0], indices.size()[1]);
        let offsets = Tensor::arange_start_step(0, b * k, k, (Kind::Int64, indices.device()));
        let (out, _, _, _) = Tensor::embedding_bag(
            &self.w_dec,
            &indices.reshape([-1]),
            &offsets,
            false,
            0, // sum
            false,
            Some(values.reshape([-1])),
            false,
        );
        out + &self.b_dec
    }

    /// One optimisation step on `x` `[batch, d_in]`.
    pub fn step(&mut self, x: &Tensor) -> Result<StepStats> {
        if x.dim() != 2 || x.size()[1] != self.d_in as i64 {
            return Err(Error::InputDim {
                got: *x.size().last().unwrap_or(&0),
                expected: self.d_in as i64,
                hook: None,
            });
        }
        let x = x.to_kind(Kind::Float).to_device(self.vs.device());
        if !self.initialised {
            tch::no_grad(|| self.b_dec.copy_(&x.mean_dim(0, false, Kind::Float)));
            self.initialised = true;
        }
        let batch = x.size()[0];
        let pre = (&x - &self.b_dec).matmul(&self.w_enc.tr()) + &self.b_enc;
        let pre = pre.relu();
        let (values, indices) = pre.topk(self.cfg.k as i64, -1, true, false);
        let recon = self.decode(&values, &indices);
        let centred = &x - x.mean_dim(0, true, Kind::Float);
        let total_var = centred.square().sum(Kind::Float);
        let err = &x - &recon;
        let fvu = err.square().sum(Kind::Float) / &total_var;

        // Dead latents: not fired within the last `dead_after_tokens` tokens.
        let fired = Tensor::zeros([self.width() as i64], (Kind::Int64, x.device())).index_fill(
            0,
            &indices.reshape([-1]).unique_dim(0, false, false, false).0,
            1,
        );
        tch::no_grad(|| {
            let _ = self.since_fired.g_add_scalar_(batch);
            let _ = self.since_fired.masked_fill_(&fired.to_kind(Kind::Bool), 0);
        });
        let dead = self.since_fired.ge(self.cfg.dead_after_tokens as i64);
        let n_dead = dead.sum(Kind::Int64).int64_value(&[]);
        let k_aux = (self.d_in as i64 / 2).min(n_dead);
        let auxk = if k_aux > 0 {
            // Reconstruct the residual error from the dead latents only.
            let masked = pre.masked_fill(&dead.logical_not().unsqueeze(0), 0.0);
            let (v, i) = masked.topk(k_aux, -1, true, false);
            let err_hat = self.decode(&v, &i) - &self.b_dec;
            let e = err.detach();
            let e_var = (&e - e.mean_dim(0, true, Kind::Float))
                .square()
                .sum(Kind::Float);
            (&e - err_hat).square().sum(Kind::Float) / e_var.clamp_min(1e-12)
        } else {
            Tensor::zeros([], (Kind::Float, x.device()))
        };
        let loss = &fvu + &auxk * self.cfg.auxk_alpha;
        self.opt.zero_grad();
        loss.backward();
        tch::no_grad(|| {
            // Keep decoder rows on the unit sphere: drop the gradient along each row...
            let mut g = self.w_dec.grad();
            let parallel = (&g * &self.w_dec).sum_dim_intlist(-1, true, Kind::Float) * &self.w_dec;
            let _ = g.f_sub_(&parallel);
        });
        self.opt.step();
        tch::no_grad(|| {
            // ...and renormalise after the step.
            let norm = self
                .w_dec
                .norm_scalaropt_dim(2, [-1], true)
                .clamp_min(1e-12);
            let normalised = &self.w_dec / norm;
            self.w_dec.copy_(&normalised);
        });
        self.tokens_seen += batch as u64;
        Ok(StepStats {
            fvu: fvu.double_value(&[]),
            auxk: auxk.double_value(&[]),
            dead_fraction: n_dead as f64 / self.width() as f64,
        })
    }

    /// Writes the SAE in sparsify's layout: `<dir>/cfg.json` and `<dir>/sae.safetensors`
    /// (`encoder.weight` `[width, d_in]`, `encoder.bias`, `W_dec` `[width, d_in]`, `b_dec`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let cfg = serde_json::json!({
            "expansion_factor": self.cfg.expansion_factor,
            "normalize_decoder": true,
            "num_latents": self.width(),
            "k": self.cfg.k,
            "multi_topk": false,
            "skip_connection": false,
            "transcode": false,
            "d_in": self.d_in,
        });
        autointerp_core::fs::write_atomic(
            &dir.join("cfg.json"),
            &serde_json::to_vec_pretty(&cfg).unwrap_or_default(),
        )?;
        let path = dir.join("sae.safetensors");
        let tmp = dir.join(".sae.safetensors.tmp");
        let cpu = |t: &Tensor| t.detach().to_device(Device::Cpu).contiguous();
        let tensors = [
            ("encoder.weight", cpu(&self.w_enc)),
            ("encoder.bias", cpu(&self.b_enc)),
            ("W_dec", cpu(&self.w_dec)),
            ("b_dec", cpu(&self.b_dec)),
        ];
        Tensor::write_safetensors(&tensors, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io { path, source })?;
        Ok(())
    }
}

/// How [`fit`] walks the rows of its activation source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitRows {
    /// Rows in all; the held-out rows are the last ones.
    pub rows: usize,
    /// Rows to hold out; at most half the rows are, so that a dataset too small for both still
    /// trains.
    pub eval_rows: usize,
    /// Rows per step.
    pub batch_rows: usize,
}

/// Progress of [`fit`], reported after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitProgress {
    /// Training rows done.
    pub rows_done: usize,
    /// Training rows in all.
    pub rows_total: usize,
    /// What the step measured.
    pub stats: StepStats,
}

/// What a training run reached, written beside the SAE as `train_stats.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    /// Tokens trained on.
    pub tokens: u64,
    /// Wall-clock seconds of the training loop, activations included.
    pub seconds: f64,
    /// Mean training FVU over the last tenth of the steps.
    pub train_fvu: f64,
    /// Fraction of latents that fired on none of the last `dead_after_tokens` training tokens.
    pub dead_fraction: f64,
    /// On the held-out tokens (`None` without any): FVU, mean L0, and the fraction of latents
    /// that fired on none of them.
    pub eval: Option<crate::Metrics>,
    /// Held-out tokens measured.
    pub eval_tokens: u64,
}

impl std::fmt::Display for TrainSummary {
    /// `trained on N tokens in S s: train FVU …, dead …%; held-out (M tokens) FVU …, L0 …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trained on {} tokens in {:.0} s: train FVU {:.3}, dead {:.2}%",
            self.tokens,
            self.seconds,
            self.train_fvu,
            100.0 * self.dead_fraction
        )?;
        if let Some(m) = &self.eval {
            write!(
                f,
                "; held-out ({} tokens) FVU {:.3}, L0 {:.1}",
                self.eval_tokens, m.fvu, m.mean_l0
            )?;
        }
        Ok(())
    }
}

/// Trains `trainer` for one pass over the training rows, writes the SAE to `dir` (sparsify's
/// layout) with `train_stats.json` beside it, and measures the written SAE on the held-out rows.
///
/// `activations` gives the activations `[tokens, d_in]` of a range of rows; it is a closure so
/// that this crate needs no model: any source of activations trains (the model-driven one is
/// `autointerp_cache::train_sae`). Measuring the SAE as reloaded from disk checks the files, not
/// just the trainer's tensors.
///
/// # Errors
/// [`Error::Activations`] when `activations` fails, [`Error::NoTrainingData`] when no row is
/// left to train on, and the trainer's or the writer's errors.
pub fn fit<E>(
    trainer: &mut Trainer,
    rows: FitRows,
    mut activations: impl FnMut(Range<usize>) -> std::result::Result<Tensor, E>,
    dir: &Path,
    mut on_step: impl FnMut(FitProgress),
) -> Result<TrainSummary>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut activations = |range: Range<usize>| {
        activations(range).map_err(|e| Error::Activations { source: e.into() })
    };
    let n_eval = rows.eval_rows.min(rows.rows / 2);
    let n_train = rows.rows - n_eval;
    let batch = rows.batch_rows.max(1);
    let n_steps = n_train.div_ceil(batch);
    let mut recent_fvu = Vec::new();
    let mut last = None;
    let started = std::time::Instant::now();
    let _guard = tch::no_grad_guard();
    for (step, start) in (0..n_train).step_by(batch).enumerate() {
        let end = (start + batch).min(n_train);
        let x = activations(start..end)?;
        let stats = tch::with_grad(|| trainer.step(&x))?;
        if step >= n_steps - n_steps.div_ceil(10) {
            recent_fvu.push(stats.fvu);
        }
        on_step(FitProgress {
            rows_done: end,
            rows_total: n_train,
            stats,
        });
        last = Some(stats);
    }
    let seconds = started.elapsed().as_secs_f64();
    let last = last.ok_or(Error::NoTrainingData)?;
    trainer.save(dir)?;

    let (eval, eval_tokens) = if n_eval > 0 {
        let (_, coder) = crate::SparseCoder::load_dir(dir, &[], trainer.vs.device())?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoCoder {
                path: dir.to_path_buf(),
                depth: 0,
            })?;
        let x = Tensor::cat(
            &(n_train..rows.rows)
                .step_by(batch)
                .map(|s| activations(s..(s + batch).min(rows.rows)))
                .collect::<Result<Vec<_>>>()?,
            0,
        );
        (Some(coder.metrics(&x, None)?), x.size()[0] as u64)
    } else {
        (None, 0)
    };
    let summary = TrainSummary {
        tokens: trainer.tokens_seen(),
        seconds,
        train_fvu: recent_fvu.iter().sum::<f64>() / recent_fvu.len().max(1) as f64,
        dead_fraction: last.dead_fraction,
        eval,
        eval_tokens,
    };
    autointerp_core::fs::write_atomic(
        &dir.join("train_stats.json"),
        &serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data that truly is sparse in a random dictionary: a TopK SAE must learn to explain it.
    fn sparse_data(n: i64, d: i64, atoms: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let dict = Tensor::randn([atoms, d], (Kind::Float, Device::Cpu));
        let codes = Tensor::rand([n, atoms], (Kind::Float, Device::Cpu));
        let mask = Tensor::rand([n, atoms], (Kind::Float, Device::Cpu)).lt(4.0 / atoms as f64);
        (codes * mask).matmul(&dict)
    }

    #[test]
    fn learns_sparse_data_and_reloads_identically() {
        let data = sparse_data(4096, 16, 64, 3);
        let cfg = TrainConfig {
            expansion_factor: 8,
            k: 4,
            lr: Some(3e-3),
            dead_after_tokens: 2048,
            ..Default::default()
        };
        let mut t = Trainer::new(16, cfg, Device::Cpu).unwrap();
        let first = t.step(&data.narrow(0, 0, 256)).unwrap();
        let mut last = first;
        for epoch in 0..12 {
            for b in 0..16 {
                last = t.step(&data.narrow(0, b * 256, 256)).unwrap();
            }
            let _ = epoch;
        }
        assert!(
            last.fvu < 0.5 * first.fvu && last.fvu < 0.3,
            "fvu {} -> {}",
            first.fvu,
            last.fvu
        );
        let norms = t.w_dec.norm_scalaropt_dim(2, [-1], false);
        assert!(
            (norms - 1.0).abs().max().double_value(&[]) < 1e-4,
            "decoder rows stay unit norm"
        );

        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        let sae = crate::SparseCoder::load_sparsify(dir.path(), Device::Cpu).unwrap();
        let x = data.narrow(0, 0, 32);
        let got = sae.encode(&x).unwrap();
        let pre = ((&x - &t.b_dec).matmul(&t.w_enc.tr()) + &t.b_enc).relu();
        let (v, i) = pre.topk(4, -1, true, true);
        assert!(got.indices.equal(&i));
        assert!(got.values.allclose(&v.detach(), 1e-5, 1e-5, false));
        assert!((sae.fvu(&x, &x).unwrap() - 0.0).abs() < 1.0);
    }

    #[test]
    fn fit_trains_writes_and_measures_the_held_out_rows() {
        // 10 rows of 8 tokens; 3 held out.
        let data = sparse_data(80, 16, 64, 5);
        let rows = |r: Range<usize>| {
            Ok::<_, std::io::Error>(data.narrow(0, r.start as i64 * 8, r.len() as i64 * 8))
        };
        let cfg = TrainConfig {
            expansion_factor: 2,
            k: 4,
            ..Default::default()
        };
        let mut t = Trainer::new(16, cfg.clone(), Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shape = FitRows {
            rows: 10,
            eval_rows: 3,
            batch_rows: 4,
        };
        let mut seen = Vec::new();
        let summary = fit(&mut t, shape, rows, dir.path(), |p| seen.push(p.rows_done)).unwrap();
        assert_eq!(seen, [4, 7]);
        assert_eq!((summary.tokens, summary.eval_tokens), (56, 24));
        assert!(summary.eval.is_some_and(|m| m.mean_l0 <= 4.0));
        assert!(dir.path().join("train_stats.json").is_file());

        let failing = |_: Range<usize>| Err::<Tensor, _>(std::io::Error::other("no model"));
        let mut t = Trainer::new(16, cfg, Device::Cpu).unwrap();
        let err = fit(&mut t, shape, failing, dir.path(), |_| {}).unwrap_err();
        assert!(matches!(err, Error::Activations { .. }), "{err}");
    }

    #[test]
    fn bad_settings_and_inputs_are_errors() {
        let cfg = TrainConfig {
            expansion_factor: 1,
            k: 9,
            ..Default::default()
        };
        assert!(Trainer::new(8, cfg, Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("k 9"));
        let mut t = Trainer::new(
            8,
            TrainConfig {
                k: 2,
                ..Default::default()
            },
            Device::Cpu,
        )
        .unwrap();
        let err = t
            .step(&Tensor::zeros([4, 7], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dimension 7") && err.contains("d_in = 8"),
            "{err}"
        );
    }
}
