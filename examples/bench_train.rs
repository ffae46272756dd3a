//! Training throughput of MedProbCLIP on the CPU (or, with `--device cuda` and the `cuda`
//! feature, a GPU), data loading excluded: the quickstart's
//! model and objective (`TrainConfig::default()`: ViT on 64-pixel images with 16-pixel
//! patches, one-layer BERT with mean pooling, probabilistic heads, MLS, λ_I = λ_T = 0.1,
//! β = 1e-4) trained for a fixed number of steps on one fixed synthetic batch.
//!
//! One step is what `medprob_train::trainer::train` does per batch: forward of two image
//! views and two report sections, the MedProbCLIP loss against the study-id target matrix,
//! backward, gradient collection, global-norm clipping to 1.0 and an AdamW step at the
//! warm-up + cosine learning rate. Images (standard normal) and token ids (uniform in
//! `[5, vocab)`, no padding) are made once from a seeded generator, so the loader, the
//! tokenizer and validation are not timed.
//!
//! Prints one JSON line: steps per second and milliseconds per step over the timed steps
//! (after `--warmup` untimed ones), batch, threads, peak resident set (Linux `VmHWM`), the
//! first and final loss, and with `--breakdown` the mean milliseconds of forward (encoders
//! and loss), backward (gradients and their collection) and optimiser (clipping and AdamW),
//! and the inference throughput of the image tower (`encode_images_per_s`, `--encode` images
//! in batches of 128).
//! `scripts/bench_train.sh` runs it next to the same model in PyTorch
//! (`scripts/bench_train.py`) and prints the ratio quoted in docs/PERFORMANCE.md.
//!
//! ```sh
//! cargo run --release --example bench_train -- --threads 2 --steps 100 --warmup 10 --breakdown
//! cargo run --release --features cuda --example bench_train -- --device cuda --batch 128 --breakdown
//! ```
//!
//! On CUDA every phase ends with `Device::synchronize`, so each is timed to the completion
//! of its kernels.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use clap::Parser;
use medprob::core::GaussianTensor;
use medprob::encoders::{Embedded, MedProbModel};
use medprob::losses::{targets, MedProbClipLoss, MultiView};
use medprob::train::optim::{accumulate, clip_global_norm, collect_grads, scale_grads, AdamW};
use medprob::train::setup::build_model;
use medprob::train::TrainConfig;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

#[path = "common/proc_status.rs"]
mod proc_status;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(about = "Time MedProbCLIP training steps on the CPU or a GPU (one JSON line on stdout)")]
struct Args {
    /// `cpu`, or `cuda` (device 0; needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed optimisation steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Studies per batch (each gives two images and two report sections).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per report section.
    #[arg(long, default_value_t = 48)]
    tokens: usize,
    /// Text vocabulary size (the quickstart's WordPiece target).
    #[arg(long, default_value_t = 2000)]
    vocab: usize,
    /// Worker threads (sets `RAYON_NUM_THREADS`, which candle's matrix products read, and
    /// the global rayon pool that medprob's kernels use).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seed of the synthetic batch (the model uses the config's seed, 0).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Images embedded (inference, batches of 128) for `encode_images_per_s`.
    #[arg(long, default_value_t = 2048)]
    encode: usize,
    /// Also report mean milliseconds of forward, backward and optimiser per step.
    #[arg(long)]
    breakdown: bool,
}

/// The fixed inputs of every step: two views and two sections of `batch` studies.
struct Batch {
    image1: Tensor,
    image2: Tensor,
    text1: (Tensor, Tensor),
    text2: (Tensor, Tensor),
    study_ids: Vec<String>,
}

impl Batch {
    fn synthetic(args: &Args, image_size: usize, device: &Device) -> AnyResult<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
        let (b, l) = (args.batch, args.tokens);
        let mut image = || -> AnyResult<Tensor> {
            let n = b * 3 * image_size * image_size;
            let v: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
            Ok(Tensor::from_vec(v, (b, 3, image_size, image_size), device)?)
        };
        let (image1, image2) = (image()?, image()?);
        let mut text = || -> AnyResult<(Tensor, Tensor)> {
            let ids: Vec<u32> = (0..b * l)
                .map(|_| rng.random_range(5..args.vocab as u32))
                .collect();
            Ok((
                Tensor::from_vec(ids, (b, l), device)?,
                Tensor::ones((b, l), DType::U32, device)?,
            ))
        };
        let (text1, text2) = (text()?, text()?);
        Ok(Self {
            image1,
            image2,
            text1,
            text2,
            study_ids: (0..b).map(|i| format!("s{i}")).collect(),
        })
    }
}

/// Seconds spent in each phase of one step.
#[derive(Default, Clone, Copy)]
struct Phases {
    forward: f64,
    backward: f64,
    optimiser: f64,
}

/// Everything one step needs besides the step number.
struct Trainer<'a> {
    config: &'a TrainConfig,
    model: &'a MedProbModel,
    vars: Vec<(String, Var)>,
    loss: MedProbClipLoss,
    optimizer: AdamW,
    total_steps: usize,
}

impl Trainer<'_> {
    /// One optimisation step as the trainer takes it (accumulation 1); returns the loss.
    fn step(&mut self, batch: &Batch, step: usize) -> AnyResult<(f64, Phases)> {
        let t0 = Instant::now();
        self.model.set_step(step as u64);
        let gaussian = |e: Embedded| match e {
            Embedded::Gaussian(g) => Ok(g),
            Embedded::Unit(_) => Err("the MedProbCLIP model gave deterministic embeddings"),
        };
        let two = |e: Vec<Embedded>| -> AnyResult<(GaussianTensor, GaussianTensor)> {
            let [a, b]: [Embedded; 2] = e
                .try_into()
                .map_err(|_| "an encoder gave other than two embeddings")?;
            Ok((gaussian(a)?, gaussian(b)?))
        };
        let (i1, i2) = two(self
            .model
            .encode_image_views(&[&batch.image1, &batch.image2], true)?)?;
        let (t1, t2) = two(self.model.encode_text_sections(
            &[
                (&batch.text1.0, &batch.text1.1),
                (&batch.text2.0, &batch.text2.1),
            ],
            true,
        )?)?;
        let device = batch.image1.device();
        let tg = targets::from_keys(&batch.study_ids, DType::F32, device)?;
        let (scale, shift) = self.model.match_parameters()?;
        let views = MultiView {
            image1: &i1,
            image2: &i2,
            text1: &t1,
            text2: &t2,
        };
        let out = self.loss.forward(&views, &scale, &shift, Some(&tg), step)?;
        let value = out.parts.total;
        if !value.is_finite() {
            return Err(format!("non-finite loss {value} at step {step}").into());
        }
        device.synchronize()?;
        let forward_done = Instant::now();
        let store = out.total.backward()?;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        accumulate(&mut grads, collect_grads(&self.vars, &store))?;
        // The graph is freed here, as at the end of the trainer's micro-batch loop.
        drop((store, out, i1, i2, t1, t2));
        device.synchronize()?;
        let backward_done = Instant::now();
        scale_grads(&mut grads, 1.0)?;
        let norm = clip_global_norm(&mut grads, self.config.optim.grad_clip)?;
        if !norm.is_finite() {
            return Err(format!("non-finite gradient norm at step {step}").into());
        }
        let lr = self.config.optim.lr_at(step, self.total_steps);
        self.optimizer.step(&grads, lr)?;
        device.synchronize()?;
        let done = Instant::now();
        Ok((
            value,
            Phases {
                forward: (forward_done - t0).as_secs_f64(),
                backward: (backward_done - forward_done).as_secs_f64(),
                optimiser: (done - backward_done).as_secs_f64(),
            },
        ))
    }
}

/// A JSON object of already-serialised values, keys in the given order (serde_json's map
/// would sort them), so that the line reads like `scripts/bench_train.py`'s.
fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!("{{{}}}", body.join(", "))
}

fn main() -> AnyResult<()> {
    // As the trainer's binaries do (see medprob::train::allocator); bench_train.sh gives
    // PyTorch the same glibc settings through the environment.
    medprob::train::allocator::keep_freed_memory();
    let args = Args::parse();
    if args.batch < 2 || args.steps == 0 || args.tokens == 0 || args.vocab <= 5 {
        return Err("need --batch ≥ 2, --steps ≥ 1, --tokens ≥ 1 and --vocab > 5".into());
    }
    // candle's CPU matrix products read RAYON_NUM_THREADS on every call: set it before the
    // first tensor operation so every kernel sees the same count.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    // On a thread of the pool, as `medprob_train::train` runs.
    rayon::scope(|_| run(&args))
}

fn run(args: &Args) -> AnyResult<()> {
    let config = TrainConfig::default();
    let (device, device_label) = match args.device.as_str() {
        "cpu" => (Device::Cpu, "cpu".to_string()),
        "cuda" => (
            Device::new_cuda(0).map_err(|e| {
                // candle's error carries a backtrace; its first line says what failed.
                let e = e.to_string();
                let e = e.lines().next().unwrap_or_default();
                format!(
                    "--device cuda: no CUDA device 0 ({e}); was this built with --features cuda?"
                )
            })?,
            "cuda:0".to_string(),
        ),
        other => return Err(format!("--device must be cpu or cuda, got {other:?}").into()),
    };
    let image_size = config.data.image_size as usize;
    let model = build_model(&config, args.vocab, &device)?;
    let vars = model.trainable_vars();
    let batch = Batch::synthetic(args, image_size, &device)?;
    let mut trainer = Trainer {
        config: &config,
        model: &model,
        optimizer: AdamW::new(vars.clone(), config.optim.clone())?,
        vars,
        loss: MedProbClipLoss::new(config.medprobclip.clone())?,
        total_steps: args.warmup + args.steps,
    };

    let mut first_loss = f64::NAN;
    for step in 0..args.warmup {
        let (loss, _) = trainer.step(&batch, step)?;
        if step == 0 {
            first_loss = loss;
        }
    }
    let mut sum = Phases::default();
    let mut final_loss = f64::NAN;
    let started = Instant::now();
    for step in args.warmup..args.warmup + args.steps {
        let (loss, p) = trainer.step(&batch, step)?;
        if step == 0 {
            first_loss = loss;
        }
        final_loss = loss;
        sum.forward += p.forward;
        sum.backward += p.backward;
        sum.optimiser += p.optimiser;
    }
    let seconds = started.elapsed().as_secs_f64();

    // Inference: embed --encode images in batches of 128 (after one untimed batch), as
    // evaluation and the index builder do.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0xE);
    let pixels: Vec<f32> = (0..128 * 3 * image_size * image_size)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let images = Tensor::from_vec(pixels, (128, 3, image_size, image_size), &device)?;
    model.encode_images(&images, false)?;
    device.synchronize()?;
    let batches = (args.encode / 128).max(1);
    let t = Instant::now();
    for _ in 0..batches {
        model.encode_images(&images, false)?;
    }
    device.synchronize()?;
    let encode_per_s = (batches * 128) as f64 / t.elapsed().as_secs_f64();

    let n = args.steps as f64;
    let round = |x: f64, digits: i32| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
    let json = |v: serde_json::Value| v.to_string();
    let mut fields = vec![
        ("impl", json("medprob".into())),
        ("steps_per_s", json(round(n / seconds, 3).into())),
        ("ms_per_step", json(round(1e3 * seconds / n, 2).into())),
        ("batch", json(args.batch.into())),
        ("threads", json(args.threads.into())),
        ("device", json(device_label.into())),
        (
            "peak_rss_mib",
            json(
                proc_status::status_mib("VmHWM:")
                    .map(|m| round(m, 1))
                    .into(),
            ),
        ),
        ("steps", json(args.steps.into())),
        ("warmup", json(args.warmup.into())),
        ("first_loss", json(round(first_loss, 4).into())),
        ("final_loss", json(round(final_loss, 4).into())),
        ("encode_images_per_s", json(round(encode_per_s, 1).into())),
    ];
    if args.breakdown {
        let ms = |x: f64| json(round(1e3 * x / n, 2).into());
        let phases = [
            ("forward", ms(sum.forward)),
            ("backward", ms(sum.backward)),
            ("optimiser", ms(sum.optimiser)),
        ];
        fields.push(("breakdown_ms", object(&phases)));
    }
    println!("{}", object(&fields));
    Ok(())
}
