use medprob_data::synth::{generate_reports, SynthConfig};
use medprob_data::tokenize::ReportTokenizer;

#[test]
fn wordpiece_training_is_deterministic() {
    let studies = generate_reports(&SynthConfig {
        studies: 300,
        ..SynthConfig::default()
    });
    let corpus: Vec<String> = studies
        .iter()
        .flat_map(|s| [s.record.findings.clone(), s.record.impression.clone()])
        .collect();
    let vocab = |t: &ReportTokenizer| -> Vec<String> {
        (0..t.vocab_size() as u32)
            .map(|i| t.id_to_token(i).unwrap_or_default())
            .collect()
    };
    let a = ReportTokenizer::train_wordpiece(corpus.iter(), 300, 2, 32).unwrap();
    for _ in 0..5 {
        let b = ReportTokenizer::train_wordpiece(corpus.iter(), 300, 2, 32).unwrap();
        assert_eq!(vocab(&a), vocab(&b));
    }
}
