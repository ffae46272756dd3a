//! Rewrite README.md's results tables from a quickstart's `metrics.json` (the figures of
//! `summary.json`), so every figure in the README comes from that file.
//!
//! ```sh
//! cargo run --release --example readme_table -- runs/quickstart/metrics.json README.md runs/q1/metrics.json
//! ```
//!
//! The third file (default `runs/q1/metrics.json`, the quickstart with `--seed 1 --out
//! runs/q1`) adds a table of both seeds' headline figures when it exists.

use std::path::PathBuf;

use medprob::metrics::report::EvaluationReport;
use medprob::metrics::summary::method_summary;

const START: &str = "<!-- quickstart-table:start -->";
const END: &str = "<!-- quickstart-table:end -->";

fn table(r: &EvaluationReport) -> String {
    let f = |m: &serde_json::Map<String, serde_json::Value>, key: &str| {
        m.get(key)
            .and_then(serde_json::Value::as_f64)
            .map_or("–".to_string(), |v| format!("{v:.3}"))
    };
    let mut s = String::from(
        "**Plausible matches** (a hit is right when its study has exactly the query's positive \
         label set; \"state\": the same findings on the same sides; fractions):\n\n\
         | method | i2t P@1 | t2i P@1 | i2t P@1 (state) | t2i P@1 (state) | ECE i2t ↓ | AURC i2t ↓ | AUGRC i2t ↓ | SGR coverage i2t | zero-shot AUROC | top-1 hub share i2t |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let rows: Vec<_> = r
        .methods
        .iter()
        .map(|m| (m, method_summary(r, m)))
        .collect();
    for (m, x) in &rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.method,
            f(x, "plausible_i2t_p1"),
            f(x, "plausible_t2i_p1"),
            f(x, "plausible_state_i2t_p1"),
            f(x, "plausible_state_t2i_p1"),
            f(x, "plausible_ece_i2t"),
            f(x, "plausible_aurc_i2t_k1"),
            f(x, "plausible_augrc_i2t_k1"),
            f(x, "sgr_coverage_i2t_k5"),
            f(x, "zero_shot_mean_auroc"),
            f(x, "hub_max_share_i2t"),
        );
    }
    let chance = |name: &str| {
        r.oracles
            .iter()
            .find(|o| o.name == name)
            .map_or("–".to_string(), |o| format!("{:.3}", o.chance_p1))
    };
    let (cl, cs) = (chance("labels"), chance("state"));
    s += &format!("| *chance (random ranking)* | {cl} | {cl} | {cs} | {cs} | | | | | | |\n");
    s += "\n**Instance retrieval** (a hit is right only when it is the query's own study; fractions; \
          rsum = the sum of the six):\n\n\
          | method | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum |\n\
          |---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (m, x) in &rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.method,
            f(x, "i2t_r1"),
            f(x, "i2t_r5"),
            f(x, "i2t_r10"),
            f(x, "t2i_r1"),
            f(x, "t2i_r5"),
            f(x, "t2i_r10"),
            f(x, "rsum"),
        );
    }
    for o in &r.oracles {
        let at = |k: usize| {
            o.recall
                .iter()
                .find(|(kk, _)| *kk == k)
                .map_or("–".to_string(), |(_, v)| format!("{v:.3}"))
        };
        s += &format!(
            "| *{} oracle* | {} | {} | {} | {} | {} | {} | |\n",
            o.name,
            at(1),
            at(5),
            at(10),
            at(1),
            at(5),
            at(10)
        );
    }
    let test = r
        .methods
        .first()
        .map_or(0, |m| m.retrieval.image_to_text.queries);
    s += &format!(
        "\n{test} test studies (random R@10 = {:.3}). ECE: 15 equal-width bins of the top-1 match \
         probability against \"top-1 is plausible\"; AURC/AUGRC: confidence = top-1 probability, loss = \
         top-1 not plausible; SGR coverage: share of test image queries answered by selection with \
         guaranteed risk (no plausible report in the top 5, risk ≤ 0.3 with probability ≥ 0.9, fitted on \
         validation); zero-shot AUROC: mean over the findings with at least 10 positive test studies, with \
         prompts mined from the training reports (`zero_shot_generic_mean_auroc`: the generic ones). \
         Every figure is in `runs/quickstart/summary.json`. ",
        10.0 / test.max(1) as f64
    );
    let beaten = r.where_beaten("MedProbCLIP");
    if beaten.is_empty() {
        s += "MedProbCLIP comes first on every headline figure of this run.\n";
    } else {
        s +=
            &format!(
            "MedProbCLIP does not come first on {} headline figures of this run, among them: {}. \
             The full list is in `runs/quickstart/report.md`.\n",
            beaten.len(),
            beaten.iter().take(4).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    s
}

/// The headline figures of two runs side by side (`seed 0 / seed 1`), so a reader sees
/// which leads hold on both.
fn both_seeds(a: &EvaluationReport, b: &EvaluationReport) -> String {
    let keys = [
        ("plausible_i2t_p1", "i2t P@1"),
        ("plausible_t2i_p1", "t2i P@1"),
        ("i2t_r10", "i2t R@10"),
        ("t2i_r10", "t2i R@10"),
        ("rsum", "rsum"),
        ("plausible_eaurc_i2t_k1", "E-AURC i2t ↓"),
        ("zero_shot_mean_auroc", "zero-shot AUROC"),
        ("hub_max_share_i2t", "hub share i2t"),
    ];
    let mut s = String::from("\n**Both seeds** (`seed 0 / seed 1`: `--seed 1` draws another dataset and initialisation; the best of each seed in bold):\n\n| method |");
    for (_, name) in keys {
        s += &format!(" {name} |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(keys.len());
    s += "\n";
    let summaries = |r: &EvaluationReport| -> Vec<serde_json::Map<String, serde_json::Value>> {
        r.methods.iter().map(|m| method_summary(r, m)).collect()
    };
    let (sa, sb) = (summaries(a), summaries(b));
    let get = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k).and_then(serde_json::Value::as_f64)
    };
    // Lower is better only for the hub share and the excess risk.
    let best = |rows: &[serde_json::Map<String, serde_json::Value>], k: &str| {
        let vals = rows.iter().filter_map(|m| get(m, k));
        if k.starts_with("hub") || k.contains("eaurc") {
            vals.fold(f64::INFINITY, f64::min)
        } else {
            vals.fold(f64::NEG_INFINITY, f64::max)
        }
    };
    for (i, m) in a.methods.iter().enumerate() {
        s += &format!("| {} |", m.method);
        let other = b.methods.iter().position(|x| x.method == m.method);
        for (k, _) in keys {
            let cell =
                |rows: &[serde_json::Map<String, serde_json::Value>], j: Option<usize>| match j
                    .and_then(|j| get(&rows[j], k))
                {
                    Some(v) if v == best(rows, k) => format!("**{v:.3}**"),
                    Some(v) => format!("{v:.3}"),
                    None => "–".into(),
                };
            s += &format!(" {} / {} |", cell(&sa, Some(i)), cell(&sb, other));
        }
        s += "\n";
    }
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let metrics = PathBuf::from(args.next().unwrap_or("runs/quickstart/metrics.json".into()));
    let readme = PathBuf::from(args.next().unwrap_or("README.md".into()));
    let second = PathBuf::from(args.next().unwrap_or("runs/q1/metrics.json".into()));
    let report = EvaluationReport::load_json(&metrics)?;
    let mut tables = table(&report);
    if second.is_file() {
        tables += &both_seeds(&report, &EvaluationReport::load_json(&second)?);
    }
    let text = std::fs::read_to_string(&readme)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        return Err(format!("{} has no {START} … {END} markers", readme.display()).into());
    };
    let new = format!("{}{START}\n{}{}", &text[..a], tables, &text[b..]);
    medprob::core::fs::write_atomic(&readme, new.as_bytes())?;
    println!("{tables}");
    Ok(())
}
