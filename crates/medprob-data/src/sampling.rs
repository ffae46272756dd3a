//! Which two images and which two report sections of a study go into a training pair, and
//! which one of each at evaluation (SPEC §5); and the text augmentations.
//!
//! Training views: two images from different view groups (frontal / lateral / other) when
//! the study has them, else two different images, else the one image twice (the two copies
//! then differ only by augmentation). Evaluation: the first frontal image (else the first
//! image) and the findings (the impression when findings are empty).

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::record::{StudyRecord, ViewKind};

/// Indices of the two training images, or `None` for a study without images.
pub fn training_views<R: Rng + ?Sized>(study: &StudyRecord, rng: &mut R) -> Option<(usize, usize)> {
    let n = study.image_paths.len();
    match n {
        0 => None,
        1 => Some((0, 0)),
        _ => {
            let kinds = study.view_kinds();
            let first = rng.random_range(0..n);
            let other_group: Vec<usize> = (0..n).filter(|&j| kinds[j] != kinds[first]).collect();
            let pool: Vec<usize> = if other_group.is_empty() {
                (0..n).filter(|&j| j != first).collect()
            } else {
                other_group
            };
            let second = pool[rng.random_range(0..pool.len())];
            Some((first, second))
        }
    }
}

/// The evaluation image: the first frontal one, else the first.
pub fn evaluation_view(study: &StudyRecord) -> Option<usize> {
    if study.image_paths.is_empty() {
        return None;
    }
    Some(
        study
            .view_kinds()
            .iter()
            .position(|k| *k == ViewKind::Frontal)
            .unwrap_or(0),
    )
}

/// Which sections make the two training texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionPolicy {
    /// (findings, impression), each falling back to the other when empty (the reference).
    Both,
    /// Each text independently a random non-empty section.
    Random,
    /// Findings twice (impression when findings are empty).
    FindingsOnly,
    /// Impression twice (findings when the impression is empty).
    ImpressionOnly,
}

/// The two training texts, or `None` when both sections are empty.
pub fn training_sections<R: Rng + ?Sized>(
    study: &StudyRecord,
    policy: SectionPolicy,
    rng: &mut R,
) -> Option<(String, String)> {
    let (f, i) = (study.findings.as_str(), study.impression.as_str());
    if f.is_empty() && i.is_empty() {
        return None;
    }
    let or = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    Some(match policy {
        SectionPolicy::Both => (or(f, i), or(i, f)),
        SectionPolicy::FindingsOnly => (or(f, i), or(f, i)),
        SectionPolicy::ImpressionOnly => (or(i, f), or(i, f)),
        SectionPolicy::Random => {
            let mut pick = || {
                if rng.random_bool(0.5) {
                    or(f, i)
                } else {
                    or(i, f)
                }
            };
            (pick(), pick())
        }
    })
}

/// The evaluation text: findings, or the impression when findings are empty.
pub fn evaluation_text(study: &StudyRecord) -> Option<&str> {
    match (study.findings.as_str(), study.impression.as_str()) {
        ("", "") => None,
        ("", i) => Some(i),
        (f, _) => Some(f),
    }
}

/// Report text augmentation (SPEC §5). In the reference code this never runs (a dead
/// branch); here it runs whenever the loader is given one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextAugment {
    /// Probability of shuffling the order of sentences.
    pub sentence_shuffle: f64,
    /// Probability of dropping each word, negations excepted.
    pub word_dropout: f64,
    /// Replace numbers (`7`, `3.5`, `2cm`) by this token; `None` keeps them.
    pub number_mask: Option<String>,
    /// Probability of keeping only some of the sentences of a text of several (a random
    /// number from one to all but one, chosen at random, in their order): short texts, such
    /// as a single finding or a zero-shot prompt, are then in the training distribution.
    pub sentence_subset: f64,
}

impl Default for TextAugment {
    fn default() -> Self {
        Self {
            sentence_shuffle: 0.5,
            word_dropout: 0.03,
            number_mask: Some("[MASK]".into()),
            sentence_subset: 0.0,
        }
    }
}

/// Words that are never dropped: losing one inverts the meaning of a sentence.
pub const NEGATIONS: [&str; 8] = [
    "no", "not", "without", "absent", "neither", "nor", "never", "none",
];

impl TextAugment {
    /// Apply to one text.
    pub fn apply<R: Rng + ?Sized>(&self, text: &str, rng: &mut R) -> String {
        let mut sentences = split_sentences(text);
        // Drawn only when enabled, so configs without it keep their random stream.
        if self.sentence_subset > 0.0
            && sentences.len() > 1
            && rng.random_bool(self.sentence_subset.clamp(0.0, 1.0))
        {
            let n = sentences.len();
            let keep = rng.random_range(1..n);
            let mut chosen = rand::seq::index::sample(rng, n, keep).into_vec();
            chosen.sort_unstable();
            sentences = chosen.into_iter().map(|i| sentences[i]).collect();
        }
        if sentences.len() > 1 && rng.random_bool(self.sentence_shuffle.clamp(0.0, 1.0)) {
            sentences.shuffle(rng);
        }
        let mut words = Vec::new();
        for sentence in sentences {
            for word in sentence.split_whitespace() {
                let bare: String = word
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
                    .to_lowercase();
                let negation = NEGATIONS.contains(&bare.as_str());
                if !negation && rng.random_bool(self.word_dropout.clamp(0.0, 1.0)) {
                    continue;
                }
                match &self.number_mask {
                    Some(mask) if word.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                        // Keep sentence punctuation that ends the number ("3.5cm." → "[MASK].").
                        let tail = if word.ends_with(['.', ',', ';']) {
                            &word[word.len() - 1..]
                        } else {
                            ""
                        };
                        words.push(format!("{mask}{tail}"));
                    }
                    _ => words.push(word.to_string()),
                }
            }
        }
        words.join(" ")
    }
}

/// The sentences of a text, trimmed: a sentence ends at `.`, `?` or `!` followed by
/// whitespace or the end ("3.5" stays whole).
///
/// ```
/// let s = medprob_data::sampling::split_sentences("Heart size 3.5 cm. No effusion!  Clear");
/// assert_eq!(s, ["Heart size 3.5 cm.", "No effusion!", "Clear"]);
/// ```
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_end = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        if matches!(c, '.' | '?' | '!') && at_end {
            out.push(text[start..i + c.len_utf8()].trim());
            start = i + c.len_utf8();
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn study(views: &[&str], findings: &str, impression: &str) -> StudyRecord {
        let mut s = StudyRecord::new("s");
        s.image_paths = views
            .iter()
            .enumerate()
            .map(|(i, _)| format!("{i}.png").into())
            .collect();
        s.view_names = views.iter().map(|v| v.to_string()).collect();
        s.findings = findings.into();
        s.impression = impression.into();
        s
    }

    #[test]
    fn sentence_subsets_keep_some_sentences_whole_and_in_order() {
        let text = "Left effusion. No pneumothorax. Heart size is normal. Lines in place.";
        let all = split_sentences(text);
        let a = TextAugment {
            sentence_shuffle: 0.0,
            word_dropout: 0.0,
            number_mask: None,
            sentence_subset: 1.0,
        };
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let out = a.apply(text, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let kept = split_sentences(&out);
            assert!(!kept.is_empty() && kept.len() < all.len(), "{out}");
            let positions: Vec<usize> = kept
                .iter()
                .map(|k| all.iter().position(|s| s == k).expect("a whole sentence"))
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
            sizes.insert(kept.len());
        }
        assert_eq!(sizes, [1, 2, 3].into_iter().collect());
        // One sentence stays; probability 0 is the identity and draws nothing.
        assert_eq!(
            a.apply("Left effusion.", &mut rand::rngs::StdRng::seed_from_u64(1)),
            "Left effusion."
        );
        let off = TextAugment {
            sentence_subset: 0.0,
            ..a.clone()
        };
        let mut r1 = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(off.apply(text, &mut r1), text);
        // Off, it draws exactly what the augmentation drew before it existed: one draw for
        // the shuffle, one per word that is not a negation (10 of the 11).
        let mut r2 = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..11 {
            r2.random_bool(0.0);
        }
        assert_eq!(r1.random::<u64>(), r2.random::<u64>());
    }

    #[test]
    fn views_come_from_different_groups_when_possible() {
        let s = study(&["PA", "AP", "LATERAL"], "f", "i");
        for seed in 0..100 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (a, b) = training_views(&s, &mut rng).unwrap();
            let k = s.view_kinds();
            assert_ne!(k[a], k[b], "seed {seed}: {a} {b}");
        }
        let s = study(&["PA", "AP"], "f", "i");
        for seed in 0..20 {
            let (a, b) = training_views(&s, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap();
            assert_ne!(a, b, "two different images");
        }
        let s = study(&["PA"], "f", "i");
        assert_eq!(
            training_views(&s, &mut rand::rngs::StdRng::seed_from_u64(0)),
            Some((0, 0))
        );
        assert_eq!(
            training_views(
                &study(&[], "f", "i"),
                &mut rand::rngs::StdRng::seed_from_u64(0)
            ),
            None
        );
    }

    #[test]
    fn evaluation_is_deterministic() {
        let s = study(&["LATERAL", "AP", "PA"], "", "Impression.");
        assert_eq!(evaluation_view(&s), Some(1));
        assert_eq!(evaluation_text(&s), Some("Impression."));
        let s = study(&["LL"], "Findings.", "Impression.");
        assert_eq!(evaluation_view(&s), Some(0));
        assert_eq!(evaluation_text(&s), Some("Findings."));
        assert_eq!(evaluation_text(&study(&["PA"], "", "")), None);
    }

    #[test]
    fn section_policies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = study(&["PA"], "F.", "I.");
        let get = |p, rng: &mut rand::rngs::StdRng| training_sections(&s, p, rng).unwrap();
        assert_eq!(
            get(SectionPolicy::Both, &mut rng),
            ("F.".into(), "I.".into())
        );
        assert_eq!(
            get(SectionPolicy::FindingsOnly, &mut rng),
            ("F.".into(), "F.".into())
        );
        assert_eq!(
            get(SectionPolicy::ImpressionOnly, &mut rng),
            ("I.".into(), "I.".into())
        );
        let seen: std::collections::HashSet<_> = (0..50)
            .map(|_| get(SectionPolicy::Random, &mut rng))
            .collect();
        assert_eq!(seen.len(), 4, "random covers all four combinations");
        let only_imp = study(&["PA"], "", "I.");
        assert_eq!(
            training_sections(&only_imp, SectionPolicy::Both, &mut rng),
            Some(("I.".into(), "I.".into()))
        );
        assert_eq!(
            training_sections(&study(&["PA"], "", ""), SectionPolicy::Both, &mut rng),
            None
        );
    }

    #[test]
    fn text_augmentation_runs_and_never_drops_negations() {
        let text = "No pleural effusion. Heart size is not enlarged. A 3.5cm nodule. Lungs without consolidation.";
        let aug = TextAugment {
            sentence_shuffle: 1.0,
            word_dropout: 0.5,
            number_mask: Some("[MASK]".into()),
            sentence_subset: 0.0,
        };
        let mut changed = 0;
        for seed in 0..50 {
            let out = aug.apply(text, &mut rand::rngs::StdRng::seed_from_u64(seed));
            for neg in ["No", "not", "without"] {
                assert!(
                    out.split_whitespace().any(|w| w == neg),
                    "seed {seed}: lost {neg:?} in {out:?}"
                );
            }
            assert!(!out.contains("3.5"), "{out}");
            changed += (out != text) as usize;
        }
        assert_eq!(changed, 50);
        let keep = TextAugment {
            sentence_shuffle: 0.0,
            word_dropout: 0.0,
            number_mask: None,
            sentence_subset: 0.0,
        };
        assert_eq!(
            keep.apply(text, &mut rand::rngs::StdRng::seed_from_u64(0)),
            text
        );
        let masked = TextAugment {
            number_mask: Some("[MASK]".into()),
            ..keep
        };
        assert_eq!(
            masked.apply(
                "Tube 4 cm above the carina.",
                &mut rand::rngs::StdRng::seed_from_u64(0)
            ),
            "Tube [MASK] cm above the carina."
        );
    }
}
