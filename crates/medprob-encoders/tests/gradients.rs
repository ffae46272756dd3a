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
    let named = vars.named_vars();
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
        let d = medprob_encoders::testing::max_abs_diff(&a, &b).unwrap();
        assert!(d < 1e-4, "{pooling:?}: {d}");
    }
    // Dropout runs in training mode and changes the output; not in evaluation mode.
    let ids = Tensor::new(&[[2u32, 7, 3]], &dev).unwrap();
    let m = Tensor::new(&[[1u32, 1, 1]], &dev).unwrap();
    let run = |train: bool| {
        enc.forward(&ids, &m, train)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (t1, e1, e2) = (run(true), run(false), run(false));
    assert_ne!(t1, e1);
    assert_eq!(e1, e2);
}

#[test]
fn tiny_vit_and_both_heads_every_variable_gets_a_correct_gradient() {
    use medprob_core::LogVarianceClamp;
    use medprob_encoders::{DeterministicHead, ProbabilisticHead, VisionTransformer, VitConfig};
    let dev = Device::Cpu;
    let config = VitConfig {
        image_size: 16,
        patch_size: 8,
        dim: 12,
        heads: 2,
        depth: 2,
        ..VitConfig::default()
    };
    let vars = SeededVarMap::new(3);
    let vb = vars.builder(DType::F64, &dev);
    let vit = VisionTransformer::new(&config, vb.pp("image"), 0).unwrap();
    let prob = ProbabilisticHead::new(12, 5, LogVarianceClamp::default(), vb.pp("head")).unwrap();
    let det = DeterministicHead::new(12, 5, vb.pp("det")).unwrap();
    let images = Tensor::from_vec(
        (0..2 * 3 * 16 * 16)
            .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
            .collect::<Vec<_>>(),
        (2, 3, 16, 16),
        &dev,
    )
    .unwrap();
    let w = Tensor::from_vec(
        (0..10).map(|i| (i as f64 - 4.5) / 3.0).collect::<Vec<_>>(),
        (2, 5),
        &dev,
    )
    .unwrap();
    let loss = || {
        let msg = |e: medprob_encoders::EncoderError| candle_core::Error::Msg(e.to_string());
        let f = vit.forward(&images, false).map_err(msg)?;
        let g = prob.forward(&f).map_err(msg)?;
        let d = det.forward(&f).map_err(msg)?;
        (((g.mean + g.log_var)? + d)? * &w)?.sum_all()
    };
    let named = vars.named_vars();
    // patch (2) + cls + pos + 12 per block × 2 + final norm (2) + heads (2 + 2).
    assert_eq!(named.len(), 2 + 2 + 24 + 2 + 4);
    let report = check_gradients(&named, loss, 3, 1e-6, 1e-5).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.worst_relative_error < 1e-5, "{report:?}");
}

#[test]
fn probabilistic_head_clamps_only_the_log_variance() {
    use medprob_core::LogVarianceClamp;
    use medprob_encoders::ProbabilisticHead;
    let dev = Device::Cpu;
    let vars = SeededVarMap::new(4);
    let head = ProbabilisticHead::new(
        3,
        2,
        LogVarianceClamp::default(),
        vars.builder(DType::F32, &dev),
    )
    .unwrap();
    let x = Tensor::new(&[[100.0f32, -100.0, 50.0], [0.0, 0.0, 0.0]], &dev).unwrap();
    let g = head.forward(&x).unwrap();
    let v = g.log_var.to_vec2::<f32>().unwrap();
    assert!(
        v.iter().flatten().all(|&x| (-6.0..=6.0).contains(&x)),
        "{v:?}"
    );
    assert!(
        v[0].iter().any(|&x| x.abs() == 6.0),
        "large inputs hit the clamp: {v:?}"
    );
    let m = g.mean.to_vec2::<f32>().unwrap();
    assert!(
        m[0].iter().any(|&x| x.abs() > 6.0),
        "the mean is not clamped: {m:?}"
    );
}

#[test]
fn tiny_resnet_every_parameter_gets_a_correct_gradient() {
    use medprob_encoders::resnet::is_buffer;
    use medprob_encoders::{ResNet, ResNetConfig};
    let dev = Device::Cpu;
    let config = ResNetConfig {
        base_width: 2,
        ..ResNetConfig::default()
    };
    let vars = SeededVarMap::new(5);
    let net = ResNet::new(&config, vars.builder(DType::F64, &dev)).unwrap();
    // 64×64 leaves 2×2 maps in the last stage, so batch statistics are not degenerate.
    let images = Tensor::from_vec(
        (0..2 * 3 * 64 * 64)
            .map(|i| (((i * 7919) % 1009) as f64 / 504.5) - 1.0)
            .collect::<Vec<_>>(),
        (2, 3, 64, 64),
        &dev,
    )
    .unwrap();
    // Move batch-norm scales and shifts off their exact 1 and 0 initial values, which make
    // residual sums land exactly on ReLU kinks.
    for (k, v) in vars.var_map().data().lock().unwrap().iter() {
        if k.contains("bn") || k.contains("downsample.1") {
            let n = v.elem_count();
            let jitter = Tensor::from_vec(
                (0..n)
                    .map(|i| 0.1 * (((i * 31 + k.len()) % 17) as f64 / 8.0 - 1.0))
                    .collect::<Vec<_>>(),
                n,
                &dev,
            )
            .unwrap();
            v.set(&(v.as_tensor() + jitter).unwrap()).unwrap();
        }
    }
    let w = Tensor::from_vec(
        (0..2 * config.feature_dim())
            .map(|i| ((i % 13) as f64 - 6.0) / 6.0)
            .collect::<Vec<_>>(),
        (2, config.feature_dim()),
        &dev,
    )
    .unwrap();
    let loss = || {
        let f = net
            .forward(&images, true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        (f * &w)?.sum_all()
    };
    let named: Vec<_> = vars
        .named_vars()
        .into_iter()
        .filter(|(k, _)| !is_buffer(k))
        .collect();
    // Stem conv + bn (1 + 2); per block 3 convs + 3 bns (3 + 6) and a downsample (1 + 2).
    assert_eq!(named.len(), 3 + 4 * 12);
    let report = check_gradients(&named, loss, 2, 1e-6, 1e-4).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.worst_relative_error < 1e-4, "{report:?}");
}

#[test]
fn max_pool_equals_the_definition_and_running_stats_update() {
    use medprob_encoders::resnet::max_pool_3x3_s2;
    let dev = Device::Cpu;
    for (h, w) in [(7usize, 6usize), (8, 9)] {
        let v: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 23) as f32) - 11.0).collect();
        let x = Tensor::from_vec(v.clone(), (1, 1, h, w), &dev).unwrap();
        let got = max_pool_3x3_s2(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let mut want = Vec::new();
        for i in 0..ho {
            for j in 0..wo {
                let mut m = f32::NEG_INFINITY;
                for y in (2 * i).saturating_sub(1)..(2 * i + 2).min(h) {
                    for x in (2 * j).saturating_sub(1)..(2 * j + 2).min(w) {
                        m = m.max(v[y * w + x]);
                    }
                }
                want.push(m);
            }
        }
        assert_eq!(got, want, "{h}×{w}");
    }
    // Batch norm: training updates the running statistics in the variables themselves.
    use medprob_encoders::resnet::BatchNorm;
    let vars = SeededVarMap::new(0);
    let bn = BatchNorm::new(2, 1e-5, vars.builder(DType::F32, &dev)).unwrap();
    let x = Tensor::from_vec(
        (0..16).map(|i| i as f32).collect::<Vec<_>>(),
        (2, 2, 2, 2),
        &dev,
    )
    .unwrap();
    bn.forward_t(&x, true).unwrap();
    let data = vars.var_map().data().lock().unwrap();
    let rm = data["running_mean"].as_tensor().to_vec1::<f32>().unwrap();
    // Channel 0 holds 0–3 and 8–11 (mean 5.5), channel 1 holds 4–7 and 12–15 (mean 9.5).
    assert!(
        (rm[0] - 0.55).abs() < 1e-6 && (rm[1] - 0.95).abs() < 1e-6,
        "{rm:?}"
    );
}
