//! The DLRM model on tch: bottom MLP over the dense features, the pooled embeddings of
//! the tiered engine as a leaf tensor, a `dot` or `dcnv2` interaction, top MLP, and a
//! training step that hands the embedding gradient back in the engine's bag layout, and
//! the crash-safe saving and restoring of its parameters and optimizer state.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tch::nn;
use tch::{Device, Reduction, Tensor};

use super::config::{DenseOptimizer, Interaction, ModelConfig, ModelConfigError, ModelDevice};
use super::optimizer::DenseParameters;
use crate::data::CRITEO_DENSE_FEATURES;

/// Anything building or running the model can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ModelConfigError),
    #[error("model.device is \"cuda\" but libtorch finds no CUDA device")]
    NoCuda,
    #[error("model input: {0}")]
    Shape(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A model state file that cannot be written, read or loaded into this model.
    #[error("model state {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

impl ModelError {
    pub(crate) fn state(path: &Path, reason: impl std::fmt::Display) -> ModelError {
        // libtorch's messages carry a C++ backtrace after the first line.
        let reason = reason.to_string();
        ModelError::State { path: path.to_path_buf(), reason: reason.lines().next().unwrap_or_default().to_string() }
    }
}

/// What one training step gives back.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainStep {
    /// Mean binary cross-entropy of the batch, before the update.
    pub loss: f32,
    /// The gradient of the loss with respect to the pooled embeddings, in the layout of
    /// the pooled input: sample after sample, each its tables' gradients table after table.
    pub embedding_grad: Vec<f32>,
}

/// A fully-connected layer `y = x W^T + b`.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// A low-rank cross layer of DCNv2: `x0 * (up(down(x))) + x`.
struct Cross {
    down: Tensor,
    up: Dense,
}

enum InteractionLayers {
    /// Flat indices `i * n + j` (`i > j`) of the pairwise-product matrix to keep.
    Dot {
        pairs: Tensor,
    },
    Cross(Vec<Cross>),
}

/// Creates the model's variables from one seeded stream, in a fixed order, so the
/// initial parameters depend on the seed alone (not on libtorch's global generator,
/// which other threads may be drawing from).
struct Init<'a> {
    path: nn::Path<'a>,
    rng: SmallRng,
}

impl Init<'_> {
    /// A tensor of `dims`, uniform in `[-bound, bound)`.
    fn uniform(&mut self, name: &str, dims: &[i64], bound: f32) -> Tensor {
        let count: i64 = dims.iter().product();
        let values: Vec<f32> = (0..count).map(|_| self.rng.gen_range(-bound..bound)).collect();
        self.path.var_copy(name, &Tensor::from_slice(&values).view(dims))
    }

    /// PyTorch's default `nn.Linear` initialisation: weight and bias uniform in
    /// `±1/sqrt(inputs)`.
    fn dense(&mut self, name: &str, inputs: usize, outputs: usize) -> Dense {
        let bound = 1.0 / (inputs as f32).sqrt();
        let (i, o) = (inputs as i64, outputs as i64);
        Dense { weight: self.uniform(&format!("{name}_weight"), &[o, i], bound), bias: self.uniform(&format!("{name}_bias"), &[o], bound) }
    }

    fn mlp(&mut self, name: &str, mut inputs: usize, widths: &[usize]) -> Vec<Dense> {
        widths
            .iter()
            .enumerate()
            .map(|(l, &width)| {
                let layer = self.dense(&format!("{name}_{l}"), inputs, width);
                inputs = width;
                layer
            })
            .collect()
    }
}

/// A DLRM over `tables` pooled embeddings (of one width, or of each table's own with
/// DCNv2) and the 13 dense features, with its dense parameters and their optimizer.
pub struct Dlrm {
    tables: usize,
    /// Pooled values per sample: every table's width, added.
    width: usize,
    device: Device,
    bottom: Vec<Dense>,
    interaction: InteractionLayers,
    top: Vec<Dense>,
    parameters: DenseParameters,
    /// What a state file must have been saved from to be loaded here: tables, widths,
    /// interaction and optimizer kind.
    shape: String,
}

/// The name of the state file's entry holding the model's shape (as UTF-8 bytes).
const SHAPE_ENTRY: &str = "model.shape";

impl Dlrm {
    /// Builds the model for `tables` embedding tables. Sets libtorch's CPU thread count
    /// when the config names one (process-wide).
    pub fn new(config: &ModelConfig, tables: usize) -> Result<Dlrm, ModelError> {
        config.validate()?;
        if tables == 0 {
            return Err(ModelConfigError::Zero { field: "tables" }.into());
        }
        let device = match config.device {
            ModelDevice::Cpu => Device::Cpu,
            ModelDevice::Cuda if tch::Cuda::is_available() => Device::Cuda(0),
            ModelDevice::Cuda => return Err(ModelError::NoCuda),
            ModelDevice::Auto => Device::cuda_if_available(),
        };
        if let Some(threads) = config.threads {
            tch::set_num_threads(threads as i32);
        }
        let width: usize = config.dims(tables)?.iter().sum();
        let vars = nn::VarStore::new(device);
        let mut init = Init { path: vars.root(), rng: SmallRng::seed_from_u64(config.seed) };
        let bottom = init.mlp("bottom", CRITEO_DENSE_FEATURES, &config.bottom_mlp);
        let (interaction, top_inputs) = match config.interaction {
            Interaction::Dot => {
                let n = tables as i64 + 1;
                let pairs: Vec<i64> = (0..n).flat_map(|i| (0..i).map(move |j| i * n + j)).collect();
                let bottom = config.bottom_mlp.last().copied().unwrap_or_default();
                (InteractionLayers::Dot { pairs: Tensor::from_slice(&pairs).to_device(device) }, bottom + pairs.len())
            }
            Interaction::Dcnv2 { layers, low_rank } => {
                let width = config.bottom_mlp.last().copied().unwrap_or_default() + width;
                let cross = (0..layers)
                    .map(|l| {
                        let bound = 1.0 / (width as f32).sqrt();
                        let down = init.uniform(&format!("cross_{l}_down"), &[low_rank as i64, width as i64], bound);
                        Cross { down, up: init.dense(&format!("cross_{l}_up"), low_rank, width) }
                    })
                    .collect();
                (InteractionLayers::Cross(cross), width)
            }
        };
        let mut top_widths = config.top_mlp.clone();
        top_widths.push(1);
        let top = init.mlp("top", top_inputs, &top_widths);
        let parameters = DenseParameters::new(config.dense_optimizer, vars.variables().into_iter().collect());
        let optimizer = match config.dense_optimizer {
            DenseOptimizer::Sgd { .. } => "sgd",
            DenseOptimizer::Adam { .. } => "adam",
        };
        let shape = format!(
            "tables {tables}, embedding_dim {}, bottom_mlp {:?}, top_mlp {:?}, interaction {:?}, dense_optimizer {optimizer}",
            config.embedding_dim, config.bottom_mlp, config.top_mlp, config.interaction
        );
        Ok(Dlrm { tables, width, device, bottom, interaction, top, parameters, shape })
    }

    /// The click logits `[batch]` of raw dense counts `[batch, 13]` (fed as
    /// `log(max(x, 0) + 3)`) and pooled embeddings `[batch, pooled values a sample]`
    /// (table after table), both on the model's device. Differentiable in both.
    pub fn forward(&self, dense: &Tensor, pooled: &Tensor) -> Tensor {
        let batch = pooled.size()[0];
        let mut bottom = (dense.clamp_min(0.0) + 3.0).log();
        for layer in &self.bottom {
            bottom = layer.forward(&bottom).relu();
        }
        let mut x = match &self.interaction {
            InteractionLayers::Dot { pairs } => {
                let n = (self.tables + 1) as i64;
                let vectors = Tensor::cat(&[&bottom.unsqueeze(1), &pooled.view([batch, n - 1, -1])], 1);
                let products = vectors.bmm(&vectors.transpose(1, 2)).view([batch, n * n]);
                Tensor::cat(&[&bottom, &products.index_select(1, pairs)], 1)
            }
            InteractionLayers::Cross(layers) => {
                let x0 = Tensor::cat(&[&bottom, pooled], 1);
                let mut x = x0.shallow_clone();
                for layer in layers {
                    x = &x0 * layer.up.forward(&x.matmul(&layer.down.tr())) + &x;
                }
                x
            }
        };
        let last = self.top.len() - 1;
        for (l, layer) in self.top.iter().enumerate() {
            x = layer.forward(&x);
            if l < last {
                x = x.relu();
            }
        }
        x.view([batch])
    }

    /// One step on a batch: forward, mean BCE-with-logits loss, backward, a step of the
    /// dense optimizer. `dense` is `batch * 13` raw counts, `pooled` the engine's lookup
    /// output (sample after sample, each its tables' pooled values table after table),
    /// `labels` 0/1 clicks. The
    /// embedding gradient comes back for the engine to apply.
    pub fn train_step(&mut self, dense: &[f32], pooled: &[f32], labels: &[f32]) -> Result<TrainStep, ModelError> {
        let (dense, pooled) = self.inputs(labels.len(), dense, pooled)?;
        let pooled = pooled.set_requires_grad(true);
        let labels = Tensor::from_slice(labels).to_device(self.device);
        let logits = self.forward(&dense, &pooled);
        let loss = logits.f_binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Mean)?;
        let inputs: Vec<&Tensor> = std::iter::once(&pooled).chain(self.parameters.tensors()).collect();
        // Gradients as `backward` would leave them in `.grad` (AccumulateGrad makes them
        // contiguous like their tensors), without keeping them there between steps.
        let mut grads =
            Tensor::f_run_backward(&[&loss], &inputs, false, false)?.iter().map(|g| g.f_contiguous()).collect::<Result<Vec<_>, _>>()?;
        let pooled_grad = grads.remove(0).to_device(Device::Cpu).view([-1]);
        self.parameters.step(&grads)?;
        Ok(TrainStep { loss: loss.f_double_value(&[])? as f32, embedding_grad: Vec::<f32>::try_from(&pooled_grad)? })
    }

    /// Click probabilities of a batch, without gradients or updates; inputs as in
    /// [`Dlrm::train_step`], the batch size taken from `dense`.
    pub fn predict(&self, dense: &[f32], pooled: &[f32]) -> Result<Vec<f32>, ModelError> {
        let (dense, pooled) = self.inputs(dense.len() / CRITEO_DENSE_FEATURES, dense, pooled)?;
        let probabilities = tch::no_grad(|| self.forward(&dense, &pooled).sigmoid()).to_device(Device::Cpu);
        Ok(Vec::<f32>::try_from(&probabilities)?)
    }

    /// Writes every parameter, the dense optimizer's state and its step count, and the
    /// model's shape to `path`, crash-safely: into a sibling `<path>.tmp`, synced, renamed
    /// over `path`, and the directory synced, so `path` holds either the previous state or
    /// this one, whole.
    pub fn save_state(&self, path: &Path) -> Result<(), ModelError> {
        let mut file_name = path.file_name().ok_or_else(|| ModelError::state(path, "is not a file path"))?.to_os_string();
        file_name.push(".tmp");
        let temporary = path.with_file_name(file_name);
        let mut named = self.parameters.named_state();
        named.push((SHAPE_ENTRY.to_string(), Tensor::from_slice(self.shape.as_bytes())));
        Tensor::save_multi(&named, &temporary).map_err(|e| ModelError::state(&temporary, e))?;
        File::open(&temporary).and_then(|f| f.sync_all()).map_err(|e| ModelError::state(&temporary, format!("fsync: {e}")))?;
        std::fs::rename(&temporary, path).map_err(|e| ModelError::state(path, format!("rename from {}: {e}", temporary.display())))?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(directory).and_then(|d| d.sync_all()).map_err(|e| ModelError::state(path, format!("fsync of the directory: {e}")))
    }

    /// Restores what [`Dlrm::save_state`] wrote, in place. A file that cannot be read,
    /// is of a model of another shape, or lacks or mismatches a tensor is an error
    /// naming the file (and the tensor), and leaves the model as it was.
    pub fn load_state(&mut self, path: &Path) -> Result<(), ModelError> {
        let mut values: HashMap<String, Tensor> =
            Tensor::load_multi(path).map_err(|e| ModelError::state(path, format!("cannot be read: {e}")))?.into_iter().collect();
        let shape = values.remove(SHAPE_ENTRY).ok_or_else(|| ModelError::state(path, format!("has no {SHAPE_ENTRY} entry")))?;
        let shape = Vec::<u8>::try_from(&shape).ok().and_then(|bytes| String::from_utf8(bytes).ok()).unwrap_or_default();
        if shape != self.shape {
            return Err(ModelError::state(path, format!("is of a model with {shape}; this model has {}", self.shape)));
        }
        let expected = self.parameters.named_state();
        for (name, ours) in &expected {
            let theirs = values.get(name).ok_or_else(|| ModelError::state(path, format!("has no tensor {name}")))?;
            if theirs.size() != ours.size() || theirs.kind() != ours.kind() {
                return Err(ModelError::state(
                    path,
                    format!(
                        "tensor {name} is {:?} {:?}, this model's is {:?} {:?}",
                        theirs.kind(),
                        theirs.size(),
                        ours.kind(),
                        ours.size()
                    ),
                ));
            }
        }
        if let Some(extra) = values.keys().find(|name| !expected.iter().any(|(ours, _)| ours == *name)) {
            return Err(ModelError::state(path, format!("has a tensor {extra} this model does not")));
        }
        self.parameters.restore(&values).map_err(|e| ModelError::state(path, e))
    }

    /// The device tensors of a batch's inputs, after checking their lengths.
    fn inputs(&self, batch: usize, dense: &[f32], pooled: &[f32]) -> Result<(Tensor, Tensor), ModelError> {
        let per_sample = self.width;
        if batch == 0 || dense.len() != batch * CRITEO_DENSE_FEATURES || pooled.len() != batch * per_sample {
            return Err(ModelError::Shape(format!(
                "a batch of {batch} needs {} dense values and {} pooled values ({} tables, {per_sample} values a sample), got {} and {}",
                batch * CRITEO_DENSE_FEATURES,
                batch * per_sample,
                self.tables,
                dense.len(),
                pooled.len()
            )));
        }
        let b = batch as i64;
        let dense = Tensor::from_slice(dense).view([b, CRITEO_DENSE_FEATURES as i64]).to_device(self.device);
        let pooled = Tensor::from_slice(pooled).view([b, per_sample as i64]).to_device(self.device);
        Ok((dense, pooled))
    }
}
