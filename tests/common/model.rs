//! The small DLRM the training tests share.

use strata::model::{DenseOptimizer, Dlrm, Interaction, ModelConfig, ModelDevice};

/// A one-thread CPU DLRM over rows of `dim`: small MLPs, dot interaction, SGD.
pub fn small_model_config(dim: usize) -> ModelConfig {
    ModelConfig {
        embedding_dim: dim.into(),
        bottom_mlp: vec![16, dim],
        top_mlp: vec![16, 8],
        interaction: Interaction::Dot,
        dense_optimizer: DenseOptimizer::Sgd { lr: 0.05 },
        seed: 3,
        threads: Some(1),
        device: ModelDevice::Cpu,
    }
}

/// [`small_model_config`] built for the 26 Criteo tables.
pub fn small_model(dim: usize) -> Dlrm {
    Dlrm::new(&small_model_config(dim), 26).unwrap()
}
