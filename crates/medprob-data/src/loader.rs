//! The batch loader: studies → decoded, augmented images and report texts, in parallel,
//! with a bounded prefetch queue, reproducible for a seed whatever the number of threads.
//!
//! Reproducibility: every random choice for study `i` in epoch `e` (its views, sections,
//! crop, rotation, jitter, text augmentation) comes from a generator seeded by
//! `(seed, e, i)`, and the epoch's order from one seeded by `(seed, e)`. Workers only
//! change who computes an item, never what it is.
//!
//! Bad studies (no image, both sections empty, an image that is missing or does not decode)
//! are an error naming the study and the file, or — with `on_bad_study = skip` — left out,
//! counted and listed by [`StudyLoader::skipped`]. There is never a placeholder image.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::image::{decode_limited, eval_transform, train_transform, Augment, ImageTransform};
use crate::limits::InputLimits;
use crate::record::StudyRecord;
use crate::sampling::{
    evaluation_text, evaluation_view, training_sections, training_views, SectionPolicy, TextAugment,
};

/// What to do with a study that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadStudy {
    /// Stop with an error naming the study and file.
    Error,
    /// Leave it out; count and list it.
    Skip,
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// Folder that relative image paths are relative to.
    pub image_root: PathBuf,
    /// Studies per batch.
    pub batch_size: usize,
    /// Output geometry and normalisation.
    pub image: ImageTransform,
    /// Training image augmentation.
    pub augment: Augment,
    /// Which report sections make the two training texts.
    pub sections: SectionPolicy,
    /// Report text augmentation for training (`None`: texts as written).
    pub text_augment: Option<TextAugment>,
    /// Error or skip on bad studies.
    pub on_bad_study: OnBadStudy,
    /// Seed of every random choice.
    pub seed: u64,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Shuffle the study order each epoch.
    pub shuffle: bool,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Keep each decoded image in memory, its shorter side reduced to this many pixels
    /// (`None`: decode from disk every time). For datasets that fit in memory: decoding
    /// dominates the cost of a CPU epoch.
    pub cache_side: Option<u32>,
    /// Bounds on image size (reports are bounded when the CSV is read).
    pub limits: InputLimits,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            image_root: PathBuf::new(),
            batch_size: 64,
            image: ImageTransform::default(),
            augment: Augment::default(),
            sections: SectionPolicy::Both,
            text_augment: None,
            on_bad_study: OnBadStudy::Error,
            seed: 0,
            workers: 0,
            prefetch: 2,
            shuffle: true,
            drop_last: false,
            cache_side: None,
            limits: InputLimits::default(),
        }
    }
}

/// One training example: two views and two texts of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainItem {
    /// Index of the study in the loader's list.
    pub study_index: usize,
    /// Its id.
    pub study_id: String,
    /// Two images, each `[C, size, size]`.
    pub images: [Vec<f32>; 2],
    /// Two report texts.
    pub texts: [String; 2],
}

/// One evaluation example: one image and one text.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalItem {
    /// Index of the study in the loader's list.
    pub study_index: usize,
    /// Its id.
    pub study_id: String,
    /// `[C, size, size]`.
    pub image: Vec<f32>,
    /// The evaluation text.
    pub text: String,
}

/// A study left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedStudy {
    /// Its id.
    pub study_id: String,
    /// Why (names the file where a file is at fault).
    pub reason: String,
}

/// Loads batches from a list of studies.
pub struct StudyLoader {
    studies: Vec<StudyRecord>,
    config: LoaderConfig,
    skipped: Mutex<Vec<SkippedStudy>>,
    pool: rayon::ThreadPool,
    /// Decoded images per (study, image), when `cache_side` is set.
    cache: Vec<Vec<std::sync::OnceLock<Arc<crate::image::GreyImage>>>>,
}

impl StudyLoader {
    /// Check the config and every study's record (images listed, some text); bad studies
    /// are an error or skipped per `on_bad_study`. Image files are checked when decoded.
    pub fn new(studies: Vec<StudyRecord>, config: LoaderConfig) -> Result<Self> {
        let bad_config = |field: &str, reason: &str| DataError::BadStudy {
            study_id: "(loader config)".into(),
            reason: format!("{field}: {reason}"),
        };
        if config.batch_size == 0 {
            return Err(bad_config("batch_size", "must be ≥ 1"));
        }
        if config.image.size == 0
            || config.image.std.is_nan()
            || config.image.std <= 0.0
            || !matches!(config.image.channels, 1 | 3)
        {
            return Err(bad_config(
                "image",
                "size ≥ 1, std > 0 and channels 1 or 3 required",
            ));
        }
        let mut kept = Vec::with_capacity(studies.len());
        let mut skipped = Vec::new();
        for s in studies {
            let reason = if s.image_paths.is_empty() {
                Some("lists no image".to_string())
            } else if s.findings.is_empty() && s.impression.is_empty() {
                Some("both report sections are empty".to_string())
            } else {
                None
            };
            match (reason, config.on_bad_study) {
                (None, _) => kept.push(s),
                (Some(reason), OnBadStudy::Error) => {
                    return Err(DataError::BadStudy {
                        study_id: s.study_id,
                        reason: format!(
                            "{reason} (set on_bad_study = skip to leave such studies out)"
                        ),
                    })
                }
                (Some(reason), OnBadStudy::Skip) => skipped.push(SkippedStudy {
                    study_id: s.study_id,
                    reason,
                }),
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .build()
            .map_err(|e| bad_config("workers", &e.to_string()))?;
        let cache = kept
            .iter()
            .map(|s| {
                (0..s.image_paths.len())
                    .map(|_| std::sync::OnceLock::new())
                    .collect()
            })
            .collect();
        Ok(Self {
            studies: kept,
            config,
            skipped: Mutex::new(skipped),
            pool,
            cache,
        })
    }

    /// Usable studies.
    pub fn len(&self) -> usize {
        self.studies.len()
    }

    /// `true` when no study is usable.
    pub fn is_empty(&self) -> bool {
        self.studies.is_empty()
    }

    /// The usable studies, in loader order.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The studies, in loader order.
    pub fn studies(&self) -> &[StudyRecord] {
        &self.studies
    }

    /// Studies left out so far (at construction, and images that failed to decode).
    pub fn skipped(&self) -> Vec<SkippedStudy> {
        self.skipped.lock().expect("skip list lock").clone()
    }

    /// Number of batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.studies.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The epoch's study order.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.studies.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix(
                self.config.seed,
                epoch,
                u64::MAX,
            )));
        }
        order
    }

    /// Training batch `index` of `epoch` (computed now, in parallel over its studies).
    pub fn train_batch(&self, epoch: u64, index: usize) -> Result<Vec<TrainItem>> {
        let ids = self.batch_indices(epoch, index);
        let results: Vec<Result<TrainItem>> = self
            .pool
            .install(|| ids.par_iter().map(|&i| self.train_item(epoch, i)).collect());
        self.keep_good(results)
    }

    /// Evaluation batch `index` (study order, no augmentation).
    pub fn eval_batch(&self, index: usize) -> Result<Vec<EvalItem>> {
        let b = self.config.batch_size;
        let ids: Vec<usize> = (index * b..((index + 1) * b).min(self.studies.len())).collect();
        let results: Vec<Result<EvalItem>> = self
            .pool
            .install(|| ids.par_iter().map(|&i| self.eval_item(i)).collect());
        self.keep_good(results)
    }

    /// All training batches of `epoch`, prepared `prefetch` ahead on a background thread.
    pub fn train_epoch(self: &Arc<Self>, epoch: u64) -> Prefetch<Vec<TrainItem>> {
        let me = Arc::clone(self);
        let n = self.batches_per_epoch();
        Prefetch::spawn(self.config.prefetch, move |k| {
            (k < n).then(|| me.train_batch(epoch, k))
        })
    }

    fn batch_indices(&self, epoch: u64, index: usize) -> Vec<usize> {
        let order = self.order(epoch);
        let b = self.config.batch_size;
        order[(index * b).min(order.len())..((index + 1) * b).min(order.len())].to_vec()
    }

    fn keep_good<T>(&self, results: Vec<Result<T>>) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(item) => out.push(item),
                Err(DataError::BadStudy { study_id, reason })
                    if self.config.on_bad_study == OnBadStudy::Skip =>
                {
                    let mut skipped = self.skipped.lock().expect("skip list lock");
                    if !skipped.iter().any(|s| s.study_id == study_id) {
                        skipped.push(SkippedStudy { study_id, reason });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Image `k` of study `i`: decoded now, or shared from the cache.
    fn load_image(&self, i: usize, k: usize) -> Result<Arc<crate::image::GreyImage>> {
        let study = &self.studies[i];
        let decoded = || {
            let path = self.config.image_root.join(&study.image_paths[k]);
            decode_limited(&path, &self.config.limits).map_err(|e| DataError::BadStudy {
                study_id: study.study_id.clone(),
                reason: format!("image {e}"),
            })
        };
        let Some(side) = self.config.cache_side else {
            return decoded().map(Arc::new);
        };
        let slot = &self.cache[i][k];
        if let Some(img) = slot.get() {
            return Ok(Arc::clone(img));
        }
        let img = decoded()?;
        let img = Arc::new(if img.width.min(img.height) > side {
            img.resize_shorter_side(side)
        } else {
            img
        });
        // Another thread may have filled the slot meanwhile; both hold the same pixels.
        Ok(Arc::clone(slot.get_or_init(|| img)))
    }

    fn train_item(&self, epoch: u64, i: usize) -> Result<TrainItem> {
        let study = &self.studies[i];
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(self.config.seed, epoch, i as u64));
        let (a, b) =
            training_views(study, &mut rng).expect("studies without images were removed in new()");
        let (t1, t2) = training_sections(study, self.config.sections, &mut rng)
            .expect("studies without text were removed in new()");
        let img_a = self.load_image(i, a)?;
        let img_b = if b == a {
            Arc::clone(&img_a)
        } else {
            self.load_image(i, b)?
        };
        let (c, aug) = (&self.config.image, &self.config.augment);
        let images = [
            train_transform(&img_a, c, aug, &mut rng),
            train_transform(&img_b, c, aug, &mut rng),
        ];
        let texts = match &self.config.text_augment {
            Some(t) => [t.apply(&t1, &mut rng), t.apply(&t2, &mut rng)],
            None => [t1, t2],
        };
        Ok(TrainItem {
            study_index: i,
            study_id: study.study_id.clone(),
            images,
            texts,
        })
    }

    fn eval_item(&self, i: usize) -> Result<EvalItem> {
        let study = &self.studies[i];
        let k = evaluation_view(study).expect("studies without images were removed in new()");
        let text = evaluation_text(study).expect("studies without text were removed in new()");
        let img = self.load_image(i, k)?;
        Ok(EvalItem {
            study_index: i,
            study_id: study.study_id.clone(),
            image: eval_transform(&img, &self.config.image),
            text: text.to_string(),
        })
    }
}

/// SplitMix64 of the three numbers: independent streams per (seed, epoch, item).
fn mix(seed: u64, epoch: u64, item: u64) -> u64 {
    let mut z =
        seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ item.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Items produced on a background thread, at most `depth` ahead of the consumer.
pub struct Prefetch<T> {
    rx: mpsc::Receiver<Result<T>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Run `produce(0)`, `produce(1)`, … until it returns `None` or fails.
    pub fn spawn(
        depth: usize,
        produce: impl Fn(usize) -> Option<Result<T>> + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        let handle = std::thread::spawn(move || {
            let mut k = 0;
            while let Some(item) = produce(k) {
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
                k += 1;
            }
        });
        Self {
            rx,
            handle: Some(handle),
        }
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Unblock the producer (its send fails once the receiver is gone), then join it.
        let (_, dead) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
