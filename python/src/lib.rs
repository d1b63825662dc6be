//! `strata._native`: the thin PyO3 layer between the `strata` Python package and the
//! engine. Tensors and arrays cross as (address, length) pairs that the Python side
//! takes from contiguous CPU tensors of the right dtype and keeps alive for the call;
//! rows, pooled outputs and gradients are read and written in place, and the GIL is
//! released while the engine works. Configs cross as JSON, results as JSON.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use strata::data::{SyntheticBatches, SyntheticConfig};
use strata::engine::collection::{CollectionConfig, CollectionError, FeatureBags, FeatureGrads, TableCollection};
use strata::engine::storage::BackingStore;
use strata::sim::{Capacity, Simulation};
use strata::trace::{KeySource, TraceError, TraceFormat, TraceRecord};
use strata_policies::{AdmissionConfig, PolicyConfig, NEVER};

/// A slice of `len` values of `T` at `address`, as the Python side hands them over.
///
/// # Safety
/// `address` must point to `len` initialised, aligned values of `T` that stay alive and
/// unmodified by anyone else for `'a` (the Python wrapper checks the dtype, device and
/// contiguity of the tensor it takes them from and holds it for the call); or `len` is 0.
unsafe fn slice<'a, T>(address: usize, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract above.
    unsafe { std::slice::from_raw_parts(address as *const T, len) }
}

/// As [`slice`], writable.
///
/// # Safety
/// As [`slice`], and no one else reads or writes the memory for `'a`.
unsafe fn slice_mut<'a, T>(address: usize, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract above.
    unsafe { std::slice::from_raw_parts_mut(address as *mut T, len) }
}

/// One feature's tensors: values (int64), offsets (int64), weights (float32; length 0
/// when unweighted), each as (address, length).
type FeatureArgs = ((usize, usize), (usize, usize), (usize, usize));

/// # Safety
/// Every pair must satisfy [`slice`]'s contract.
unsafe fn feature_bags<'a>(features: &[FeatureArgs]) -> Vec<FeatureBags<'a>> {
    features
        .iter()
        .map(|&((v, nv), (o, no), (w, nw))| {
            // SAFETY: the caller's contract.
            unsafe { FeatureBags { values: slice(v, nv), offsets: slice(o, no), weights: slice(w, nw) } }
        })
        .collect()
}

/// A `CollectionConfig` from JSON, whose two policies may be given by name (as
/// `strata simulate --policies` takes them).
fn parse_config(config_json: &str) -> PyResult<CollectionConfig> {
    let bad = |e: String| PyValueError::new_err(format!("collection config: {e}"));
    let mut value: serde_json::Value = serde_json::from_str(config_json).map_err(|e| bad(e.to_string()))?;
    for key in ["device_policy", "host_policy"] {
        if let Some(name) = value.get(key).and_then(|v| v.as_str()).map(str::to_string) {
            let policy = PolicyConfig::from_name(&name).map_err(|e| bad(format!("{key}: {e}")))?;
            value[key] = serde_json::to_value(policy).map_err(|e| bad(e.to_string()))?;
        }
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

fn to_py(error: CollectionError) -> PyErr {
    match error {
        CollectionError::Group { .. } => PyRuntimeError::new_err(error.to_string()),
        _ => PyValueError::new_err(error.to_string()),
    }
}

/// Tables of their own shapes, tiered, used one step at a time (see
/// `strata::engine::collection`).
#[pyclass(module = "strata._native")]
struct Collection {
    inner: Mutex<TableCollection>,
}

impl Collection {
    fn with<R: Send>(&self, py: Python<'_>, work: impl FnOnce(&mut TableCollection) -> Result<R, CollectionError> + Send) -> PyResult<R> {
        py.allow_threads(|| {
            let mut collection = self.inner.lock().map_err(|_| PyRuntimeError::new_err("an earlier call panicked inside the engine"))?;
            work(&mut collection).map_err(to_py)
        })
    }
}

#[pymethods]
impl Collection {
    /// Builds the collection from a `CollectionConfig` in JSON, whose two policies may
    /// be given by name (as `strata simulate --policies` takes them).
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        let config = parse_config(config_json)?;
        let collection = py.allow_threads(|| TableCollection::new(&config)).map_err(to_py)?;
        Ok(Collection { inner: Mutex::new(collection) })
    }

    /// Opens the collection of the config's `table_dir` at its last committed
    /// checkpoint; returns it and the checkpoint's number.
    #[staticmethod]
    fn resume(py: Python<'_>, config_json: &str) -> PyResult<(Self, u64)> {
        let config = parse_config(config_json)?;
        let (collection, checkpoint) = py.allow_threads(|| TableCollection::resume(&config)).map_err(to_py)?;
        Ok((Collection { inner: Mutex::new(collection) }, checkpoint))
    }

    /// Takes crash-safe checkpoint `checkpoint` of the tables' files.
    fn checkpoint(&self, py: Python<'_>, checkpoint: u64) -> PyResult<()> {
        self.with(py, |c| c.checkpoint(checkpoint))
    }

    /// Announces a future step (its features, every table's, in order).
    fn announce(&self, py: Python<'_>, features: Vec<FeatureArgs>) -> PyResult<()> {
        self.with(py, |c| {
            // SAFETY: the Python wrapper hands over live, contiguous tensors of the
            // stated dtypes and lengths and holds them for the call.
            let features = unsafe { feature_bags(&features) };
            c.announce(&features)
        })
    }

    /// Pools the step's bags into `outs` (one float32 buffer per table group); gradients follow
    /// when `for_training`.
    fn lookup(&self, py: Python<'_>, features: Vec<FeatureArgs>, outs: Vec<(usize, usize)>, for_training: bool) -> PyResult<()> {
        self.with(py, |c| {
            // SAFETY: as in `announce`; the output tensors are fresh, so nothing else
            // touches them.
            let (features, mut outs) =
                unsafe { (feature_bags(&features), outs.iter().map(|&(a, n)| slice_mut::<f32>(a, n)).collect::<Vec<_>>()) };
            c.lookup(&features, &mut outs, for_training)
        })
    }

    /// Applies the gradients of the last lookup's outputs: one float32 buffer per
    /// feature, (address, length, row stride), read in place.
    fn apply_gradients(&self, py: Python<'_>, grads: Vec<(usize, usize, usize)>) -> PyResult<()> {
        self.with(py, |c| {
            let grads: Vec<FeatureGrads> = grads
                .iter()
                .map(|&(a, n, stride)| {
                    // SAFETY: as in `announce`: each gradient tensor spans the `n` values
                    // from `a` that its rows lie in, and is held for the call.
                    let values = unsafe { slice::<f32>(a, n) };
                    FeatureGrads { values, stride }
                })
                .collect();
            c.apply_gradients(&grads)
        })
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.flush())
    }

    /// Withdraws the steps announced and not yet looked up; returns how many.
    fn withdraw(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |c| c.withdraw_announced())
    }

    /// Steps announced and not yet looked up.
    fn announced(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |c| Ok(c.announced()))
    }

    /// Copies every row of table `t` (values, widened to float32 from a half-precision
    /// table, then optimizer state: `rows * (dim + state)` float32) into the buffer at
    /// `address`.
    fn read_rows(&self, py: Python<'_>, t: usize, address: usize, len: usize) -> PyResult<()> {
        self.with(py, |c| {
            let flat = c.rows_of(t)?;
            let layout = flat.layout();
            let width = layout.dim + layout.state;
            let rows = flat.rows_slice();
            let needs = rows.len() / layout.words() * width;
            if needs != len {
                return Err(CollectionError::Step(format!("table {t} has {needs} values, the buffer holds {len}")));
            }
            // SAFETY: as in `lookup`.
            let out = unsafe { slice_mut::<f32>(address, len) };
            for (stored, wide) in rows.chunks_exact(layout.words()).zip(out.chunks_exact_mut(width)) {
                let (values, state) = stored.split_at(layout.value_words());
                layout.dtype.decode(values, &mut wide[..layout.dim]);
                wide[layout.dim..].copy_from_slice(state);
            }
            Ok(())
        })
    }

    /// The table groups, in the order of the outputs: (name, dim, the group's tables by
    /// index).
    fn groups(&self, py: Python<'_>) -> PyResult<Vec<(String, usize, Vec<usize>)>> {
        self.with(py, |c| Ok(c.groups().map(|g| (g.name.clone(), g.dim, g.tables.clone())).collect()))
    }

    /// Each table group's statistics, as JSON `{group: stats}`, each with the names of the
    /// group's `tables`.
    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |c| {
            let names: Vec<&str> = c.tables().iter().map(|t| t.name.as_str()).collect();
            let map: serde_json::Map<String, serde_json::Value> = c
                .stats()
                .into_iter()
                .map(|(group, stats)| {
                    let mut value = serde_json::to_value(stats).unwrap_or_default();
                    value["tables"] = group.tables.iter().map(|&t| names[t]).collect();
                    (group.name.clone(), value)
                })
                .collect();
            Ok(serde_json::Value::Object(map).to_string())
        })
    }
}

/// The synthetic Criteo-shaped stream (Strata's generator), batch by batch: each batch
/// as little-endian bytes that NumPy views without parsing: dense counts (float32,
/// batch x 13), labels (float32, batch), and per table its rows (int64, local to the
/// table) and bag lengths (int64, batch).
#[pyclass(module = "strata._native")]
struct Synthetic {
    batches: Mutex<SyntheticBatches>,
    rows: Vec<u64>,
    multi_hot: Vec<usize>,
    offsets: Vec<u64>,
}

type SyntheticBatch = (Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

#[pymethods]
impl Synthetic {
    /// The generator of a `SyntheticConfig` in JSON, cut into batches of `batch_size`.
    #[new]
    fn new(config_json: &str, batch_size: usize) -> PyResult<Self> {
        let config: SyntheticConfig =
            serde_json::from_str(config_json).map_err(|e| PyValueError::new_err(format!("synthetic config: {e}")))?;
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be positive"));
        }
        let batches = SyntheticBatches::new(&config, batch_size, None).map_err(|e| PyValueError::new_err(e.to_string()))?.with_features();
        let layout = batches.source().layout().clone();
        let offsets = (0..layout.tables()).map(|t| layout.global_row(t, 0)).collect();
        Ok(Synthetic { batches: Mutex::new(batches), rows: layout.rows().to_vec(), multi_hot: layout.multi_hot().to_vec(), offsets })
    }

    /// Rows of each table.
    fn table_rows(&self) -> Vec<u64> {
        self.rows.clone()
    }

    /// The next batch.
    fn next_batch(&self, py: Python<'_>) -> PyResult<SyntheticBatch> {
        py.allow_threads(|| {
            let mut batches = self.batches.lock().map_err(|_| PyRuntimeError::new_err("the generator panicked"))?;
            let batch = batches.next().ok_or_else(|| PyRuntimeError::new_err("the synthetic stream ended"))?;
            let bytes = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
            let samples = batch.labels.len();
            let per_sample: usize = self.multi_hot.iter().sum();
            let mut tables = Vec::with_capacity(self.rows.len());
            let mut first = 0;
            for (t, &hot) in self.multi_hot.iter().enumerate() {
                let mut values = Vec::with_capacity(samples * hot * 8);
                for s in 0..samples {
                    for &id in &batch.ids[s * per_sample + first..][..hot] {
                        values.extend_from_slice(&((id - self.offsets[t]) as i64).to_le_bytes());
                    }
                }
                let lengths = std::iter::repeat_n((hot as i64).to_le_bytes(), samples).flatten().collect();
                tables.push((values, lengths));
                first += hot;
            }
            Ok((bytes(&batch.dense), bytes(&batch.labels), tables))
        })
    }
}

/// Keys of a uint64 NumPy array, read in place.
struct ArrayKeys {
    address: usize,
    len: usize,
    at: usize,
}

impl KeySource for ArrayKeys {
    fn next_chunk(&mut self, out: &mut Vec<TraceRecord>, max: usize) -> Result<(), TraceError> {
        out.clear();
        // SAFETY: `simulate` holds the array for the whole simulation (see `slice`).
        let keys: &[u64] = unsafe { slice(self.address, self.len) };
        let end = (self.at + max).min(keys.len());
        out.extend(keys[self.at..end].iter().map(|&key| TraceRecord { key, next_access: NEVER }));
        self.at = end;
        Ok(())
    }
}

/// Replays a trace (a uint64 array as (address, length), or a trace file) through
/// `policies` at `capacities`; returns the report as JSON (its `results` and, with
/// `mrc_rate`, the miss-ratio curves).
#[pyfunction]
#[pyo3(signature = (keys, path, policies, capacities, mrc_rate=None, admission_json=None, threads=0))]
#[allow(clippy::too_many_arguments)] // one Python call's keyword arguments
fn simulate(
    py: Python<'_>,
    keys: Option<(usize, usize)>,
    path: Option<PathBuf>,
    policies: Vec<String>,
    capacities: Vec<f64>,
    mrc_rate: Option<f64>,
    admission_json: Option<&str>,
    threads: usize,
) -> PyResult<String> {
    let policies = policies
        .iter()
        .map(|p| PolicyConfig::from_name(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let capacities = capacities
        .iter()
        .map(|&c| Capacity::try_from(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PyValueError::new_err(format!("capacities: {e}")))?;
    let admission: AdmissionConfig = match admission_json {
        Some(text) => serde_json::from_str(text).map_err(|e| PyValueError::new_err(format!("admission: {e}")))?,
        None => AdmissionConfig::default(),
    };
    if let Some(rate) = mrc_rate.filter(|r| !(*r > 0.0 && *r <= 1.0)) {
        return Err(PyValueError::new_err(format!("mrc sample rate must be in (0, 1], got {rate}")));
    }
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let simulation = Simulation { policies, capacities, admission, lru_curve: mrc_rate, threads, scratch_dir: std::env::temp_dir() };
    let path = match (keys, path) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(path),
        (None, None) => return Err(PyValueError::new_err("give keys or a trace path")),
    };
    let open = move || -> Result<Box<dyn KeySource>, TraceError> {
        match (keys, &path) {
            (_, Some(path)) => TraceFormat::from_path(path).open(path, &[]),
            (Some((address, len)), None) => Ok(Box::new(ArrayKeys { address, len, at: 0 })),
            (None, None) => unreachable!("checked above"),
        }
    };
    let report = py.allow_threads(|| simulation.run(&open)).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let curves = if mrc_rate.is_some() { strata::report::curves(&report, 48) } else { Vec::new() };
    let json = serde_json::json!({
        "requests": report.requests,
        "distinct_rows": report.distinct_rows,
        "results": report.results,
        "curves": curves,
    });
    Ok(json.to_string())
}

/// Runs the planner on a plan config file; returns its report as JSON.
#[pyfunction]
fn plan(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let config = strata::plan::PlanConfig::load(&path).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let report = py.allow_threads(|| strata::plan::plan(&config)).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    serde_json::to_string(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Collection>()?;
    m.add_class::<Synthetic>()?;
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    Ok(())
}
