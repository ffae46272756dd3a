//! Seeded initialisation. candle's CPU generator cannot be seeded (`Device::Cpu.set_seed`
//! errors), so a model built from a plain `VarMap` differs run to run. [`SeededVarMap`] is
//! a `VarBuilder` backend that creates each new variable from a generator seeded by the
//! model seed *and the variable's name*: the same seed gives the same model whatever the
//! order in which layers are built.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// A `VarMap` whose new variables come from a seeded generator.
#[derive(Clone)]
pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// An empty map with seed `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            map: VarMap::new(),
            seed,
        }
    }

    /// The variables (for the optimiser and for saving).
    pub fn var_map(&self) -> &VarMap {
        &self.map
    }

    /// Every variable with its name, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .map
            .data()
            .lock()
            .expect("var map lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A builder that creates trainable variables in this map.
    pub fn builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    fn stream(&self, name: &str) -> rand::rngs::StdRng {
        let mut h = DefaultHasher::new();
        // DefaultHasher's algorithm is fixed for a given Rust release; name and seed are
        // mixed explicitly so the stream does not depend on hash-map iteration order.
        name.hash(&mut h);
        rand::rngs::StdRng::seed_from_u64(
            h.finish() ^ self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }
}

/// Values for `init` of `shape`, drawn from `rng`.
fn initial_values(init: Init, shape: &Shape, rng: &mut rand::rngs::StdRng) -> Vec<f64> {
    let n = shape.elem_count();
    let normal = |rng: &mut rand::rngs::StdRng, mean: f64, std: f64| -> Vec<f64> {
        let d = Normal::new(mean, std.max(0.0)).expect("finite std");
        (0..n).map(|_| d.sample(rng)).collect()
    };
    match init {
        Init::Const(v) => vec![v; n],
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => normal(rng, 0.0, std),
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                }
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.map.data().lock().expect("var map lock");
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "{name}: shape mismatch, {:?} vs existing {:?}",
                    s,
                    v.shape()
                )
            }
            return Ok(v.as_tensor().clone());
        }
        let values = initial_values(h, &s, &mut self.stream(name));
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let data = self.map.data().lock().expect("var map lock");
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("{name}: no such variable"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .expect("var map lock")
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_whatever_the_order() {
        let dev = Device::Cpu;
        let a = SeededVarMap::new(7);
        let vb = a.builder(DType::F32, &dev);
        let x1 = vb
            .get_with_hints((3, 4), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        let y1 = vb
            .get_with_hints(
                5,
                "y",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        let b = SeededVarMap::new(7);
        let vb = b.builder(DType::F32, &dev);
        let y2 = vb
            .get_with_hints(
                5,
                "y",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        let x2 = vb
            .get_with_hints((3, 4), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        assert_eq!(x1.to_vec2::<f32>().unwrap(), x2.to_vec2::<f32>().unwrap());
        assert_eq!(y1.to_vec1::<f32>().unwrap(), y2.to_vec1::<f32>().unwrap());
        let c = SeededVarMap::new(8);
        let x3 = c
            .builder(DType::F32, &dev)
            .get_with_hints((3, 4), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        assert_ne!(x1.to_vec2::<f32>().unwrap(), x3.to_vec2::<f32>().unwrap());
        assert_eq!(a.var_map().all_vars().len(), 2);
    }
}
