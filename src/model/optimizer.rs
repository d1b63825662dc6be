//! The dense optimizers (SGD, Adam) of the DLRM's MLP and cross-layer parameters, run
//! over the parameter tensors with their state (Adam's moments, the step count) held
//! here, so that a checkpoint can save and restore it. Each update repeats libtorch's
//! `torch::optim::SGD` / `torch::optim::Adam` (default settings) operation for operation,
//! so it equals tch's `nn::Sgd` / `nn::Adam` bit for bit; on the CPU, Adam's seven
//! operations run fused in two passes over each parameter, with the same roundings.

use std::collections::HashMap;

use tch::{TchError, Tensor};

use super::config::DenseOptimizer;

/// Adam's defaults in libtorch (and tch): no weight decay, no AMSGrad.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Adam's running averages of one parameter's gradient and squared gradient.
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Room for `exp_avg_sq.sqrt()` in the fused step (scratch, not state).
    root: Tensor,
}

/// The model's trainable tensors, by name, with their optimizer and its state.
pub struct DenseParameters {
    config: DenseOptimizer,
    /// `(name, tensor)` sorted by name; the tensors are shared with the model's layers.
    parameters: Vec<(String, Tensor)>,
    /// One per parameter under Adam; empty under SGD.
    moments: Vec<Moments>,
    /// Optimizer steps taken (libtorch counts them per parameter; every parameter gets a
    /// gradient at every step here, so one count serves all).
    steps: i64,
}

impl DenseParameters {
    pub fn new(config: DenseOptimizer, mut parameters: Vec<(String, Tensor)>) -> DenseParameters {
        parameters.sort_by(|a, b| a.0.cmp(&b.0));
        let moments = match config {
            DenseOptimizer::Sgd { .. } => Vec::new(),
            DenseOptimizer::Adam { .. } => parameters
                .iter()
                .map(|(_, p)| Moments { exp_avg: p.zeros_like(), exp_avg_sq: p.zeros_like(), root: p.zeros_like() })
                .collect(),
        };
        DenseParameters { config, parameters, moments, steps: 0 }
    }

    /// The parameter tensors, in the order [`DenseParameters::step`] takes gradients.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.parameters.iter().map(|(_, p)| p)
    }

    /// One update with `grads`, one per parameter in the order of
    /// [`DenseParameters::tensors`].
    ///
    /// libtorch's `p.add_(g, alpha)` is a fused multiply-add (`fmadd(g, alpha, p)` in its
    /// vectorised CPU kernel, `fma` on CUDA) and `addcmul_`/`addcdiv_` with a `value`
    /// compute `p + (value * a) * b` and `p + (value * a) / b`. tch exposes none of these
    /// scalar arguments, so the same roundings are had with what it does expose:
    /// `add_(g, alpha)` as `addcmul_(g, alpha)` with `alpha` a one-element tensor (the
    /// same fused multiply-add), and `value * a` computed first, then `addcmul_`/`addcdiv_`
    /// with value 1. The unit test below checks the equality with tch's optimizers.
    pub fn step(&mut self, grads: &[Tensor]) -> Result<(), TchError> {
        assert_eq!(grads.len(), self.parameters.len(), "one gradient per dense parameter");
        self.steps += 1;
        tch::no_grad(|| match self.config {
            DenseOptimizer::Sgd { lr } => {
                for ((_, p), g) in self.parameters.iter_mut().zip(grads) {
                    // p.add_(g, -lr)
                    let _ = p.f_addcmul_(g, &scalar(-lr, p))?;
                }
                Ok(())
            }
            DenseOptimizer::Adam { lr } => {
                let bias_correction1 = 1.0 - BETA1.powf(self.steps as f64);
                let bias_correction2 = 1.0 - BETA2.powf(self.steps as f64);
                let step_size = lr / bias_correction1;
                let fused = AdamStep {
                    beta1: BETA1 as f32,
                    one_minus_beta1: (1.0 - BETA1) as f32,
                    beta2: BETA2 as f32,
                    one_minus_beta2: (1.0 - BETA2) as f32,
                    sqrt_bias_correction2: bias_correction2.sqrt() as f32,
                    eps: EPS as f32,
                    minus_step_size: -step_size as f32,
                };
                for (((_, p), g), m) in self.parameters.iter_mut().zip(grads).zip(&mut self.moments) {
                    if fused.apply(p, g, m)? {
                        continue;
                    }
                    // exp_avg.mul_(beta1).add_(g, 1 - beta1)
                    let _ = m.exp_avg.f_mul_scalar_(BETA1)?;
                    let _ = m.exp_avg.f_addcmul_(g, &scalar(1.0 - BETA1, p))?;
                    // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
                    let _ = m.exp_avg_sq.f_mul_scalar_(BETA2)?;
                    let _ = m.exp_avg_sq.f_addcmul_(&g.f_mul_scalar(1.0 - BETA2)?, g)?;
                    // denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
                    let denom = m.exp_avg_sq.f_sqrt()?.f_div_scalar(bias_correction2.sqrt())?.f_add_scalar_(EPS)?;
                    // p.addcdiv_(exp_avg, denom, -step_size)
                    let _ = p.f_addcdiv_(&m.exp_avg.f_mul_scalar(-step_size)?, &denom)?;
                }
                Ok(())
            }
        })
    }

    /// Everything a resumed run needs, by name: `param.NAME`, under Adam
    /// `adam.exp_avg.NAME` and `adam.exp_avg_sq.NAME`, and `optimizer.steps`.
    pub(crate) fn named_state(&self) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> =
            self.parameters.iter().map(|(name, p)| (format!("param.{name}"), p.shallow_clone())).collect();
        for ((name, _), m) in self.parameters.iter().zip(&self.moments) {
            state.push((format!("adam.exp_avg.{name}"), m.exp_avg.shallow_clone()));
            state.push((format!("adam.exp_avg_sq.{name}"), m.exp_avg_sq.shallow_clone()));
        }
        state.push(("optimizer.steps".to_string(), Tensor::from_slice(&[self.steps])));
        state
    }

    /// Overwrites the state with `values`, which holds exactly the names of
    /// [`DenseParameters::named_state`], each of the same shape and kind (the caller
    /// checks; a mismatch here is a libtorch error).
    pub(crate) fn restore(&mut self, values: &HashMap<String, Tensor>) -> Result<(), TchError> {
        tch::no_grad(|| {
            for (name, mut target) in self.named_state() {
                if name == "optimizer.steps" {
                    self.steps = values[&name].f_int64_value(&[0])?;
                } else {
                    target.f_copy_(&values[&name])?;
                }
            }
            Ok(())
        })
    }
}

/// One Adam update's constants, rounded to f32 as libtorch rounds its double scalars
/// for f32 parameters.
struct AdamStep {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    sqrt_bias_correction2: f32,
    eps: f32,
    minus_step_size: f32,
}

impl AdamStep {
    /// The update of `p` in two passes over the parameter, its gradient and its moments
    /// with libtorch's roundings (see [`DenseParameters::step`]), and libtorch's own
    /// `sqrt` between them (its CPU kernel, through the vector math library, is not
    /// correctly rounded, so no other root gives its bits): the same bits as the seven
    /// tensor operations, without their temporaries and five of their passes. Only for
    /// CPU f32 tensors, each contiguous; returns false (nothing done) for any other.
    fn apply(&self, p: &mut Tensor, g: &Tensor, m: &mut Moments) -> Result<bool, TchError> {
        let fits = |t: &Tensor| t.device() == tch::Device::Cpu && t.kind() == tch::Kind::Float && t.is_contiguous();
        let n = p.numel();
        if ![&*p, g, &m.exp_avg, &m.exp_avg_sq, &m.root].iter().all(|t| fits(t) && t.numel() == n) {
            return Ok(false);
        }
        // SAFETY: the five tensors are contiguous CPU f32 tensors of `n` elements each
        // (checked above), alive for this call, and five distinct allocations (the
        // moments and the root made by `zeros_like`, the gradient by autograd); `g` is
        // only read, and `root` only read after libtorch has written it, so no two live
        // slices alias.
        let slice = |t: &Tensor| unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) };
        let (exp_avg, exp_avg_sq, g) = (slice(&m.exp_avg), slice(&m.exp_avg_sq), &*slice(g));
        crate::engine::with_wide_vectors(
            #[inline(always)]
            || {
                for ((m, v), &g) in exp_avg.iter_mut().zip(exp_avg_sq.iter_mut()).zip(g) {
                    // exp_avg.mul_(beta1).add_(g, 1 - beta1): a fused multiply-add.
                    *m = g.mul_add(self.one_minus_beta1, *m * self.beta1);
                    // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2), `(1 - beta2) * g` first.
                    *v = (g * self.one_minus_beta2).mul_add(g, *v * self.beta2);
                }
            },
        );
        let _ = m.exp_avg_sq.f_sqrt_out(&m.root)?;
        let (p, root) = (slice(p), &*slice(&m.root));
        crate::engine::with_wide_vectors(
            #[inline(always)]
            || {
                for ((p, &m), &root) in p.iter_mut().zip(&*exp_avg).zip(root) {
                    // p.addcdiv_(exp_avg, denom, -step_size), `-step_size * exp_avg` first.
                    let denom = root / self.sqrt_bias_correction2 + self.eps;
                    *p += (m * self.minus_step_size) / denom;
                }
            },
        );
        Ok(true)
    }
}

/// `value` as a zero-dimensional f32 tensor on `like`'s device (libtorch rounds its
/// double scalars to the f32 of the parameters the same way).
fn scalar(value: f64, like: &Tensor) -> Tensor {
    Tensor::from_slice(&[value as f32]).to_device(like.device()).squeeze()
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use tch::nn::{self, OptimizerConfig};
    use tch::{Device, Reduction};

    use super::*;

    /// `dims` values uniform in `[-scale, scale)` from `rng` (not libtorch's global
    /// generator, which tests running beside this one draw from).
    fn uniform(rng: &mut SmallRng, dims: [i64; 2], scale: f32) -> Tensor {
        let values: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rng.gen_range(-scale..scale)).collect();
        Tensor::from_slice(&values).view(dims)
    }

    /// A two-layer MLP on a fresh VarStore, the same for the same `seed`.
    fn mlp(seed: u64) -> (nn::VarStore, Vec<(String, Tensor)>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let vars = nn::VarStore::new(Device::Cpu);
        let root = vars.root();
        // Odd sizes, so libtorch's vectorised kernels leave a scalar tail.
        for (name, dims) in [("a_weight", [37i64, 13]), ("a_bias", [37, 1]), ("b_weight", [1, 37]), ("b_bias", [1, 1])] {
            let _ = root.var_copy(name, &uniform(&mut rng, dims, 0.5));
        }
        let mut named: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        (vars, named)
    }

    /// The mean BCE loss of batch `step` (29 samples of 13 features, 0/1 labels).
    fn loss(named: &[(String, Tensor)], step: u64) -> Tensor {
        let p = |n: &str| &named.iter().find(|(name, _)| name == n).unwrap().1;
        let mut rng = SmallRng::seed_from_u64(1000 + step);
        let x = uniform(&mut rng, [29, 13], 2.0);
        let labels: Vec<f32> = (0..29).map(|_| if rng.gen_bool(0.5) { 1.0 } else { 0.0 }).collect();
        let labels = Tensor::from_slice(&labels);
        let hidden = (x.matmul(&p("a_weight").tr()) + p("a_bias").view([-1])).relu();
        let logits = (hidden.matmul(&p("b_weight").tr()) + p("b_bias").view([-1])).view([-1]);
        logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Mean)
    }

    fn bits(named: &[(String, Tensor)]) -> Vec<(String, Vec<u32>)> {
        named.iter().map(|(n, t)| (n.clone(), Vec::<f32>::try_from(&t.view([-1])).unwrap().iter().map(|v| v.to_bits()).collect())).collect()
    }

    /// Ten steps with tch's optimizer and ten with ours, from the same parameters and
    /// batches, give bit-identical parameters (and they moved).
    #[test]
    fn equals_tch_sgd_and_adam_bit_for_bit() {
        for config in [DenseOptimizer::Sgd { lr: 0.05 }, DenseOptimizer::Adam { lr: 0.01 }] {
            let (vars, tch_named) = mlp(3);
            let initial = bits(&tch_named);
            let mut reference = match config {
                DenseOptimizer::Sgd { lr } => nn::Sgd::default().build(&vars, lr).unwrap(),
                DenseOptimizer::Adam { lr } => nn::Adam::default().build(&vars, lr).unwrap(),
            };
            let (_ours_vars, ours_named) = mlp(3);
            let mut ours = DenseParameters::new(config, ours_named.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect());
            for step in 0..10 {
                reference.backward_step(&loss(&tch_named, step));
                let params: Vec<Tensor> = ours.tensors().map(|t| t.shallow_clone()).collect();
                let grads = Tensor::run_backward(&[loss(&ours_named, step)], &params, false, false);
                ours.step(&grads).unwrap();
            }
            assert_ne!(bits(&tch_named), initial, "{config:?}: nothing moved");
            assert_eq!(bits(&ours_named), bits(&tch_named), "{config:?}");
        }
    }
}
