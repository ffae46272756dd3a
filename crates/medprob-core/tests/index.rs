//! The on-disk gallery index: what is written is what is read, its search is the in-memory
//! top-k exactly, and bad input or a damaged file is an error that names the file.

use std::path::Path;

use medprob_core::index::{AnswerRule, EMBEDDINGS_FILE, IDS_FILE};
use medprob_core::{
    kernels, Distance, GaussianEmbeddings, GaussianIndex, GaussianIndexWriter, IndexInfo,
    TopKOptions,
};
use rand::{Rng, SeedableRng};

fn random(n: usize, d: usize, seed: u64) -> GaussianEmbeddings {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mean = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let log_var = (0..n * d).map(|_| rng.random_range(-3.0f32..0.5)).collect();
    GaussianEmbeddings::from_vecs(n, d, mean, log_var).unwrap()
}

fn info(distance: Distance, dim: usize, len: usize) -> IndexInfo {
    IndexInfo {
        distance,
        dim,
        len,
        description: "test gallery".into(),
        match_probability: None,
        answer_rule: AnswerRule::Always,
        relevance: None,
        guarantee: None,
        gallery_offset: false,
    }
}

/// Write `g` in three pushes of uneven size.
fn write(dir: &Path, g: &GaussianEmbeddings, distance: Distance) {
    let ids: Vec<String> = (0..g.len()).map(|i| format!("study-{i}")).collect();
    let mut w = GaussianIndexWriter::create(dir, info(distance, g.dim(), g.len())).unwrap();
    let cuts = [0, g.len() / 3, g.len() / 3 + 1, g.len()];
    for c in cuts.windows(2) {
        w.push(&g.slice(c[0]..c[1]), &ids[c[0]..c[1]]).unwrap();
    }
    assert_eq!(w.finish().unwrap(), dir);
}

#[test]
fn written_index_reads_back_and_searches_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (n, d) = (1000, 24);
    // Rows 10 and 500 are identical, so ties are exercised across blocks.
    let mut g = random(n, d, 1);
    let (m, v) = g.row(10);
    let (m, v) = (m.to_vec(), v.to_vec());
    let mut mean = g.mean().to_owned();
    let mut log_var = g.log_var().to_owned();
    mean.row_mut(500).assign(&ndarray::ArrayView1::from(&m));
    log_var.row_mut(500).assign(&ndarray::ArrayView1::from(&v));
    g = GaussianEmbeddings::new(mean, log_var).unwrap();
    let queries = random(7, d, 2);
    for distance in [
        Distance::Mls,
        Distance::Csd,
        Distance::Wasserstein2,
        Distance::Bhattacharyya,
    ] {
        let dir = tmp.path().join(format!("{distance:?}"));
        write(&dir, &g, distance);
        let index = GaussianIndex::open(&dir).unwrap();
        assert_eq!(index.len(), n);
        assert_eq!(index.info().distance, distance);
        assert_eq!(index.ids()[999], "study-999");
        let back = index.rows(0..n).unwrap();
        assert_eq!(back.mean(), g.mean());
        assert_eq!(back.log_var(), g.log_var());
        index.verify().unwrap();

        let opts = TopKOptions {
            query_block: 3,
            gallery_block: 97,
        };
        let from_disk = index.search(&queries, 10, &opts).unwrap();
        let in_memory =
            kernels::top_k(distance, &queries, &g, 10, &TopKOptions::default()).unwrap();
        assert_eq!(from_disk.indices, in_memory.indices, "{distance:?}");
        if !matches!(distance, Distance::Csd | Distance::Wasserstein2) {
            // The fused loop sums each pair the same way whatever the block.
            assert_eq!(from_disk.distances, in_memory.distances);
        } else {
            // A GEMM's summation order depends on the block shape: last bits only.
            for (a, b) in from_disk.distances.iter().zip(&in_memory.distances) {
                assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
            }
        }
        // A query equal to the duplicated row finds both copies, lower index first.
        let q = g.slice(10..11);
        let top = index.search(&q, 2, &opts).unwrap();
        if distance == Distance::Csd {
            // CSD of an item with itself is Σ 2s: nearest is not guaranteed to be itself,
            // but the two identical rows always tie.
            let both: Vec<usize> = top.indices.row(0).to_vec();
            if both.contains(&10) {
                assert_eq!(both, vec![10, 500]);
            }
        } else {
            assert_eq!(top.indices.row(0).to_vec(), vec![10, 500]);
        }
        assert_eq!(top.distances[[0, 0]], top.distances[[0, 1]]);
    }
}

#[test]
fn the_file_is_plain_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let g = random(5, 3, 4);
    write(&dir, &g, Distance::Mls);
    let bytes = std::fs::read(dir.join(EMBEDDINGS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str, shape: &[usize]| -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.shape(), shape, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    assert_eq!(floats("mean", &[5, 3]), g.mean_slice());
    assert_eq!(floats("log_var", &[5, 3]), g.log_var_slice());
    // MLS's prepared quantities: s = max(e^v, ε) per dimension, no per-item offset, and
    // the range of s.
    let y = floats("search.y", &[5, 3]);
    for (s, v) in y.iter().zip(g.log_var_slice()) {
        assert_eq!(*s, v.exp().max(medprob_core::distance::MLS_EPS as f32));
    }
    assert_eq!(floats("search.offset", &[5]), vec![0.0; 5]);
    let lo = y.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(floats("search.y_range", &[2]), vec![lo, hi]);
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header) % 8, 0, "data starts 8-byte aligned");
    let info: IndexInfo =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(info.len, 5);

    // CSD stores ‖μ‖² and Σ σ² per item.
    let dir = tmp.path().join("csd");
    write(&dir, &g, Distance::Csd);
    let bytes = std::fs::read(dir.join(EMBEDDINGS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = {
        let mut n: Vec<String> = st.names().into_iter().map(String::from).collect();
        n.sort();
        n
    };
    assert_eq!(
        names,
        ["log_var", "mean", "search.sq_norm", "search.var_sum"]
    );
    let var_sum: Vec<f32> = st.tensor("search.var_sum").unwrap().data()[..4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (_, v) = g.row(0);
    let want: f32 = v.iter().map(|x| x.exp()).sum();
    assert_eq!(var_sum, vec![want]);
}

#[test]
fn bad_input_fails_and_leaves_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let g = random(4, 3, 5);
    let ids = ["a", "b", "c", "d"];

    // An existing folder is never touched.
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep.txt"), "mine").unwrap();
    let e = GaussianIndexWriter::create(&existing, info(Distance::Mls, 3, 4))
        .err()
        .unwrap();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read_to_string(existing.join("keep.txt")).unwrap(),
        "mine"
    );

    let dir = tmp.path().join("idx");
    let mut w = GaussianIndexWriter::create(&dir, info(Distance::Mls, 3, 4)).unwrap();
    let e = w.push(&g.slice(0..2), &["a", "a"]).unwrap_err();
    assert!(e.to_string().contains("\"a\" appears twice"), "{e}");
    let e = w.push(&random(1, 5, 6), &["z"]).unwrap_err();
    assert!(e.to_string().contains("D = 5"), "{e}");
    let e = w.push(&g.slice(0..1), &["x\ny"]).unwrap_err();
    assert!(e.to_string().contains("line break"), "{e}");
    // Too few items: finish refuses, and no folder (or temporary folder) remains.
    let e = w.finish().unwrap_err();
    assert!(e.to_string().contains("of the 4 items"), "{e}");
    assert!(!dir.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("existing")]);

    // A complete index, then damaged copies of it.
    let mut w = GaussianIndexWriter::create(&dir, info(Distance::Mls, 3, 4)).unwrap();
    w.push(&g, &ids).unwrap();
    w.finish().unwrap();
    let file = dir.join(EMBEDDINGS_FILE);
    let bytes = std::fs::read(&file).unwrap();

    std::fs::write(&file, &bytes[..bytes.len() - 4]).unwrap();
    let e = GaussianIndex::open(&dir).err().unwrap();
    assert!(e.to_string().contains(EMBEDDINGS_FILE), "{e}");

    // A NaN in a mean the search reads: the search stops and names the row.
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mean_row2 = header + 2 * 3 * 4;
    let mut nan = bytes.clone();
    nan[mean_row2..mean_row2 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&file, &nan).unwrap();
    let index = GaussianIndex::open(&dir).unwrap();
    let e = index.search(&g, 1, &TopKOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(EMBEDDINGS_FILE) && msg.contains("row 2") && msg.contains("\"c\""),
        "{msg}"
    );
    let e = index.verify().unwrap_err().to_string();
    assert!(e.contains("row 2") && e.contains("column 0"), "{e}");
    drop(index);

    // A changed log-variance: MLS search reads the prepared s = e^v, not v, so only
    // verify can tell, and it names the row whose stored quantity disagrees.
    let log_var_row3 = header + 4 * 3 * 4 + 3 * 3 * 4 + 8;
    let mut changed = bytes.clone();
    changed[log_var_row3..log_var_row3 + 4].copy_from_slice(&0.5f32.to_le_bytes());
    std::fs::write(&file, &changed).unwrap();
    let index = GaussianIndex::open(&dir).unwrap();
    assert!(index.search(&g, 1, &TopKOptions::default()).is_ok());
    let e = index.verify().unwrap_err().to_string();
    assert!(
        e.contains("row 3") && e.contains("search.y") && e.contains("damaged"),
        "{e}"
    );
    drop(index);

    // Indexes of the older layouts are refused with the way out; the third layout is the
    // fourth's without gallery offsets, the fourth the fifth's with a distance-only match
    // probability, and both are read as they are.
    let tag = b"medprob-gaussian-index/5";
    let at = bytes.windows(tag.len()).position(|w| w == tag).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let current = GaussianIndex::open(&dir).unwrap().info().clone();
    for version in [b'4', b'3'] {
        let mut older = bytes.clone();
        older[at + tag.len() - 1] = version;
        std::fs::write(&file, &older).unwrap();
        let index = GaussianIndex::open(&dir).unwrap();
        if version == b'3' {
            assert!(!index.info().gallery_offset);
        } else {
            assert_eq!(index.info(), &current);
        }
        index.verify().unwrap();
        drop(index);
    }
    for (version, expect) in [(b'1', "older layout"), (b'2', "own study")] {
        let mut old = bytes.clone();
        old[at + tag.len() - 1] = version;
        std::fs::write(&file, &old).unwrap();
        let e = GaussianIndex::open(&dir).err().unwrap().to_string();
        assert!(e.contains(expect) && e.contains("--write-index"), "{e}");
    }

    std::fs::write(&file, &bytes).unwrap();
    std::fs::write(dir.join(IDS_FILE), "a\nb\nc\n").unwrap();
    let e = GaussianIndex::open(&dir).err().unwrap();
    assert!(e.to_string().contains("3 ids for 4 embeddings"), "{e}");
}

#[test]
fn answers_carry_probabilities_uncertainty_and_the_abstain_decision() {
    use medprob_core::MatchProbability;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let g = random(50, 8, 9);
    let calibration = MatchProbability::new(0.05, 2.0).unwrap();
    let mut w = GaussianIndexWriter::create(
        &dir,
        IndexInfo {
            match_probability: Some(calibration),
            answer_rule: AnswerRule::AtLeast { threshold: 0.5 },
            relevance: Some("test relevance".into()),
            guarantee: Some("test rule".into()),
            gallery_offset: false,
            ..info(Distance::Csd, 8, 50)
        },
    )
    .unwrap();
    let ids: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    w.push(&g, &ids).unwrap();
    w.finish().unwrap();
    let index = GaussianIndex::open(&dir).unwrap();

    // Query 0 is gallery item 3 (near: CSD ≈ Σ 2s ≈ 8); query 1 is item 3 moved by 5 in
    // every dimension (far: CSD ≈ 200 + 8).
    let (m, v) = g.row(3);
    let far: Vec<f32> = m.iter().map(|x| x + 5.0).collect();
    let q = GaussianEmbeddings::from_vecs(2, 8, [m, &far].concat(), [v, v].concat()).unwrap();
    let answers = index.answer(&q, 3, &TopKOptions::default()).unwrap();
    for a in &answers {
        assert!(a.hits.windows(2).all(|w| w[0].distance <= w[1].distance));
        assert_eq!(a.hits[0].id, format!("s{}", a.hits[0].row));
    }
    let unc = q.uncertainty();
    for (a, u) in answers.iter().zip(&unc) {
        assert_eq!(a.uncertainty, u.total_variance);
        for h in &a.hits {
            let p = calibration.probability(h.distance as f64);
            assert_eq!(h.probability, Some(p));
        }
        assert_eq!(a.answered, a.hits[0].probability.unwrap() >= 0.5);
    }
    assert!(answers[0].answered, "the near query is answered");
    assert!(!answers[1].answered, "the far query abstains");
    assert_eq!(
        index.info().relevance.as_deref(),
        Some("test relevance"),
        "what a match means travels with the index"
    );
}

/// A probability that reads the two uncertainties travels with the index and gives each
/// hit its own: the query's and the stored hit's mean log-variance enter the logit.
#[test]
fn answers_read_the_hit_and_query_uncertainty_when_the_probability_does() {
    use medprob_core::MatchProbability;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let g = random(30, 4, 5);
    let calibration = MatchProbability::new(0.05, 0.5)
        .unwrap()
        .with_uncertainty(-0.7, 1.3)
        .unwrap();
    let mut w = GaussianIndexWriter::create(
        &dir,
        IndexInfo {
            match_probability: Some(calibration),
            answer_rule: AnswerRule::AtLeast { threshold: 0.5 },
            gallery_offset: false,
            ..info(Distance::Csd, 4, 30)
        },
    )
    .unwrap();
    let ids: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
    w.push(&g, &ids).unwrap();
    w.finish().unwrap();
    let index = GaussianIndex::open(&dir).unwrap();
    assert_eq!(index.info().match_probability, Some(calibration));
    let q = random(3, 4, 6);
    let (u_q, u_g) = (q.mean_log_variances(), g.mean_log_variances());
    let answers = index.answer(&q, 5, &TopKOptions::default()).unwrap();
    let mut spread = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        for h in &a.hits {
            let want = calibration.probability_of(h.distance as f64, u_q[i], u_g[h.row]);
            let got = h.probability.unwrap();
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
            assert!((index.mean_log_variance(h.row) - u_g[h.row]).abs() < 1e-12);
            spread.push(got - calibration.probability(h.distance as f64));
        }
    }
    assert!(
        spread.iter().any(|d| d.abs() > 1e-3),
        "the uncertainty terms change some probability"
    );
}

#[test]
fn gallery_offsets_are_stored_and_ranked_as_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let g = random(40, 6, 21);
    let q = random(5, 6, 22);
    let offsets: Vec<f32> = (0..40).map(|j| ((j * 13 % 7) as f32 - 3.0) * 1.5).collect();
    let corrected = g.clone().with_gallery_offset(offsets.clone()).unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    for distance in [Distance::Csd, Distance::Mls] {
        let dir = tmp.path().join(format!("{distance:?}"));
        let mut w = GaussianIndexWriter::create(
            &dir,
            IndexInfo {
                gallery_offset: true,
                ..info(distance, 6, 40)
            },
        )
        .unwrap();
        // Blocks carry their own slice of the offsets.
        w.push(&corrected.slice(0..15), &ids[..15]).unwrap();
        w.push(&corrected.slice(15..40), &ids[15..]).unwrap();
        w.finish().unwrap();
        let index = GaussianIndex::open(&dir).unwrap();
        assert!(index.info().gallery_offset);
        index.verify().unwrap();
        assert_eq!(
            index.rows(0..40).unwrap().gallery_offset(),
            Some(&offsets[..])
        );
        let opts = TopKOptions {
            query_block: 2,
            gallery_block: 7,
        };
        let from_index = index.search(&q, 5, &opts).unwrap();
        let in_memory = kernels::top_k(distance, &q, &corrected, 5, &opts).unwrap();
        assert_eq!(from_index.indices, in_memory.indices, "{distance:?}");
        assert_eq!(from_index.distances, in_memory.distances, "{distance:?}");
        // The offsets change the answer here.
        let raw = kernels::top_k(distance, &q, &g, 5, &opts).unwrap();
        assert_ne!(raw.indices, in_memory.indices, "{distance:?}");
    }
    // Offsets and the index must agree: both mismatches are refused.
    let mut w = GaussianIndexWriter::create(
        &tmp.path().join("with"),
        IndexInfo {
            gallery_offset: true,
            ..info(Distance::Csd, 6, 40)
        },
    )
    .unwrap();
    let e = w.push(&g, &ids).unwrap_err().to_string();
    assert!(e.contains("has none"), "{e}");
    let mut w =
        GaussianIndexWriter::create(&tmp.path().join("without"), info(Distance::Csd, 6, 40))
            .unwrap();
    let e = w.push(&corrected, &ids).unwrap_err().to_string();
    assert!(e.contains("created without them"), "{e}");
}
