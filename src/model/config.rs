//! The DLRM model's configuration (`[model]` in an experiment config): layer widths,
//! feature interaction, dense optimizer, seed and threads. Plain serde, no torch, so
//! configs can be read and checked in builds without the `torch` feature.

use serde::{Deserialize, Serialize};

use crate::config::PerTable;

/// Shape and training settings of a DLRM. The embedding tables themselves (rows, their
/// sparse optimizer) belong to the engine; `embedding_dim` sets their row widths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Width of the pooled embeddings (the engine's `dim`): one for every table, or one
    /// per table. Tables of different widths are stored and tiered in groups of one
    /// width ([`crate::engine::grouped`]); only the DCNv2 interaction, which concatenates
    /// the vectors, takes them.
    pub embedding_dim: PerTable<usize>,
    /// Output widths of the bottom MLP's layers over the 13 dense features (each
    /// followed by ReLU); the last must equal `embedding_dim` when the tables share one.
    /// MLPerf: `[512, 256, 128]`.
    pub bottom_mlp: Vec<usize>,
    /// Output widths of the top MLP's hidden layers (each followed by ReLU); a final
    /// one-unit layer giving the click logit is appended. MLPerf: `[1024, 1024, 512, 256]`.
    pub top_mlp: Vec<usize>,
    /// How the bottom-MLP output and the pooled embeddings are combined.
    pub interaction: Interaction,
    /// The optimizer of the dense (MLP and cross-layer) parameters.
    pub dense_optimizer: DenseOptimizer,
    /// Seeds the parameter initialisation: the same seed gives the same model.
    #[serde(default)]
    pub seed: u64,
    /// Intra-op threads of libtorch on the CPU (a process-wide setting); absent =
    /// libtorch's default. Fixed counts give bit-identical runs on one machine.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Where the dense part runs.
    #[serde(default)]
    pub device: ModelDevice,
}

/// The feature interaction between the bottom-MLP output and the pooled embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Interaction {
    /// Original DLRM (Naumov et al., 2019): the dot product of every pair of the
    /// `tables + 1` vectors (strict lower triangle), concatenated with the bottom output.
    Dot,
    /// MLPerf DLRM-DCNv2 (Wang et al., 2021): `layers` low-rank cross layers
    /// `x_{l+1} = x_0 * (U_l (V_l x_l) + b_l) + x_l` over the concatenation of all vectors.
    Dcnv2 { layers: usize, low_rank: usize },
}

/// The dense optimizer (`model::optimizer`: libtorch's SGD and Adam, default settings,
/// over tensors whose state Strata holds). MLPerf uses Adagrad for the dense part too;
/// Adam is the nearest adaptive optimizer libtorch's C++ API offers through tch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DenseOptimizer {
    Sgd { lr: f64 },
    Adam { lr: f64 },
}

/// Where the dense part of the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelDevice {
    #[default]
    Cpu,
    /// The first CUDA device; an error where there is none.
    Cuda,
    /// CUDA where present, else the CPU.
    Auto,
}

/// A model configuration that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelConfigError {
    #[error("model.{field} must be at least 1")]
    Zero { field: &'static str },
    #[error("model.bottom_mlp must end with embedding_dim ({embedding_dim}), got {last:?}")]
    BottomOutput { embedding_dim: usize, last: Option<usize> },
    #[error("model.embedding_dim gives {given} widths for {tables} tables: give one for all, or one per table")]
    DimCount { given: usize, tables: usize },
    #[error("model.interaction: dot takes tables of one embedding_dim (it multiplies vectors of one width), got {dims}; use dcnv2 for tables of several widths")]
    DotNeedsOneDim { dims: PerTable<usize> },
    #[error("model.dense_optimizer.lr must be positive and finite, got {0}")]
    LearningRate(f64),
}

impl ModelConfig {
    /// The width of each of `tables` tables.
    pub fn dims(&self, tables: usize) -> Result<Vec<usize>, ModelConfigError> {
        self.embedding_dim.of(tables).map_err(|given| ModelConfigError::DimCount { given, tables })
    }

    /// Checks everything that can be checked before any tensor exists.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        let zero = |field| Err(ModelConfigError::Zero { field });
        if self.embedding_dim.values().is_empty() || self.embedding_dim.values().contains(&0) {
            return zero("embedding_dim");
        }
        match self.embedding_dim.single() {
            Some(dim) if self.bottom_mlp.last() != Some(&dim) => {
                return Err(ModelConfigError::BottomOutput { embedding_dim: dim, last: self.bottom_mlp.last().copied() });
            }
            None if self.interaction == Interaction::Dot => {
                return Err(ModelConfigError::DotNeedsOneDim { dims: self.embedding_dim.clone() });
            }
            _ => {}
        }
        if self.bottom_mlp.is_empty() {
            return zero("bottom_mlp layers");
        }
        if self.bottom_mlp.contains(&0) {
            return zero("bottom_mlp widths");
        }
        if self.top_mlp.contains(&0) {
            return zero("top_mlp widths");
        }
        if let Interaction::Dcnv2 { layers, low_rank } = self.interaction {
            if layers == 0 {
                return zero("interaction.layers");
            }
            if low_rank == 0 {
                return zero("interaction.low_rank");
            }
        }
        if self.threads == Some(0) {
            return zero("threads");
        }
        let lr = match self.dense_optimizer {
            DenseOptimizer::Sgd { lr } | DenseOptimizer::Adam { lr } => lr,
        };
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(ModelConfigError::LearningRate(lr));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        embedding_dim = 16
        bottom_mlp = [32, 16]
        top_mlp = [64, 32]
        interaction = { kind = "dcnv2", layers = 2, low_rank = 8 }
        dense_optimizer = { kind = "adam", lr = 0.001 }
        seed = 3
    "#;

    #[test]
    fn reads_a_config_and_rejects_unknown_fields() {
        let config: ModelConfig = toml::from_str(TOML).unwrap();
        assert_eq!(config.interaction, Interaction::Dcnv2 { layers: 2, low_rank: 8 });
        assert_eq!(config.device, ModelDevice::Cpu);
        assert_eq!(config.validate(), Ok(()));
        let typo = format!("{TOML}\nbotom_mlp = [1]");
        let err = toml::from_str::<ModelConfig>(&typo).unwrap_err().to_string();
        assert!(err.contains("botom_mlp"), "{err}");
    }

    #[test]
    fn rejects_shapes_that_cannot_be_built() {
        let mut config: ModelConfig = toml::from_str(TOML).unwrap();
        config.bottom_mlp = vec![32, 8];
        assert_eq!(config.validate(), Err(ModelConfigError::BottomOutput { embedding_dim: 16, last: Some(8) }));
        config.bottom_mlp = vec![16];
        config.dense_optimizer = DenseOptimizer::Sgd { lr: -1.0 };
        assert_eq!(config.validate(), Err(ModelConfigError::LearningRate(-1.0)));
        config.dense_optimizer = DenseOptimizer::Sgd { lr: 0.1 };
        config.interaction = Interaction::Dcnv2 { layers: 0, low_rank: 8 };
        assert_eq!(config.validate(), Err(ModelConfigError::Zero { field: "interaction.layers" }));
    }

    #[test]
    fn embedding_dim_is_one_width_or_one_per_table() {
        let config: ModelConfig = toml::from_str(&TOML.replace("embedding_dim = 16", "embedding_dim = [16, 8, 16]")).unwrap();
        assert_eq!(config.embedding_dim, PerTable::Each(vec![16, 8, 16]));
        assert_eq!((config.embedding_dim.single(), config.embedding_dim.to_string()), (None, "[16, 8, 16]".into()));
        assert_eq!(config.dims(3), Ok(vec![16, 8, 16]));
        assert_eq!(config.dims(26), Err(ModelConfigError::DimCount { given: 3, tables: 26 }));
        // DCNv2 concatenates: the bottom MLP's width is free when the widths differ.
        assert_eq!(ModelConfig { bottom_mlp: vec![4], ..config.clone() }.validate(), Ok(()));
        let dot = ModelConfig { interaction: Interaction::Dot, ..config.clone() };
        assert_eq!(
            dot.validate().unwrap_err().to_string(),
            "model.interaction: dot takes tables of one embedding_dim (it multiplies vectors of one width), got [16, 8, 16]; use dcnv2 for tables of several widths"
        );
        let same = PerTable::Each(vec![16, 16]);
        assert_eq!((same.single(), same.to_string(), PerTable::from(16).of(2)), (Some(16), "16".into(), Ok(vec![16, 16])));
        let zero = ModelConfig { embedding_dim: PerTable::Each(vec![16, 0]), ..config };
        assert_eq!(zero.validate(), Err(ModelConfigError::Zero { field: "embedding_dim" }));
    }
}
