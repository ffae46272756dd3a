//! Report tokenising with Hugging Face `tokenizers`: a backbone's own `tokenizer.json`, a
//! BERT `vocab.txt`, or a WordPiece vocabulary trained on a report corpus (for text
//! encoders trained from scratch). Sequences are truncated to `max_length` (256 by default,
//! SPEC §5) and a batch is padded to its longest sequence.

use std::path::Path;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{DataError, Result};

/// BERT's special tokens, in the order trained vocabularies get them (ids 0–4).
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Token ids and attention mask of a batch, `[batch, length]` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Sequences in the batch.
    pub batch: usize,
    /// Padded length.
    pub length: usize,
}

/// A tokenizer for reports.
#[derive(Clone)]
pub struct ReportTokenizer {
    inner: Tokenizer,
}

fn err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Report {
        path: path.to_path_buf(),
        reason: format!("tokenizer: {e}"),
    }
}

impl ReportTokenizer {
    /// From a `tokenizer.json` (the backbone's own).
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| err(path, e))?;
        Self::configured(inner, max_length, path)
    }

    /// From a BERT `vocab.txt`: BERT normaliser (lower-casing as asked), BERT
    /// pre-tokeniser, WordPiece, `[CLS] … [SEP]`.
    pub fn from_bert_vocab(path: &Path, lowercase: bool, max_length: usize) -> Result<Self> {
        let file = path.to_string_lossy();
        let model = WordPiece::from_file(&file)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| err(path, e))?;
        let mut inner = Tokenizer::new(model);
        Self::bert_pipeline(&mut inner, lowercase, path)?;
        Self::configured(inner, max_length, path)
    }

    /// Learn a WordPiece vocabulary of at most `vocab_size` entries from `corpus`.
    ///
    /// The vocabulary is: the special tokens, every character seen (alone and as a `##`
    /// continuation, so any word can be spelled), then whole words by falling frequency
    /// (at least `min_frequency` occurrences; ties in alphabetical order). Text is
    /// normalised and split exactly as BERT does. The result depends only on the corpus:
    /// the `tokenizers` crate's own WordPiece trainer breaks ties through hash-map order
    /// and gives a different vocabulary on each run, which would make seeded training
    /// irreproducible.
    pub fn train_wordpiece<I, S>(
        corpus: I,
        vocab_size: usize,
        min_frequency: u64,
        max_length: usize,
    ) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        use std::collections::{BTreeMap, BTreeSet};
        use tokenizers::{
            NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
            PreTokenizer,
        };
        let here = Path::new("(training corpus)");
        let normalizer = BertNormalizer::new(true, true, None, true);
        let splitter = BertPreTokenizer;
        let mut words: BTreeMap<String, u64> = BTreeMap::new();
        let mut chars: BTreeSet<char> = BTreeSet::new();
        for text in corpus {
            let mut pts = PreTokenizedString::from(text.as_ref());
            pts.normalize(|n: &mut NormalizedString| normalizer.normalize(n))
                .map_err(|e| err(here, e))?;
            splitter.pre_tokenize(&mut pts).map_err(|e| err(here, e))?;
            for (w, _, _) in pts.get_splits(OffsetReferential::Normalized, OffsetType::Byte) {
                chars.extend(w.chars());
                *words.entry(w.to_string()).or_insert(0) += 1;
            }
        }
        let mut vocab: Vec<String> = SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
        vocab.extend(chars.iter().map(|c| c.to_string()));
        vocab.extend(chars.iter().map(|c| format!("##{c}")));
        let mut frequent: Vec<(&String, &u64)> = words
            .iter()
            .filter(|(w, &n)| n >= min_frequency && w.chars().count() > 1)
            .collect();
        frequent.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let room = vocab_size.saturating_sub(vocab.len());
        vocab.extend(frequent.into_iter().take(room).map(|(w, _)| w.clone()));
        let listing = vocab.join("\n");
        let model = WordPiece::builder()
            .vocab(WordPiece::read_bytes(listing.as_bytes()).map_err(|e| err(here, e))?)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| err(here, e))?;
        let mut inner = Tokenizer::new(model);
        inner.add_special_tokens(
            &SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect::<Vec<_>>(),
        );
        Self::bert_pipeline(&mut inner, true, here)?;
        Self::configured(inner, max_length, here)
    }

    fn bert_pipeline(inner: &mut Tokenizer, lowercase: bool, path: &Path) -> Result<()> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| err(path, format!("vocabulary has no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[PAD]")?;
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        Ok(())
    }

    fn configured(mut inner: Tokenizer, max_length: usize, path: &Path) -> Result<Self> {
        if max_length < 2 {
            return Err(err(
                path,
                format!("max_length = {max_length}: needs room for [CLS] and [SEP]"),
            ));
        }
        let (pad_id, pad_token) = match inner.token_to_id("[PAD]") {
            Some(id) => (id, "[PAD]".to_string()),
            None => (0, inner.id_to_token(0).unwrap_or_default()),
        };
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| err(path, e))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(Self { inner })
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token, if in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens of one text (after truncation, specials included), for inspection.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| err(Path::new("(text)"), e))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// Encode a batch of texts, padded to the longest.
    pub fn encode_batch<S: AsRef<str> + Send + Sync>(&self, texts: &[S]) -> Result<TokenBatch> {
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| err(Path::new("(batch)"), e))?;
        let length = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(encodings.len() * length);
        let mut attention_mask = Vec::with_capacity(encodings.len() * length);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            attention_mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(TokenBatch {
            ids,
            attention_mask,
            batch: encodings.len(),
            length,
        })
    }

    /// Save as `tokenizer.json`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(|e| err(path, e))?;
        crate::record::write_atomic(path, json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: [&str; 6] = [
        "No pleural effusion or pneumothorax.",
        "Mild cardiomegaly with small left pleural effusion.",
        "The lungs are clear. No focal consolidation.",
        "Right internal jugular catheter ends in the SVC.",
        "Heart size is normal. No pneumothorax.",
        "Small right pleural effusion, unchanged.",
    ];

    #[test]
    fn trains_saves_and_reloads_a_wordpiece_vocabulary() {
        let tok =
            ReportTokenizer::train_wordpiece(CORPUS.iter().cycle().take(60), 200, 1, 16).unwrap();
        for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(i as u32), "{t}");
        }
        let tokens = tok.tokens("No pleural effusion.").unwrap();
        assert_eq!(tokens, ["[CLS]", "no", "pleural", "effusion", ".", "[SEP]"]);
        let batch = tok
            .encode_batch(&[
                "No effusion.",
                "Mild cardiomegaly with small left pleural effusion.",
            ])
            .unwrap();
        assert_eq!(batch.batch, 2);
        assert_eq!(batch.ids.len(), 2 * batch.length);
        assert_eq!(
            batch.attention_mask[..batch.length].iter().sum::<u32>(),
            5,
            "[CLS] no effusion . [SEP]"
        );
        assert_eq!(
            batch.ids[4..batch.length]
                .iter()
                .filter(|&&i| i == 0)
                .count(),
            batch.length - 5,
            "padding uses [PAD] = 0"
        );
        // Truncated to max_length 16, [SEP] kept last.
        let long = "effusion ".repeat(40);
        let toks = tok.tokens(&long).unwrap();
        assert_eq!(toks.len(), 16);
        assert_eq!(toks.last().unwrap(), "[SEP]");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = ReportTokenizer::from_file(&path, 16).unwrap();
        assert_eq!(
            back.encode_batch(&CORPUS).unwrap(),
            tok.encode_batch(&CORPUS).unwrap()
        );
    }

    #[test]
    fn loads_a_bert_vocab_txt() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = dir.path().join("vocab.txt");
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "##s", ".",
            "heart",
        ];
        std::fs::write(&vocab, words.join("\n")).unwrap();
        let tok = ReportTokenizer::from_bert_vocab(&vocab, true, 256).unwrap();
        assert_eq!(
            tok.tokens("No pleural effusions. Lungs").unwrap(),
            ["[CLS]", "no", "pleural", "effusion", "##s", ".", "[UNK]", "[SEP]"]
        );
        let b = tok.encode_batch(&["heart."]).unwrap();
        assert_eq!(b.ids, vec![2, 10, 9, 3]);

        std::fs::write(&vocab, "[UNK]\nno\n").unwrap();
        let e = ReportTokenizer::from_bert_vocab(&vocab, true, 256)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("vocab.txt: tokenizer: vocabulary has no [CLS] token"),
            "{e}"
        );
        let e = ReportTokenizer::from_file(&dir.path().join("missing.json"), 256)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }
}
