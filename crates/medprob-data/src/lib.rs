//! # medprob-data: studies, views, report sections and batches
//!
//! The first stage of the pipeline, as separate pieces composed once:
//!
//! * [`record`]: [`StudyRecord`] and the study CSV (the MedProbCLIP reference's schema plus
//!   optional patient, split and CheXpert label columns), written atomically;
//! * [`sections`]: FINDINGS / IMPRESSION from free-text reports (MIMIC-CXR header variants);
//! * [`iu`]: the Indiana University (Open-i) reports, from XML files or their `.tgz`;
//! * [`mimic`]: MIMIC-CXR-JPG metadata, split, CheXpert labels and reports → split CSVs;
//! * [`image`]: decoding, the evaluation transform, seeded augmentation without flips;
//! * [`sampling`]: two views and two sections per study for training, one of each for
//!   evaluation; text augmentation;
//! * [`loader`]: parallel, prefetched, seed-reproducible batches with `on_bad_study`;
//! * [`tokenize`]: report tokenisers from `tokenizer.json`, a BERT `vocab.txt`, or trained
//!   WordPiece;
//! * [`synth`]: SynthCXR, the generated default dataset (states, reports and labels so far).
//!
//! Every error names the file, line, column or study at fault ([`DataError`]).

pub mod error;
pub mod image;
pub mod iu;
pub mod limits;
pub mod loader;
pub mod mimic;
pub mod record;
pub mod sampling;
pub mod sections;
pub mod synth;
mod table;
pub mod tokenize;

pub use error::{DataError, Result};
pub use limits::InputLimits;
pub use record::{
    read_studies, read_studies_from, read_studies_from_limited, read_studies_limited,
    write_studies, Label, Split, StudyRecord, ViewKind, CHEXPERT_LABELS,
};
