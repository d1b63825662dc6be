//! Criterion bench of the dense optimizer step: Strata's Adam (fused on the CPU, and
//! bit-identical to tch's) next to tch's `nn::Adam` (libtorch's, one tensor operation
//! after another), on parameters of the default config's DLRM shapes (DCNv2 with three
//! rank-512 layers over 27 x 128 features, then the top MLP's first layer: 14.2 M
//! floats).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::model::optimizer::DenseParameters;
use strata::model::DenseOptimizer;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const SHAPES: [[i64; 2]; 7] = [[512, 3456], [3456, 512], [512, 3456], [3456, 512], [512, 3456], [3456, 512], [1024, 3456]];
const LR: f64 = 0.001;

fn dense_adam(c: &mut Criterion) {
    tch::manual_seed(1);
    tch::set_num_threads(1);
    let floats: i64 = SHAPES.iter().map(|[a, b]| a * b).sum();
    let mut group = c.benchmark_group("dense_adam");
    group.throughput(Throughput::Elements(floats as u64));
    group.sample_size(10);

    // tch: gradients put in place once by a backward pass, then step after step.
    let vars = nn::VarStore::new(Device::Cpu);
    let weights: Vec<Tensor> = SHAPES.iter().enumerate().map(|(i, s)| vars.root().randn(&format!("w{i}"), s, 0.0, 0.05)).collect();
    let grads: Vec<Tensor> = weights.iter().map(|w| w.randn_like().detach() * 0.01).collect();
    let loss = weights.iter().zip(&grads).map(|(w, g)| (w * g).sum(Kind::Float)).fold(Tensor::from(0f32), |a, b| a + b);
    loss.backward();
    let mut adam = nn::Adam::default().build(&vars, LR).expect("tch's Adam");
    group.bench_function("tch_nn_adam", |b| b.iter(|| adam.step()));

    let parameters =
        SHAPES.iter().enumerate().map(|(i, s)| (format!("w{i}"), Tensor::randn(*s, (Kind::Float, Device::Cpu)) * 0.05)).collect();
    let mut ours = DenseParameters::new(DenseOptimizer::Adam { lr: LR }, parameters);
    group.bench_function("strata_adam", |b| b.iter(|| ours.step(&grads).expect("Strata's Adam")));
    group.finish();
}

criterion_group!(benches, dense_adam);
criterion_main!(benches);
