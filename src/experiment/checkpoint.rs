//! Crash-safe checkpoints of an experiment's set-ups and the run folder that
//! `strata run --resume DIR` reads back: `DIR/checkpoints/config.json` (the run's
//! config), and per set-up a folder holding the manifest of its latest committed
//! checkpoint (`manifest.json`: step, data position, losses, evaluations, the dense
//! model's state file, where the table is), or its result once it finished
//! (`result.json`). See docs/RELIABILITY.md, "Checkpoints".

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::flat::FlatTable;
use crate::engine::grouped::Embeddings;
use crate::engine::storage::{roll_back, write_atomically, BackingStore, ReadConfig, RollBack, StorageError, TableFile};
use crate::engine::{Dtype, EngineError, RowInit, RowLayout};
use crate::model::train::{CheckpointFailure, Checkpointer, Evaluation, TrainedSteps};
use crate::model::{Dlrm, ModelError};

/// The version of the manifest this build writes and reads.
const FORMAT: u32 = 2;
const MANIFEST: &str = "manifest.json";
const RESULT: &str = "result.json";
const CONFIG: &str = "config.json";

/// A checkpoint that could not be written, read or used, saying where: a checkpoint file
/// or folder and what went wrong with it, or the model's state file or the table (whose
/// errors name their file).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An I/O error while doing `action` (removing an earlier run's checkpoints, renaming
    /// the temporary file over this one) to the file or folder at `path`.
    #[error("{}: {action}: {source}", path.display())]
    IoWhile {
        path: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid checkpoint file: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Unwritable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint file that is missing, of another run, set-up or format, or that does
    /// not match the table it names.
    #[error("{}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    /// Saving or loading the dense model's state.
    #[error(transparent)]
    DenseState(#[from] ModelError),
    /// The table file, its undo journal, or a snapshot file.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The table's flush, snapshot or journal protection.
    #[error(transparent)]
    Table(#[from] EngineError),
}

impl CheckpointError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.to_path_buf(), source }
    }

    fn unusable(path: &Path, reason: impl Into<String>) -> Self {
        CheckpointError::Unusable { path: path.to_path_buf(), reason: reason.into() }
    }
}

/// Where a checkpoint's table rows are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableState {
    /// The table file itself, brought back to the checkpoint with its undo journal.
    TableFile {
        path: PathBuf,
        rows: u64,
        dim: usize,
        state: usize,
        #[serde(default)]
        dtype: Dtype,
    },
    /// An in-memory table's rows, copied into a table file in the set-up's folder.
    Snapshot {
        file: String,
        rows: u64,
        dim: usize,
        state: usize,
        #[serde(default)]
        dtype: Dtype,
    },
}

impl TableState {
    fn layout(&self) -> (u64, RowLayout) {
        match *self {
            TableState::TableFile { rows, dim, state, dtype, .. } | TableState::Snapshot { rows, dim, state, dtype, .. } => {
                (rows, RowLayout::f32(dim, state).with_dtype(dtype))
            }
        }
    }
}

/// A committed checkpoint of one set-up's training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The hash of the run's config ([`config_hash`]).
    pub config_hash: String,
    pub setup: String,
    /// Checkpoints are numbered from 1, one per `checkpoint_every` steps.
    pub checkpoint: u64,
    pub steps: u64,
    /// Training batches taken from the stream: where a resumed run goes on from.
    pub batches: u64,
    pub samples: u64,
    pub losses: Vec<f32>,
    pub evaluations: Vec<Evaluation>,
    /// The dense model's parameters and optimizer state (`Dlrm::save_state`), in the
    /// set-up's folder.
    pub dense_state: String,
    /// Each table group's rows (one group unless the tables have several dims).
    pub tables: Vec<TableState>,
}

impl Manifest {
    /// The steps this checkpoint has done, where a resumed run goes on from ([`crate::model::train::Training::resumed_after`]).
    pub fn trained_steps(&self) -> TrainedSteps {
        TrainedSteps {
            steps: self.steps,
            samples: self.samples,
            checkpoints: self.checkpoint,
            losses: self.losses.clone(),
            evaluations: self.evaluations.clone(),
        }
    }
}

/// A hash of the run's config (16 hex digits of FNV-1a): checkpoints of another config
/// are refused.
pub fn config_hash(config_json: &str) -> String {
    let hash = config_json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CheckpointError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointError::io(path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| CheckpointError::Unreadable { path: path.to_path_buf(), source })
}

/// `DIR/checkpoints`: the config a run started with and a folder per set-up.
pub struct RunFolder {
    root: PathBuf,
    config_hash: String,
}

impl RunFolder {
    /// Starts a run in `out`: forgets the checkpoints of any earlier run there and saves
    /// the config (as JSON).
    pub fn start(out: &Path, config_json: &str) -> Result<RunFolder, CheckpointError> {
        let root = out.join("checkpoints");
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CheckpointError::IoWhile { path: root, action: "removing an earlier run's checkpoints".into(), source })
            }
        }
        std::fs::create_dir_all(&root).map_err(|e| CheckpointError::io(&root, e))?;
        write_atomically(&root.join(CONFIG), config_json.as_bytes())?;
        Ok(RunFolder { root, config_hash: config_hash(config_json) })
    }

    /// The run saved in `out`, and its config (JSON) with that file's path.
    pub fn open(out: &Path) -> Result<(RunFolder, String, PathBuf), CheckpointError> {
        let root = out.join("checkpoints");
        let path = root.join(CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CheckpointError::unusable(&path, "no run to resume here (`strata run CONFIG --out DIR` saves it)")
            } else {
                CheckpointError::io(&path, e)
            }
        })?;
        Ok((RunFolder { root, config_hash: config_hash(&text) }, text, path))
    }

    /// The folder of set-up number `index` (from 0) named `name`.
    pub fn setup(&self, index: usize, name: &str) -> SetupCheckpoints {
        let safe: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
        SetupCheckpoints {
            dir: self.root.join(format!("{index}-{safe}")),
            config_hash: self.config_hash.clone(),
            setup: name.to_string(),
            committed: None,
        }
    }
}

/// A finished set-up's result, as recorded.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Finished<T> {
    config_hash: String,
    setup: String,
    result: T,
}

/// One set-up's checkpoints: the [`Checkpointer`] of its training.
pub struct SetupCheckpoints {
    dir: PathBuf,
    config_hash: String,
    setup: String,
    /// The latest committed manifest (its files are removed once a newer one commits).
    committed: Option<Manifest>,
}

impl SetupCheckpoints {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks a manifest or result written for this run and set-up.
    fn check_origin(&self, path: &Path, config_hash: &str, setup: &str) -> Result<(), CheckpointError> {
        if config_hash != self.config_hash {
            return Err(CheckpointError::unusable(
                path,
                format!("written for another config (hash {config_hash}; this run's is {}): the config changed", self.config_hash),
            ));
        }
        if setup != self.setup {
            return Err(CheckpointError::unusable(path, format!("written for set-up `{setup}`, not `{}`", self.setup)));
        }
        Ok(())
    }

    /// The recorded result, if the set-up finished.
    pub fn finished<T: DeserializeOwned>(&self) -> Result<Option<T>, CheckpointError> {
        let path = self.dir.join(RESULT);
        let Some(finished) = read_json::<Finished<T>>(&path)? else { return Ok(None) };
        self.check_origin(&path, &finished.config_hash, &finished.setup)?;
        Ok(Some(finished.result))
    }

    /// Records the set-up's result (it is finished) and removes its checkpoint files.
    pub fn record_result<T: Serialize>(&mut self, result: &T) -> Result<(), CheckpointError> {
        let path = self.dir.join(RESULT);
        std::fs::create_dir_all(&self.dir).map_err(|e| CheckpointError::io(&self.dir, e))?;
        let finished = Finished { config_hash: self.config_hash.clone(), setup: self.setup.clone(), result };
        let text = serde_json::to_string(&finished).map_err(|source| CheckpointError::Unwritable { path: path.clone(), source })?;
        write_atomically(&path, text.as_bytes())?;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| CheckpointError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CheckpointError::io(&self.dir, e))?;
            if entry.file_name() != RESULT {
                std::fs::remove_file(entry.path()).map_err(|e| CheckpointError::io(&entry.path(), e))?;
            }
        }
        self.committed = None;
        Ok(())
    }

    /// The latest committed checkpoint, if any; remembered so that the next one removes
    /// its files.
    pub fn latest(&mut self) -> Result<Option<Manifest>, CheckpointError> {
        let path = self.dir.join(MANIFEST);
        let Some(manifest) = read_json::<Manifest>(&path)? else { return Ok(None) };
        if manifest.format != FORMAT {
            return Err(CheckpointError::unusable(&path, format!("manifest format {}, this build reads {FORMAT}", manifest.format)));
        }
        self.check_origin(&path, &manifest.config_hash, &manifest.setup)?;
        let dense = self.dir.join(&manifest.dense_state);
        if !dense.is_file() {
            return Err(CheckpointError::unusable(&dense, "missing: the manifest names it as the dense model's state"));
        }
        self.committed = Some(manifest.clone());
        Ok(Some(manifest))
    }

    /// Starts the set-up afresh: an empty folder.
    pub fn clear(&mut self) -> Result<(), CheckpointError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CheckpointError::io(&self.dir, e)),
        }
        self.committed = None;
        std::fs::create_dir_all(&self.dir).map_err(|e| CheckpointError::io(&self.dir, e))
    }

    /// The stores of `manifest`'s checkpoint, one per table group: each table file
    /// rolled back to it with its undo journal (the caller then calls
    /// `TieredTable::protect_checkpoint`), or each snapshot read into an in-memory table.
    pub fn open_stores(&self, manifest: &Manifest, read: ReadConfig) -> Result<Vec<Box<dyn BackingStore>>, CheckpointError> {
        manifest.tables.iter().map(|state| self.open_store(manifest.checkpoint, state, read)).collect()
    }

    fn open_store(&self, checkpoint: u64, table: &TableState, read: ReadConfig) -> Result<Box<dyn BackingStore>, CheckpointError> {
        let (rows, layout) = table.layout();
        let store: Box<dyn BackingStore> = match table {
            TableState::TableFile { path, .. } => {
                match roll_back(path, checkpoint)? {
                    RollBack::RolledBack { pages, torn } => tracing::info!(
                        "{}: rolled back {pages} pages to checkpoint {checkpoint}{}",
                        path.display(),
                        if torn { " (the journal's last entry was torn: its page was never written)" } else { "" }
                    ),
                    RollBack::Discarded { reason } => tracing::info!("{}: journal discarded: {reason}", path.display()),
                    RollBack::NoJournal => {}
                }
                Box::new(TableFile::open_with(path, read)?)
            }
            TableState::Snapshot { file, .. } => {
                let path = self.dir.join(file);
                let mut snapshot = TableFile::open_with(&path, read)?;
                let mut flat = FlatTable::new(rows, layout, RowInit::Zeros);
                copy_rows(&mut snapshot, &mut flat)?;
                Box::new(flat)
            }
        };
        if store.rows() != rows || store.layout() != layout {
            return Err(CheckpointError::unusable(
                &self.dir.join(MANIFEST),
                format!(
                    "{} holds {} rows of {}, the manifest says {rows} rows of {layout}",
                    store.describe(),
                    store.rows(),
                    store.layout()
                ),
            ));
        }
        Ok(store)
    }

    /// Takes checkpoint `done.checkpoints`: saves the dense state, flushes each table
    /// group (a table file: every tier's dirty rows and the write-back buffer down,
    /// fsynced; an in-memory table: copied into a snapshot file), commits the manifest by
    /// atomic rename, starts each table file's journal for the new checkpoint, and
    /// removes the previous checkpoint's files.
    fn commit(&mut self, model: &Dlrm, table: &mut dyn Embeddings, done: &TrainedSteps) -> Result<(), CheckpointError> {
        let id = done.checkpoints;
        let dense_state = format!("dense-{id:06}.pt");
        model.save_state(&self.dir.join(&dense_state))?;
        let mut states = Vec::new();
        for (g, part) in table.parts_mut().into_iter().enumerate() {
            let (rows, layout) = (part.rows(), part.layout());
            states.push(match part.store_file() {
                Some(path) => {
                    let path = std::path::absolute(path).map_err(|e| CheckpointError::io(path, e))?;
                    part.flush()?;
                    TableState::TableFile { path, rows, dim: layout.dim, state: layout.state, dtype: layout.dtype }
                }
                None => {
                    let file = format!("rows-{id:06}-{g}.table");
                    let mut snapshot = TableFile::create(&self.dir.join(&file), rows, layout, RowInit::Zeros)?;
                    part.snapshot_into(&mut snapshot)?;
                    TableState::Snapshot { file, rows, dim: layout.dim, state: layout.state, dtype: layout.dtype }
                }
            });
        }
        let manifest = Manifest {
            format: FORMAT,
            config_hash: self.config_hash.clone(),
            setup: self.setup.clone(),
            checkpoint: id,
            steps: done.steps,
            batches: done.steps,
            samples: done.samples,
            losses: done.losses.clone(),
            evaluations: done.evaluations.clone(),
            dense_state,
            tables: states,
        };
        let path = self.dir.join(MANIFEST);
        let text = serde_json::to_string(&manifest).map_err(|source| CheckpointError::Unwritable { path: path.clone(), source })?;
        write_atomically(&path, text.as_bytes())?;
        for part in table.parts_mut() {
            part.protect_checkpoint(id)?;
        }
        if let Some(previous) = self.committed.replace(manifest) {
            let mut files = vec![previous.dense_state];
            for state in previous.tables {
                if let TableState::Snapshot { file, .. } = state {
                    files.push(file);
                }
            }
            for file in files {
                let _ = std::fs::remove_file(self.dir.join(file));
            }
        }
        Ok(())
    }
}

/// Copies every row of `from` into `to` and syncs it.
pub(super) fn copy_rows(from: &mut dyn BackingStore, to: &mut dyn BackingStore) -> Result<(), EngineError> {
    const CHUNK: u64 = 1 << 16;
    let floats = from.layout().words();
    let mut data = Vec::new();
    for first in (0..from.rows()).step_by(CHUNK as usize) {
        let rows: Vec<u64> = (first..(first + CHUNK).min(from.rows())).collect();
        data.resize(rows.len() * floats, 0.0);
        from.read_rows(&rows, &mut data)?;
        to.write_rows(&rows, &data)?;
    }
    to.sync()
}

impl Checkpointer for SetupCheckpoints {
    /// [`SetupCheckpoints::commit`].
    fn checkpoint(&mut self, model: &Dlrm, table: &mut dyn Embeddings, done: &TrainedSteps) -> Result<(), CheckpointFailure> {
        Ok(self.commit(model, table, done)?)
    }
}
