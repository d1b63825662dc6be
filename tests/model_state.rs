//! Saving and restoring the DLRM's dense state: a run stopped after N steps, saved,
//! loaded into a fresh model and trained M more steps is bit-identical (losses,
//! embedding gradients, parameters and optimizer state) to one trained N + M steps
//! straight, under SGD and Adam and both interactions; damaged files and files of a
//! model of another shape are clear errors that leave the model as it was.

use std::path::Path;

use strata::data::CRITEO_DENSE_FEATURES;
use strata::model::{DenseOptimizer, Dlrm, Interaction, ModelConfig, ModelDevice, TrainStep};
use tch::Tensor;

const TABLES: usize = 3;
const DIM: usize = 4;
const BATCH: usize = 16;

fn config(interaction: Interaction, dense_optimizer: DenseOptimizer) -> ModelConfig {
    ModelConfig {
        embedding_dim: DIM.into(),
        bottom_mlp: vec![8, DIM],
        top_mlp: vec![8, 4],
        interaction,
        dense_optimizer,
        seed: 17,
        threads: Some(1),
        device: ModelDevice::Cpu,
    }
}

/// Batch `step`'s dense counts, pooled embeddings and labels: a fixed function of the step.
fn batch(step: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let value = |i: usize, salt: usize| (((i * 2654435761 + step * 40503 + salt) % 1000) as f32) / 1000.0;
    let dense = (0..BATCH * CRITEO_DENSE_FEATURES).map(|i| (value(i, 1) * 50.0).floor()).collect();
    let pooled = (0..BATCH * TABLES * DIM).map(|i| value(i, 2) - 0.5).collect();
    let labels = (0..BATCH).map(|i| if value(i, 3) < 0.3 { 1.0 } else { 0.0 }).collect();
    (dense, pooled, labels)
}

fn train(model: &mut Dlrm, steps: std::ops::Range<usize>) -> Vec<TrainStep> {
    steps
        .map(|s| {
            let (dense, pooled, labels) = batch(s);
            model.train_step(&dense, &pooled, &labels).unwrap()
        })
        .collect()
}

/// Losses and embedding gradients as bits, so equality is bit-equality.
fn step_bits(steps: &[TrainStep]) -> Vec<(u32, Vec<u32>)> {
    steps.iter().map(|s| (s.loss.to_bits(), s.embedding_grad.iter().map(|g| g.to_bits()).collect())).collect()
}

/// Every tensor of a state file, by name, as bits.
fn state_bits(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut tensors: Vec<(String, Vec<u8>)> = Tensor::load_multi(path)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let t = t.contiguous();
            let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
            t.copy_data_u8(&mut bytes, t.numel());
            (name, bytes)
        })
        .collect();
    tensors.sort();
    tensors
}

fn prediction_bits(model: &Dlrm) -> Vec<u32> {
    let (dense, pooled, _) = batch(1000);
    model.predict(&dense, &pooled).unwrap().iter().map(|p| p.to_bits()).collect()
}

const OPTIMIZERS: [DenseOptimizer; 2] = [DenseOptimizer::Sgd { lr: 0.1 }, DenseOptimizer::Adam { lr: 0.01 }];
const INTERACTIONS: [Interaction; 2] = [Interaction::Dot, Interaction::Dcnv2 { layers: 2, low_rank: 3 }];

#[test]
fn a_resumed_run_is_bit_identical_to_one_that_never_stopped() {
    const N: usize = 5;
    const M: usize = 7;
    let dir = tempfile::tempdir().unwrap();
    for interaction in INTERACTIONS {
        for optimizer in OPTIMIZERS {
            let config = config(interaction, optimizer);
            let label = format!("{interaction:?} {optimizer:?}");
            let mut straight = Dlrm::new(&config, TABLES).unwrap();
            let straight_steps = train(&mut straight, 0..N + M);

            let mut first = Dlrm::new(&config, TABLES).unwrap();
            let first_steps = train(&mut first, 0..N);
            let checkpoint = dir.path().join("dense.state");
            first.save_state(&checkpoint).unwrap();
            assert!(!dir.path().join("dense.state.tmp").exists(), "{label}: the temporary file stays behind");
            drop(first);

            let mut resumed = Dlrm::new(&config, TABLES).unwrap();
            assert_ne!(prediction_bits(&resumed), prediction_bits(&straight), "{label}: a fresh model already predicts as the trained one");
            resumed.load_state(&checkpoint).unwrap();
            let resumed_steps = train(&mut resumed, N..N + M);

            let all: Vec<TrainStep> = first_steps.into_iter().chain(resumed_steps).collect();
            assert_eq!(step_bits(&all), step_bits(&straight_steps), "{label}: losses or embedding gradients differ");
            assert_eq!(prediction_bits(&resumed), prediction_bits(&straight), "{label}: predictions differ");
            let (resumed_path, straight_path) = (dir.path().join("resumed.state"), dir.path().join("straight.state"));
            resumed.save_state(&resumed_path).unwrap();
            straight.save_state(&straight_path).unwrap();
            let (resumed_state, straight_state) = (state_bits(&resumed_path), state_bits(&straight_path));
            let names: Vec<&str> = straight_state.iter().map(|(n, _)| n.as_str()).collect();
            let moments = names.iter().filter(|n| n.starts_with("adam.")).count();
            let parameters = names.iter().filter(|n| n.starts_with("param.")).count();
            assert!(parameters > 0 && names.contains(&"optimizer.steps"), "{label}: {names:?}");
            assert_eq!(moments, if matches!(optimizer, DenseOptimizer::Adam { .. }) { 2 * parameters } else { 0 }, "{label}: {names:?}");
            assert!(resumed_state == straight_state, "{label}: parameters or optimizer state differ");
        }
    }
}

#[test]
fn damaged_and_foreign_state_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let adam = config(Interaction::Dot, DenseOptimizer::Adam { lr: 0.01 });
    let mut model = Dlrm::new(&adam, TABLES).unwrap();
    train(&mut model, 0..3);
    let good = dir.path().join("good.state");
    model.save_state(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let mut target = Dlrm::new(&adam, TABLES).unwrap();
    let untouched = prediction_bits(&target);
    let error = |target: &mut Dlrm, path: &Path| {
        let message = target.load_state(path).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    };

    let missing = dir.path().join("missing.state");
    let message = error(&mut target, &missing);
    assert!(message.contains("cannot be read"), "{message}");

    let truncated = dir.path().join("truncated.state");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let message = error(&mut target, &truncated);
    assert!(message.contains("cannot be read"), "{message}");

    let garbage = dir.path().join("garbage.state");
    std::fs::write(&garbage, b"not a state file").unwrap();
    error(&mut target, &garbage);

    // Models of another shape, and the same shape under the other optimizer.
    let mut wider = adam.clone();
    wider.top_mlp = vec![16, 4];
    let sgd = config(Interaction::Dot, DenseOptimizer::Sgd { lr: 0.1 });
    let dcnv2 = config(Interaction::Dcnv2 { layers: 2, low_rank: 3 }, DenseOptimizer::Adam { lr: 0.01 });
    for (other, tables) in [(&wider, TABLES), (&sgd, TABLES), (&dcnv2, TABLES), (&adam, TABLES + 1)] {
        let mut other = Dlrm::new(other, tables).unwrap();
        let message = error(&mut other, &good);
        assert!(message.contains("is of a model with tables 3") && message.contains("this model has"), "{message}");
    }

    // A file of the right shape whose tensor was replaced by one of another size.
    let mut tensors = Tensor::load_multi(&good).unwrap();
    let (name, tensor) = tensors.iter_mut().find(|(name, _)| name == "param.top_0_bias").unwrap();
    *tensor = Tensor::zeros([tensor.size()[0] + 1], (tensor.kind(), tch::Device::Cpu));
    let name = name.clone();
    let tampered = dir.path().join("tampered.state");
    Tensor::save_multi(&tensors, &tampered).unwrap();
    let message = error(&mut target, &tampered);
    assert!(message.contains(&format!("tensor {name}")), "{message}");

    assert_eq!(prediction_bits(&target), untouched, "a failed load changed the model");
    target.load_state(&good).unwrap();
    assert_eq!(prediction_bits(&target), prediction_bits(&model));
}
