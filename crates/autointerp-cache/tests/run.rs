//! The caching loop end to end on a synthetic model and coder: outputs, statistics, resume.
use std::num::NonZeroUsize;
use std::path::Path;

use autointerp_cache::{hook_dir, run, BoxError, CacheConfig, LatentEncoder, Target};
use autointerp_core::split::{Split, Tokens};
use autointerp_core::HookPoint;
use tch::{Device, Kind, Tensor};

/// TopK over a fixed random projection: a real sparse coder, just not a trained one.
struct RandomTopK {
    w: Tensor,
    k: i64,
}

impl LatentEncoder for RandomTopK {
    fn width(&self) -> usize {
        self.w.size()[1] as usize
    }
    fn d_in(&self) -> usize {
        self.w.size()[0] as usize
    }
    fn encode_sparse(&self, x: &Tensor) -> Result<(Tensor, Tensor), BoxError> {
        let (v, i) = x.matmul(&self.w).relu().topk(self.k, -1, true, true);
        Ok((i, v))
    }
}

/// "Model": activations are a fixed embedding of each token id.
fn forward(embed: &Tensor) -> impl FnMut(&Tensor) -> Result<Vec<Tensor>, BoxError> + '_ {
    move |ids: &Tensor| {
        Ok(vec![embed.index_select(0, &ids.reshape([-1])).reshape([
            ids.size()[0],
            ids.size()[1],
            -1,
        ])])
    }
}

fn setup() -> (Tokens, Tensor, RandomTopK, CacheConfig) {
    tch::manual_seed(1);
    let tokens = Tokens {
        rows: 10,
        ctx_len: 6,
        ids: (0..60u32).map(|i| (i * 7919) % 50).collect(),
    };
    let embed = Tensor::randn([50, 8], (Kind::Float, Device::Cpu));
    let coder = RandomTopK {
        w: Tensor::randn([8, 40], (Kind::Float, Device::Cpu)),
        k: 3,
    };
    let cfg = CacheConfig {
        batch_size: NonZeroUsize::new(3).unwrap(),
        n_splits: 4,
        model_name: "synthetic".into(),
        skip_first_token: false,
        extra: Default::default(),
        checkpoint_every: CacheConfig::DEFAULT_CHECKPOINT_EVERY,
        identity: String::new(),
    };
    (tokens, embed, coder, cfg)
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .filter(|(n, _)| n != "stats.json") // holds wall time
        .collect();
    out.sort();
    out
}

#[test]
fn caches_every_nonzero_with_statistics() {
    let (tokens, embed, coder, cfg) = setup();
    let out = tempfile::tempdir().unwrap();
    let hook = HookPoint::Residual(3);
    let stats = run(
        out.path(),
        &tokens,
        &[Target {
            hook,
            coder: &coder,
        }],
        forward(&embed),
        &cfg,
        |_| {},
    )
    .unwrap();
    assert_eq!(stats[0].n_tokens, 60);
    assert!((stats[0].mean_l0 - 3.0).abs() < 0.2, "{}", stats[0].mean_l0); // relu may zero a few

    let dir = hook_dir(out.path(), hook);
    assert!(dir.ends_with("latents/layers.3"));
    let mut n = 0;
    let mut fired = vec![0u64; 40];
    for (name, _) in files(&dir) {
        // delphi's LatentDataset reads every `*.safetensors` of a hook folder as a split.
        assert!(
            !name.ends_with(".safetensors")
                || autointerp_core::split::parse_file_name(&name).is_some(),
            "{name} would break delphi's reader"
        );
        if let Some((start, end)) = autointerp_core::split::parse_file_name(&name) {
            let split = Split::read(&dir.join(&name)).unwrap();
            assert_eq!(split.tokens.as_ref(), Some(&tokens));
            for (loc, &act) in split.locations.iter().zip(&split.activations) {
                assert!((start..=end).contains(&loc.latent));
                // The activation is the coder's value for that token, rounded to f16.
                let id = tokens.row(loc.row as usize)[loc.position as usize] as i64;
                let x = embed.get(id).unsqueeze(0);
                let (i, v) = coder.encode_sparse(&x).unwrap();
                let ids = Vec::<i64>::try_from(i.reshape([-1])).unwrap();
                let vals = Vec::<f32>::try_from(v.reshape([-1])).unwrap();
                let j = ids
                    .iter()
                    .position(|&l| l == loc.latent as i64)
                    .expect("latent in top k");
                assert!((vals[j] - act).abs() <= 1e-3 * vals[j].abs().max(1.0));
                fired[loc.latent as usize] += 1;
                n += 1;
            }
        }
    }
    assert_eq!(n as f64, stats[0].mean_l0 * 60.0);
    let counts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("firing_counts.json")).unwrap()).unwrap();
    assert_eq!(counts["n_tokens"], 60);
    assert_eq!(counts["counts"], serde_json::json!(fired));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_name"], "synthetic");
    assert_eq!(config["cache_ctx_len"], 6);
    assert!(!out.path().join("latents/.checkpoint.json").exists());
}

#[test]
fn an_interrupted_run_resumes_to_identical_files() {
    let (tokens, embed, coder, cfg) = setup();
    let hook = HookPoint::Mlp(0);
    let straight = tempfile::tempdir().unwrap();
    run(
        straight.path(),
        &tokens,
        &[Target {
            hook,
            coder: &coder,
        }],
        forward(&embed),
        &cfg,
        |_| {},
    )
    .unwrap();

    let resumed = tempfile::tempdir().unwrap();
    let mut calls = 0;
    let mut f = forward(&embed);
    let err = run(
        resumed.path(),
        &tokens,
        &[Target {
            hook,
            coder: &coder,
        }],
        |ids: &Tensor| {
            calls += 1;
            if calls == 3 {
                Err("simulated crash".into())
            } else {
                f(ids)
            }
        },
        &cfg,
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    assert!(
        !hook_dir(resumed.path(), hook).join("config.json").exists(),
        "unfinished cache has no config"
    );

    let mut first = None;
    run(
        resumed.path(),
        &tokens,
        &[Target {
            hook,
            coder: &coder,
        }],
        forward(&embed),
        &cfg,
        |p| {
            first.get_or_insert(p);
        },
    )
    .unwrap();
    let first = first.unwrap();
    assert_eq!(
        (first.rows_done, first.rows_this_run),
        (9, 3),
        "resumed after the 2 good batches"
    );
    assert_eq!(
        files(&hook_dir(straight.path(), hook)),
        files(&hook_dir(resumed.path(), hook))
    );
}

#[test]
fn the_first_position_can_be_skipped() {
    let (tokens, embed, coder, cfg) = setup();
    let cfg = CacheConfig {
        skip_first_token: true,
        ..cfg
    };
    let out = tempfile::tempdir().unwrap();
    let hook = HookPoint::Residual(0);
    run(
        out.path(),
        &tokens,
        &[Target {
            hook,
            coder: &coder,
        }],
        forward(&embed),
        &cfg,
        |_| {},
    )
    .unwrap();
    let dir = hook_dir(out.path(), hook);
    let mut seen = 0;
    for (name, _) in files(&dir) {
        if autointerp_core::split::parse_file_name(&name).is_some() {
            let split = Split::read(&dir.join(&name)).unwrap();
            assert!(split.locations.iter().all(|l| l.position > 0));
            seen += split.locations.len();
        }
    }
    assert!(seen > 0);
}

#[test]
fn wrong_activation_shapes_are_clear_errors() {
    let (tokens, _, coder, cfg) = setup();
    let out = tempfile::tempdir().unwrap();
    let bad = |ids: &Tensor| -> Result<Vec<Tensor>, BoxError> {
        Ok(vec![Tensor::zeros(
            [ids.size()[0], ids.size()[1], 5],
            (Kind::Float, Device::Cpu),
        )])
    };
    let err = run(
        out.path(),
        &tokens,
        &[Target {
            hook: HookPoint::Embed,
            coder: &coder,
        }],
        bad,
        &cfg,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("embed") && err.contains("d_in 8"), "{err}");
}

#[test]
fn inputs_the_loop_cannot_split_are_clear_errors() {
    let (tokens, embed, coder, cfg) = setup();
    let out = tempfile::tempdir().unwrap();
    let target = [Target {
        hook: HookPoint::Embed,
        coder: &coder,
    }];
    let too_many = CacheConfig {
        n_splits: 41,
        ..cfg.clone()
    };
    let err = run(
        out.path(),
        &tokens,
        &target,
        forward(&embed),
        &too_many,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("n_splits 41") && err.contains("(40)"), "{err}");
    let none = CacheConfig {
        n_splits: 0,
        ..cfg.clone()
    };
    assert!(run(out.path(), &tokens, &target, forward(&embed), &none, |_| {}).is_err());
    let empty = Tokens {
        rows: 0,
        ctx_len: 6,
        ids: Vec::new(),
    };
    let err = run(out.path(), &empty, &target, forward(&embed), &cfg, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokens"), "{err}");
    let narrow = RandomTopK {
        w: Tensor::zeros([8, 0], (Kind::Float, Device::Cpu)),
        k: 0,
    };
    let err = run(
        out.path(),
        &tokens,
        &[Target {
            hook: HookPoint::Embed,
            coder: &narrow,
        }],
        forward(&embed),
        &cfg,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no latents"), "{err}");
    // Nothing was written by the refused runs.
    assert!(!out.path().join("latents").exists());
}

#[test]
fn a_checkpoint_of_other_weights_is_not_resumed() {
    let (tokens, embed, coder_a, cfg) = setup();
    let coder_b = RandomTopK {
        w: Tensor::randn([8, 40], (Kind::Float, Device::Cpu)),
        k: 3,
    };
    let hook = HookPoint::Mlp(0);
    // Both coders come from one path, as when a checkpoint folder is overwritten: only its
    // files tell them apart.
    let weights = tempfile::tempdir().unwrap();
    let sae = weights.path().join("sae.safetensors");
    let source = sae.to_str().unwrap();
    let (bytes_a, bytes_b) = (vec![b'a'; 4096], vec![b'b'; 4096]);

    std::fs::write(&sae, &bytes_b).unwrap();
    let clean = tempfile::tempdir().unwrap();
    let target_b = [Target {
        hook,
        coder: &coder_b,
    }];
    let cfg_b = cfg.clone().with_sparse_model(source);
    run(
        clean.path(),
        &tokens,
        &target_b,
        forward(&embed),
        &cfg_b,
        |_| {},
    )
    .unwrap();

    std::fs::write(&sae, &bytes_a).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut calls = 0;
    let mut f = forward(&embed);
    let cfg_a = cfg.clone().with_sparse_model(source);
    run(
        out.path(),
        &tokens,
        &[Target {
            hook,
            coder: &coder_a,
        }],
        |ids: &Tensor| {
            calls += 1;
            if calls == 3 {
                Err("simulated crash".into())
            } else {
                f(ids)
            }
        },
        &cfg_a,
        |_| {},
    )
    .unwrap_err();
    assert!(out.path().join("latents/.checkpoint.json").is_file());

    std::fs::write(&sae, &bytes_b).unwrap();
    let cfg_b = cfg.clone().with_sparse_model(source);
    assert_ne!(cfg_a.identity, cfg_b.identity);
    let mut first = None;
    run(
        out.path(),
        &tokens,
        &target_b,
        forward(&embed),
        &cfg_b,
        |p| {
            first.get_or_insert(p);
        },
    )
    .unwrap();
    let first = first.unwrap();
    assert_eq!(first.rows_done, first.rows_this_run, "started afresh");
    assert_eq!(
        files(&hook_dir(clean.path(), hook)),
        files(&hook_dir(out.path(), hook))
    );
}

#[test]
fn a_second_run_on_the_same_folder_is_refused() {
    let (tokens, embed, coder, cfg) = setup();
    let out = tempfile::tempdir().unwrap();
    let target = [Target {
        hook: HookPoint::Embed,
        coder: &coder,
    }];
    // Another run holds the folder: the same lock in this process stands in for it.
    let other = autointerp_core::fs::DirLock::acquire(out.path()).unwrap();
    let err = run(out.path(), &tokens, &target, forward(&embed), &cfg, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("process {}", std::process::id()))
            && err.contains(".autointerp.lock")
            && err.contains("in use"),
        "{err}"
    );
    assert!(!out.path().join("latents").exists(), "nothing touched");
    drop(other);
    run(out.path(), &tokens, &target, forward(&embed), &cfg, |_| {}).unwrap();
    assert!(!out.path().join(".autointerp.lock").exists());
}
