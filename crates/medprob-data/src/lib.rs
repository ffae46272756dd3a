//! # medprob-data: studies, views, report sections and batches
//!
//! The first stage of the pipeline, as separate pieces composed once:
//!
//! * [`record`]: [`StudyRecord`] and the study CSV (the MedProbCLIP reference's schema plus
//!   optional patient, split and CheXpert label columns), written atomically;
//! * [`sections`]: FINDINGS / IMPRESSION from free-text reports (MIMIC-CXR header variants);
//! * [`iu`]: the Indiana University (Open-i) reports, from XML files or their `.tgz`;
//! * [`mimic`]: MIMIC-CXR-JPG metadata, split, CheXpert labels and reports → split CSVs.
//!
//! Still to come (see the issue tracker): image decoding and
//! augmentation, multi-view / multi-section sampling, tokenising and the batch loader.
//! Every error names the file, line, column or study at fault ([`DataError`]).

pub mod error;
pub mod image;
pub mod iu;
pub mod mimic;
pub mod record;
pub mod sections;
mod table;

pub use error::{DataError, Result};
pub use record::{
    read_studies, write_studies, Label, Split, StudyRecord, ViewKind, CHEXPERT_LABELS,
};
