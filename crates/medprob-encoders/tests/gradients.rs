//! Every variable of the trainable encoders receives a finite gradient that agrees with
//! central finite differences (float64).

use candle_core::{DType, Device, Tensor};
use medprob_encoders::testing::check_gradients;
use medprob_encoders::{BertConfig, BertEncoder, Pooling, SeededVarMap};

#[test]
fn tiny_bert_every_variable_gets_a_correct_gradient() {
    let dev = Device::Cpu;
    let config = BertConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_attention_heads: 2,
        max_position_embeddings: 8,
        ..BertConfig::tiny(30)
    };
    let vars = SeededVarMap::new(1);
    let enc = BertEncoder::new(&config, vars.builder(DType::F64, &dev), 0).unwrap();
    let ids = Tensor::new(&[[2u32, 7, 9, 3, 0], [2, 11, 3, 0, 0]], &dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 0, 0]], &dev).unwrap();
    let w = Tensor::from_vec(
        (0..32)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
            .collect::<Vec<_>>(),
        (2, 16),
        &dev,
    )
    .unwrap();
    let loss = || {
        let h = enc
            .forward(&ids, &mask, false)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let cls = BertEncoder::pool(&h, &mask, Pooling::Cls)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mean = BertEncoder::pool(&h, &mask, Pooling::Mean)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        ((cls + mean)? * &w)?.sum_all()
    };
    let mut named: Vec<_> = vars
        .var_map()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        named.len(),
        5 + 2 * 16,
        "embeddings (3 + norm 2) and 16 tensors per layer"
    );
    let report = check_gradients(&named, loss, 3, 1e-6, 1e-5).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.variables, 37);
    assert!(report.worst_relative_error < 1e-5, "{report:?}");
}

#[test]
fn padding_does_not_change_the_pooled_outputs() {
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(2);
    let enc = BertEncoder::new(&BertConfig::tiny(30), vars.builder(DType::F32, &dev), 0).unwrap();
    let short = enc
        .forward(
            &Tensor::new(&[[2u32, 7, 3]], &dev).unwrap(),
            &Tensor::new(&[[1u32, 1, 1]], &dev).unwrap(),
            false,
        )
        .unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 0, 0]], &dev).unwrap();
    let padded = enc
        .forward(
            &Tensor::new(&[[2u32, 7, 3, 0, 0]], &dev).unwrap(),
            &mask,
            false,
        )
        .unwrap();
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let a = BertEncoder::pool(
            &short,
            &Tensor::new(&[[1u32, 1, 1]], &dev).unwrap(),
            pooling,
        )
        .unwrap();
        let b = BertEncoder::pool(&padded, &mask, pooling).unwrap();
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "{pooling:?}: {d}");
    }
    // Dropout runs in training mode and changes the output; not in evaluation mode.
    let ids = Tensor::new(&[[2u32, 7, 3]], &dev).unwrap();
    let m = Tensor::new(&[[1u32, 1, 1]], &dev).unwrap();
    let t1 = enc
        .forward(&ids, &m, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e1 = enc
        .forward(&ids, &m, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e2 = enc
        .forward(&ids, &m, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(t1, e1);
    assert_eq!(e1, e2);
}
