//! Which gallery items count as a correct answer for a query.
//!
//! Retrieval on chest X-rays has many right answers: a report that says "small left pleural
//! effusion" is a fine answer for any radiograph with a small left effusion, not only for
//! the one it was written for. Every metric that asks "was this hit right?" takes a
//! [`Relevance`], so the same ranking can be scored against
//!
//! * **instance** relevance: the query's own study (equal study keys);
//! * **label** relevance: CheXpert label vectors (label = 1 positive; 0, blank and −1 not)
//!   that differ in at most ζ places — PMRP's rule (Chun et al. 2021). It ignores side: a
//!   right effusion "matches" a left one;
//! * **state** relevance: equal keys of a generator's hidden state (SynthCXR: the same
//!   findings with the same sides);
//! * a **custom** relation: the relevant gallery items of each query, given explicitly.
//!
//! A relevance is built for one direction (queries × gallery); [`Relevance::transpose`]
//! gives the other.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// What kind of rule a [`Relevance`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelevanceKind {
    /// The query's own study.
    Instance,
    /// CheXpert label vectors within Hamming distance ζ.
    Labels,
    /// Equal hidden-state keys (same findings, same sides).
    State,
    /// An explicit relation.
    Custom,
}

impl RelevanceKind {
    /// Short name for reports and JSON keys.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::Labels => "labels",
            Self::State => "state",
            Self::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// Relevant when the group ids are equal (instance and state).
    Groups { query: Vec<u64>, gallery: Vec<u64> },
    /// Relevant when `popcount(q ^ g) ≤ zeta`.
    Labels {
        query: Vec<u32>,
        gallery: Vec<u32>,
        zeta: u32,
    },
    /// Relevant gallery indices per query, sorted and unique.
    Pairs { relevant: Vec<Vec<usize>> },
}

/// Which gallery items are correct for each query, with the number of correct items per
/// query computed once.
///
/// ```
/// use medprob_metrics::relevance::Relevance;
/// // Query 0 has labels {0}; gallery items 0 and 2 share them exactly.
/// let r = Relevance::labels(&[0b01], &[0b01, 0b11, 0b01], 0)?;
/// assert!(r.is_relevant(0, 0) && !r.is_relevant(0, 1) && r.is_relevant(0, 2));
/// assert_eq!(r.count(0), 2);
/// // With ζ = 1 the item that adds one label counts too.
/// assert_eq!(Relevance::labels(&[0b01], &[0b01, 0b11, 0b01], 1)?.count(0), 3);
/// # Ok::<(), medprob_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Relevance {
    kind: RelevanceKind,
    rule: Rule,
    gallery_len: usize,
    counts: Vec<usize>,
}

impl Relevance {
    /// Instance relevance: query `i` and gallery item `j` are a match when their study keys
    /// are equal.
    pub fn instance<K: std::hash::Hash + Eq>(query_keys: &[K], gallery_keys: &[K]) -> Self {
        Self::grouped(RelevanceKind::Instance, query_keys, gallery_keys)
    }

    /// State relevance: equal hidden-state keys (e.g. SynthCXR's canonical list of findings
    /// with their sides).
    pub fn state<K: std::hash::Hash + Eq>(query_keys: &[K], gallery_keys: &[K]) -> Self {
        Self::grouped(RelevanceKind::State, query_keys, gallery_keys)
    }

    fn grouped<'k, K: std::hash::Hash + Eq>(
        kind: RelevanceKind,
        query_keys: &'k [K],
        gallery_keys: &'k [K],
    ) -> Self {
        // Dense group ids: equal keys get equal ids, so relevance is one integer compare.
        let mut ids: HashMap<&'k K, u64> = HashMap::new();
        let mut id = |k: &'k K| -> u64 {
            let next = ids.len() as u64;
            *ids.entry(k).or_insert(next)
        };
        let gallery: Vec<u64> = gallery_keys.iter().map(&mut id).collect();
        let query: Vec<u64> = query_keys.iter().map(&mut id).collect();
        let mut per_group: HashMap<u64, usize> = HashMap::new();
        for &g in &gallery {
            *per_group.entry(g).or_insert(0) += 1;
        }
        let counts = query
            .iter()
            .map(|q| per_group.get(q).copied().unwrap_or(0))
            .collect();
        Self {
            kind,
            gallery_len: gallery.len(),
            rule: Rule::Groups { query, gallery },
            counts,
        }
    }

    /// Label relevance at tolerance `zeta`: label bit masks (bit `c` set when label `c` is
    /// positive) that differ in at most `zeta` bits. `zeta = 0` asks for exactly the same
    /// positive label set.
    pub fn labels(query: &[u32], gallery: &[u32], zeta: u32) -> Result<Self> {
        if zeta > 32 {
            return Err(MetricsError::InvalidParameter {
                name: "zeta",
                value: zeta as f64,
                reason: "a 32-bit label mask differs in at most 32 places",
            });
        }
        // Studies per distinct mask: a query's count is a sum over distinct masks.
        let mut per_mask: HashMap<u32, usize> = HashMap::new();
        for &g in gallery {
            *per_mask.entry(g).or_insert(0) += 1;
        }
        let counts = query
            .iter()
            .map(|&q| {
                per_mask
                    .iter()
                    .filter(|(&m, _)| (m ^ q).count_ones() <= zeta)
                    .map(|(_, &c)| c)
                    .sum()
            })
            .collect();
        Ok(Self {
            kind: RelevanceKind::Labels,
            gallery_len: gallery.len(),
            rule: Rule::Labels {
                query: query.to_vec(),
                gallery: gallery.to_vec(),
                zeta,
            },
            counts,
        })
    }

    /// A user-supplied relation: `relevant[i]` lists the gallery items that are correct for
    /// query `i` (any order; duplicates are merged). An index outside the gallery is an
    /// error naming the query.
    pub fn custom(gallery_len: usize, relevant: Vec<Vec<usize>>) -> Result<Self> {
        let mut relevant = relevant;
        for (q, items) in relevant.iter_mut().enumerate() {
            items.sort_unstable();
            items.dedup();
            if let Some(&j) = items.last().filter(|&&j| j >= gallery_len) {
                return Err(MetricsError::BadValue {
                    what: "Relevance::custom: relevant item of query",
                    index: q,
                    value: j as f64,
                    reason: "not a gallery index",
                });
            }
        }
        let counts = relevant.iter().map(Vec::len).collect();
        Ok(Self {
            kind: RelevanceKind::Custom,
            gallery_len,
            rule: Rule::Pairs { relevant },
            counts,
        })
    }

    /// The rule's kind.
    pub fn kind(&self) -> RelevanceKind {
        self.kind
    }

    /// One line for reports: "labels (ζ = 0)", "state", ….
    pub fn describe(&self) -> String {
        match &self.rule {
            Rule::Labels { zeta, .. } => format!("labels (ζ = {zeta})"),
            _ => self.kind.name().to_string(),
        }
    }

    /// Number of queries.
    pub fn queries(&self) -> usize {
        self.counts.len()
    }

    /// Number of gallery items.
    pub fn gallery_len(&self) -> usize {
        self.gallery_len
    }

    /// Whether gallery item `g` is a correct answer for query `q`.
    pub fn is_relevant(&self, q: usize, g: usize) -> bool {
        match &self.rule {
            Rule::Groups { query, gallery } => query[q] == gallery[g],
            Rule::Labels {
                query,
                gallery,
                zeta,
            } => (query[q] ^ gallery[g]).count_ones() <= *zeta,
            Rule::Pairs { relevant } => relevant[q].binary_search(&g).is_ok(),
        }
    }

    /// The number of correct gallery items of query `q`.
    pub fn count(&self, q: usize) -> usize {
        self.counts[q]
    }

    /// Queries with at least one correct gallery item.
    pub fn answerable(&self) -> usize {
        self.counts.iter().filter(|&&c| c > 0).count()
    }

    /// The same rule in the other direction: the gallery becomes the queries.
    pub fn transpose(&self) -> Self {
        match &self.rule {
            Rule::Groups { query, gallery } => Self::grouped(self.kind, gallery, query),
            Rule::Labels {
                query,
                gallery,
                zeta,
            } => Self::labels(gallery, query, *zeta).expect("ζ was checked"),
            Rule::Pairs { relevant } => {
                let mut t = vec![Vec::new(); self.gallery_len];
                for (q, items) in relevant.iter().enumerate() {
                    for &g in items {
                        t[g].push(q);
                    }
                }
                Self::custom(relevant.len(), t).expect("indices are in range")
            }
        }
    }

    /// Check that this relevance has `queries` queries and `gallery` items.
    pub fn check_shape(&self, what: &'static str, queries: usize, gallery: usize) -> Result<()> {
        if self.queries() != queries || self.gallery_len != gallery {
            return Err(MetricsError::Length {
                what,
                detail: format!(
                    "the relevance is for {} queries × {} gallery items, the ranking for {queries} × {gallery}",
                    self.queries(),
                    self.gallery_len
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_matches_equal_keys_only() {
        let r = Relevance::instance(&["a", "b", "z"], &["b", "a", "a"]);
        assert_eq!(r.kind(), RelevanceKind::Instance);
        assert!(r.is_relevant(0, 1) && r.is_relevant(0, 2) && !r.is_relevant(0, 0));
        assert_eq!((r.count(0), r.count(1), r.count(2)), (2, 1, 0));
        assert_eq!(r.answerable(), 2);
        let t = r.transpose();
        assert_eq!((t.queries(), t.gallery_len()), (3, 3));
        assert!(t.is_relevant(1, 0) && t.is_relevant(0, 1) && !t.is_relevant(0, 2));
        assert_eq!(t.kind(), RelevanceKind::Instance);
    }

    #[test]
    fn labels_by_hamming_distance() {
        // Query 0b0110 against 0b0110 (0 off), 0b0100 (1 off), 0b1001 (4 off).
        let g = [0b0110, 0b0100, 0b1001];
        let r0 = Relevance::labels(&[0b0110], &g, 0).unwrap();
        let r1 = Relevance::labels(&[0b0110], &g, 1).unwrap();
        assert_eq!((r0.count(0), r1.count(0)), (1, 2));
        assert!(!r0.is_relevant(0, 1) && r1.is_relevant(0, 1) && !r1.is_relevant(0, 2));
        assert_eq!(r1.describe(), "labels (ζ = 1)");
        assert!(Relevance::labels(&[0], &[0], 33).is_err());
    }

    #[test]
    fn state_groups_ignore_nothing() {
        let q = ["pleural_effusion:left".to_string(), String::new()];
        let g = [
            "pleural_effusion:right".to_string(),
            String::new(),
            "pleural_effusion:left".to_string(),
        ];
        let r = Relevance::state(&q, &g);
        assert!(r.is_relevant(0, 2) && !r.is_relevant(0, 0) && r.is_relevant(1, 1));
        assert_eq!((r.count(0), r.count(1)), (1, 1));
        assert_eq!(r.describe(), "state");
    }

    #[test]
    fn custom_relation_checks_indices() {
        let r = Relevance::custom(3, vec![vec![2, 0, 2], vec![]]).unwrap();
        assert_eq!((r.count(0), r.count(1)), (2, 0));
        assert!(r.is_relevant(0, 0) && !r.is_relevant(0, 1));
        let t = r.transpose();
        assert_eq!((t.queries(), t.gallery_len()), (3, 2));
        assert!(t.is_relevant(2, 0) && !t.is_relevant(1, 0));
        let e = Relevance::custom(2, vec![vec![0], vec![5]]).unwrap_err();
        assert!(e.to_string().contains("index 1"), "{e}");
        assert!(r.check_shape("t", 2, 3).is_ok());
        assert!(r.check_shape("t", 2, 4).is_err());
    }
}
