//! Rewrite README.md's results table from a quickstart's `metrics.json`, so every figure
//! in the README comes from that file.
//!
//! ```sh
//! cargo run --release --example readme_table -- runs/quickstart/metrics.json README.md
//! ```

use std::path::PathBuf;

use medprob::metrics::report::{Direction, EvaluationReport};

const START: &str = "<!-- quickstart-table:start -->";
const END: &str = "<!-- quickstart-table:end -->";

fn table(r: &EvaluationReport) -> String {
    let mut s = String::from(
        "| method | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | RSUM | ECE ↓ | AURC i2t R@10 ↓ | zero-shot AUROC |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in &r.methods {
        let rc = |d: &medprob::metrics::retrieval::DirectionReport, k| {
            d.recall_at(k).unwrap_or(f64::NAN)
        };
        let (i, t) = (&m.retrieval.image_to_text, &m.retrieval.text_to_image);
        let aurc = m
            .risk_coverage
            .iter()
            .filter(|e| e.k == 10 && e.direction == Direction::ImageToText)
            .map(|e| e.aurc)
            .fold(f64::INFINITY, f64::min);
        s += &format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} |\n",
            m.method,
            rc(i, 1),
            rc(i, 5),
            rc(i, 10),
            rc(t, 1),
            rc(t, 5),
            rc(t, 10),
            m.retrieval.rsum,
            m.calibration.as_ref().map_or(f64::NAN, |c| c.ece),
            aurc,
            m.zero_shot.as_ref().map_or(f64::NAN, |z| z.mean_auroc),
        );
    }
    let test = r
        .methods
        .first()
        .map_or(0, |m| m.retrieval.image_to_text.queries);
    s += &format!(
        "\n{test} test studies (random R@10 = {:.1} %). Recall in %, RSUM over R@1/5/10/100 both ways; \
         AURC at each method's best confidence function. ",
        100.0 * 10.0 / test.max(1) as f64
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let metrics = PathBuf::from(args.next().unwrap_or("runs/quickstart/metrics.json".into()));
    let readme = PathBuf::from(args.next().unwrap_or("README.md".into()));
    let report = EvaluationReport::load_json(&metrics)?;
    let text = std::fs::read_to_string(&readme)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        return Err(format!("{} has no {START} … {END} markers", readme.display()).into());
    };
    let new = format!("{}{START}\n{}{}", &text[..a], table(&report), &text[b..]);
    medprob::core::fs::write_atomic(&readme, new.as_bytes())?;
    println!("{}", table(&report));
    Ok(())
}
