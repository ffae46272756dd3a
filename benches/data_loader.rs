//! The training loader: 512×512 PNG radiographs → two 224×224 augmented tensors per study,
//! decoding included, on 2 worker threads. Throughput in images per second.
//!
//! cargo bench --bench data_loader

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medprob::data::loader::{LoaderConfig, StudyLoader};
use medprob::data::StudyRecord;

fn loader_throughput(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/images");
    let studies: Vec<StudyRecord> = (0..32)
        .map(|i| {
            let mut s = StudyRecord::new(format!("s{i}"));
            s.image_paths = vec!["00000001_000.png".into(), "00027426_000.png".into()];
            s.view_names = vec!["PA".into(), "LATERAL".into()];
            s.findings = "The lungs are clear. No pleural effusion.".into();
            s
        })
        .collect();
    let config = LoaderConfig {
        image_root: root,
        batch_size: 32,
        workers: 2,
        ..Default::default()
    };
    let loader = StudyLoader::new(studies, config).expect("valid studies");
    let mut group = c.benchmark_group("loader");
    group.sample_size(10);
    group.throughput(Throughput::Elements(64)); // 32 studies × 2 views
    let mut epoch = 0;
    group.bench_function("train_batch_512png_to_224", |b| {
        b.iter(|| {
            epoch += 1;
            loader.train_batch(epoch, 0).expect("readable images")
        })
    });
    group.finish();
}

criterion_group!(benches, loader_throughput);
criterion_main!(benches);
