//! Model folders from the Hugging Face hub, through `hf-hub` (its cache, `HF_HOME`, and
//! offline mode), beside the local-folder path that tests and air-gapped machines use.

use std::path::PathBuf;

use hf_hub::{Repo, RepoType};

use crate::bert::ModelFolder;
use crate::error::{EncoderError, Result};

/// Finds one file of the repository (in the cache, or by downloading it).
type Resolver<'a> = Box<dyn Fn(&str) -> Result<PathBuf> + 'a>;

/// Where and how to look for a hub model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Branch, tag or commit.
    pub revision: String,
    /// Cache folder (default: `$HF_HOME/hub` or `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network; only the cache (default: `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            revision: "main".into(),
            cache_dir: None,
            offline: std::env::var("HF_HUB_OFFLINE")
                .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
        }
    }
}

/// Resolve `config.json`, `model.safetensors` and `tokenizer.json` / `vocab.txt` of a hub
/// model id (e.g. `microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract`), downloading into
/// the cache unless offline. Errors name the model and the file.
pub fn model_folder(model_id: &str, options: &HubOptions) -> Result<ModelFolder> {
    let repo = Repo::with_revision(
        model_id.to_string(),
        RepoType::Model,
        options.revision.clone(),
    );
    let place = |file: &str| PathBuf::from(format!("{model_id}@{}/{file}", options.revision));
    let missing = |file: &str| EncoderError::MissingFile {
        path: place(file),
        needed:
            "config.json, model.safetensors and a tokenizer (offline: already in the hub cache)",
    };
    let get: Resolver<'_> = if options.offline {
        let cache = match &options.cache_dir {
            Some(dir) => hf_hub::Cache::new(dir.clone()),
            None => hf_hub::Cache::from_env(),
        };
        let repo = cache.repo(repo);
        Box::new(move |file: &str| repo.get(file).ok_or_else(|| missing(file)))
    } else {
        let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true);
        if let Some(dir) = &options.cache_dir {
            builder = builder.with_cache_dir(dir.clone());
        }
        let api = builder.build().map_err(|e| EncoderError::Config {
            path: PathBuf::from(model_id),
            reason: format!("hub client: {e}"),
        })?;
        let repo = api.repo(repo);
        Box::new(move |file: &str| {
            repo.get(file).map_err(|e| EncoderError::Config {
                path: place(file),
                reason: format!("hub download failed: {e}"),
            })
        })
    };
    let config = get("config.json")?;
    let weights = get("model.safetensors")?;
    let tokenizer = get("tokenizer.json").ok();
    let vocab = get("vocab.txt").ok();
    if tokenizer.is_none() && vocab.is_none() {
        return Err(missing("tokenizer.json"));
    }
    Ok(ModelFolder {
        config,
        weights,
        tokenizer,
        vocab,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offline path reads hf-hub's cache layout (`models--org--name/refs/main` →
    /// `snapshots/<commit>/…`) without any network.
    #[test]
    fn offline_mode_resolves_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--medprob--tiny-bert");
        let snap = repo.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for f in ["config.json", "model.safetensors", "vocab.txt"] {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        let options = HubOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            offline: true,
            ..Default::default()
        };
        let folder = model_folder("medprob/tiny-bert", &options).unwrap();
        assert_eq!(folder.weights, snap.join("model.safetensors"));
        assert_eq!(folder.vocab, Some(snap.join("vocab.txt")));
        assert_eq!(folder.tokenizer, None);

        let e = model_folder("medprob/absent", &options)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("medprob/absent@main/config.json: missing"),
            "{e}"
        );
    }
}
