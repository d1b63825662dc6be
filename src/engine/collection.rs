//! A collection of embedding tables, each with its own rows, dim and pooling, looked up
//! and updated one step at a time: what TorchRec's `EmbeddingBagCollection` holds.
//! Tables of one dim, pooling and dtype form a [`TableGroup`], stored and tiered together as one
//! [`TieredTable`] (each table's rows after the rows of the tables before it), as
//! FBGEMM's table-batched embeddings group them: one store, one storage thread and one
//! cache per group, its tiers sized as a share of the group's rows. A group's features
//! are pooled together in one batch, so a row that two features share gets one update.
//! Batches can be announced ahead of the step that uses them
//! ([`TableCollection::announce`]), which starts their store reads and feeds the
//! lookahead policies, as the prefetch pipeline does for Strata's own trainer.
//! Checkpoints are the table files' own (flushed, a manifest committed by atomic rename,
//! a fresh undo journal), so a crashed run resumes at its last checkpoint. The config and
//! its checks are `collection/config.rs`; groups and their initial rows `collection/group.rs`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::flat::FlatTable;
use super::prefetch::LookaheadWindow;
use super::stats::EngineStats;
use super::storage::{roll_back, write_atomically, BackingStore, StorageError, TableFile};
use super::table::config::{TableConfig, TierConfig};
use super::table::TieredTable;
use super::{Buffer, EngineError, Optimizer, RowInit, RowLayout};

use self::config::{check, read_config};
pub use self::config::{CollectionConfig, EmbeddingTableConfig};
use self::group::GroupInit;
pub use self::group::TableGroup;

/// One feature's bags in a step: `values` (rows of its table), `offsets` (one more than
/// the bags: bag `b` is `values[offsets[b]..offsets[b + 1]]`) and `weights` (one per
/// value, or empty).
#[derive(Clone, Copy, Debug)]
pub struct FeatureBags<'a> {
    pub values: &'a [i64],
    pub offsets: &'a [i64],
    pub weights: &'a [f32],
}

/// One feature's gradients of its pooled bags in a step: bag `b`'s `dim` values at
/// `values[b * stride..][..dim]`, so a feature's gradient can be read where it lies, as
/// rows of a tensor of its own (`stride` = dim) or of a view into a wider one.
#[derive(Clone, Copy, Debug)]
pub struct FeatureGrads<'a> {
    pub values: &'a [f32],
    pub stride: usize,
}

/// Anything a collection refuses or fails with, naming the feature, or the table group
/// whose tiered table failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("collection config: {0}")]
    Config(String),
    #[error("feature `{feature}`: {what}")]
    Feature { feature: String, what: String },
    #[error("table group `{group}`: {source}")]
    Group { group: String, source: EngineError },
    #[error("{0}")]
    Step(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The manifest of a collection's committed checkpoint, `table_dir/collection.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    checkpoint: u64,
    tables: Vec<EmbeddingTableConfig>,
    optimizer: Optimizer,
    seed: u64,
}

const MANIFEST: &str = "collection.json";

struct Member {
    group: TableGroup,
    table: TieredTable,
    window: LookaheadWindow,
    /// Stream position of the next batch's first lookup.
    next_start: u64,
    /// This step's batch, between its lookup and its gradients.
    current: Option<Batch>,
}

impl Member {
    fn fail(&self, source: EngineError) -> CollectionError {
        CollectionError::Group { group: self.group.name.clone(), source }
    }
}

/// Tables of their own shapes, tiered in groups, used one step at a time: `announce`
/// (any number of steps ahead), `lookup`, `apply_gradients`.
pub struct TableCollection {
    config: CollectionConfig,
    /// One per group.
    members: Vec<Member>,
    /// The first of each table's features among a step's features.
    first_features: Vec<usize>,
    /// The bags of each feature in the step looked up for training, until its gradients.
    step_bags: Vec<usize>,
    /// Each bag's gradient, for one group's update (empty between updates).
    bag_refs: Vec<&'static [f32]>,
    /// Steps announced and not yet looked up.
    announced: usize,
    /// The number of the last checkpoint taken (or resumed from).
    last_checkpoint: Option<u64>,
}

impl TableCollection {
    /// Builds every group: its store (a fresh table file in `table_dir`, or in memory)
    /// holding its tables' initial rows, and its tiers.
    pub fn new(config: &CollectionConfig) -> Result<TableCollection, CollectionError> {
        check(config)?;
        if let Some(dir) = &config.table_dir {
            std::fs::create_dir_all(dir).map_err(|e| CollectionError::Config(format!("{}: {e}", dir.display())))?;
            // The tables are created afresh: an earlier collection's checkpoint here no
            // longer describes them, and a resume must not find it.
            let manifest = dir.join(MANIFEST);
            match std::fs::remove_file(&manifest) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CollectionError::Config(format!("{}: removing an earlier checkpoint: {e}", manifest.display())));
                }
                _ => {}
            }
        }
        Self::build(config, |group, layout| {
            let init = GroupInit {
                tables: group
                    .tables
                    .iter()
                    .zip(&group.first_rows)
                    .map(|(&t, &first)| {
                        let seed = crate::hash::mix64(config.seed ^ crate::hash::mix64(t as u64));
                        (first, RowInit::Uniform { seed, scale: config.tables[t].init_scale })
                    })
                    .collect(),
            };
            Ok(match &config.table_dir {
                Some(dir) => {
                    let path = table_path(dir, &group.name);
                    drop(TableFile::create(&path, group.rows, layout, init)?);
                    Box::new(TableFile::open_with(&path, read_config(config))?)
                }
                None => Box::new(FlatTable::new(group.rows, layout, init)),
            })
        })
    }

    /// Opens the collection of `config.table_dir` at its last committed checkpoint (each
    /// table file rolled back to it by its undo journal); returns it and the
    /// checkpoint's number. The config's tables and optimizer must be the checkpoint's.
    pub fn resume(config: &CollectionConfig) -> Result<(TableCollection, u64), CollectionError> {
        check(config)?;
        let dir = config.table_dir.as_ref().ok_or_else(|| CollectionError::Config("resuming needs table_dir".into()))?;
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| CollectionError::Config(format!("{}: {e}", path.display())))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| CollectionError::Config(format!("{}: {e}", path.display())))?;
        for (was, now) in manifest.tables.iter().zip(&config.tables) {
            if was.name == now.name && was.dtype != now.dtype {
                let (path, name) = (path.display(), &now.name);
                return Err(CollectionError::Config(format!(
                    "{path}: table `{name}` was checkpointed as {} rows, the config asks for {}",
                    was.dtype, now.dtype
                )));
            }
        }
        if manifest.tables != config.tables || manifest.optimizer != config.optimizer || manifest.seed != config.seed {
            return Err(CollectionError::Config(format!("{}: the checkpoint is of other tables, optimizer or seed", path.display())));
        }
        let mut collection = Self::build(config, |group, _| {
            let path = table_path(dir, &group.name);
            roll_back(&path, manifest.checkpoint)?;
            Ok(Box::new(TableFile::open_with(&path, read_config(config))?))
        })?;
        collection.last_checkpoint = Some(manifest.checkpoint);
        Ok((collection, manifest.checkpoint))
    }

    /// The groups' tiers around the stores `open` gives (group, layout).
    fn build(
        config: &CollectionConfig,
        open: impl Fn(&TableGroup, RowLayout) -> Result<Box<dyn BackingStore>, StorageError>,
    ) -> Result<TableCollection, CollectionError> {
        let mut members = Vec::new();
        for group in TableGroup::of(&config.tables) {
            let in_group = |source: EngineError| CollectionError::Group { group: group.name.clone(), source };
            let layout = RowLayout::new(group.dim, &config.optimizer).with_dtype(group.dtype);
            let store = open(&group, layout).map_err(|e| in_group(e.into()))?;
            if store.rows() != group.rows || store.layout() != layout {
                let what = format!(
                    "{} holds {} rows of {}, the group `{}` needs {} of {layout}",
                    store.describe(),
                    store.rows(),
                    store.layout(),
                    group.name,
                    group.rows
                );
                return Err(CollectionError::Config(what));
            }
            let share = |fraction: f64| (group.rows as f64 * fraction).ceil() as usize;
            let table_config = TableConfig {
                device: TierConfig::rows(share(config.device), config.device_policy.clone()),
                device_backend: config.device_backend,
                host: TierConfig::rows(share(config.host), config.host_policy.clone()),
                hierarchy: config.hierarchy,
                optimizer: config.optimizer,
                pooling: group.pooling,
                write_buffer_rows: share(config.write_buffer),
                rounding: config.rounding,
            };
            let table = TieredTable::new(&table_config, store).map_err(in_group)?;
            members.push(Member { group, table, window: LookaheadWindow::default(), next_start: 0, current: None });
        }
        let first_features = config
            .tables
            .iter()
            .scan(0, |first, table| {
                let at = *first;
                *first += table.features.len();
                Some(at)
            })
            .collect();
        Ok(TableCollection {
            config: config.clone(),
            members,
            first_features,
            step_bags: Vec::new(),
            bag_refs: Vec::new(),
            announced: 0,
            last_checkpoint: None,
        })
    }

    /// Takes checkpoint `checkpoint` (numbers rise): every table's dirty rows written
    /// down and synced, the manifest committed by atomic rename, then each table file's
    /// undo journal restarted for it. Between a lookup and its gradients it is refused.
    pub fn checkpoint(&mut self, checkpoint: u64) -> Result<(), CollectionError> {
        let dir = self
            .config
            .table_dir
            .clone()
            .ok_or_else(|| CollectionError::Config("checkpoints need table_dir (the tables' files)".into()))?;
        if self.members.iter().any(|m| m.current.is_some()) {
            return Err(CollectionError::Step("checkpoint between a lookup and its gradients".into()));
        }
        if let Some(last) = self.last_checkpoint.filter(|&last| checkpoint <= last) {
            return Err(CollectionError::Step(format!("checkpoint {checkpoint}: checkpoint numbers must rise (the last was {last})")));
        }
        self.flush()?;
        let manifest =
            Manifest { checkpoint, tables: self.config.tables.clone(), optimizer: self.config.optimizer, seed: self.config.seed };
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| CollectionError::Config(e.to_string()))?;
        write_atomically(&dir.join(MANIFEST), text.as_bytes())?;
        for member in &mut self.members {
            member.table.protect_checkpoint(checkpoint).map_err(|e| member.fail(e))?;
        }
        self.last_checkpoint = Some(checkpoint);
        Ok(())
    }

    pub fn tables(&self) -> &[EmbeddingTableConfig] {
        &self.config.tables
    }

    /// The groups, in the order of their outputs and gradients.
    pub fn groups(&self) -> impl Iterator<Item = &TableGroup> {
        self.members.iter().map(|m| &m.group)
    }

    /// Steps announced ahead and not yet looked up.
    pub fn announced(&self) -> usize {
        self.announced
    }

    /// Announces a future step (`features` in the order of the tables' features, all
    /// tables'): its batches enter each group's lookahead window, which fills in next
    /// accesses for the lookahead policies, and their rows' store reads start.
    pub fn announce(&mut self, features: &[FeatureBags]) -> Result<(), CollectionError> {
        let batches = self.batches(features)?;
        for (member, mut batch) in self.members.iter_mut().zip(batches) {
            batch.start = member.next_start;
            member.next_start += batch.ids.len() as u64;
            let batch = member.window.push(batch);
            member.table.prefetch(batch).map_err(|e| member.fail(e))?;
        }
        self.announced += 1;
        Ok(())
    }

    /// Withdraws every step announced and not yet looked up (a read-ahead loop left
    /// early): their read-ahead is dropped and the next lookup is not checked against
    /// them. Returns how many there were.
    pub fn withdraw_announced(&mut self) -> Result<usize, CollectionError> {
        for member in &mut self.members {
            for batch in member.window.clear() {
                member.table.cancel_prefetch(&batch).map_err(|e| member.fail(e))?;
            }
        }
        Ok(std::mem::take(&mut self.announced))
    }

    /// Pools the step's bags: group `g`'s bags (see [`TableGroup`]) into `outs[g]`
    /// (`bags * dim` values). If steps were announced, `features`
    /// must be the oldest of them. `for_training`: the step's gradients follow
    /// ([`TableCollection::apply_gradients`]) before the next lookup; otherwise (serving,
    /// evaluation) none may. Nothing is placed or read unless every feature is valid.
    pub fn lookup(&mut self, features: &[FeatureBags], outs: &mut [&mut [f32]], for_training: bool) -> Result<(), CollectionError> {
        if self.members.iter().any(|m| m.current.is_some()) {
            return Err(CollectionError::Step("lookup called twice without apply_gradients in between".into()));
        }
        let batches = self.batches(features)?;
        if outs.len() != self.members.len() {
            return Err(CollectionError::Step(format!("{} output buffers for {} table groups", outs.len(), self.members.len())));
        }
        self.check_output_lengths(&batches, outs.iter().map(|out| out.len()))?;
        let announced = self.announced > 0;
        if announced {
            for (member, batch) in self.members.iter().zip(&batches) {
                let front = member.window.front().ok_or_else(|| CollectionError::Step("announced step missing".into()))?;
                if front.ids != batch.ids || front.bag_offsets != batch.bag_offsets || front.weights != batch.weights {
                    return Err(CollectionError::Step(format!(
                        "table group `{}`: the step differs from the oldest announced one (steps must be looked up in the order they were announced)",
                        member.group.name
                    )));
                }
            }
            self.announced -= 1;
        }
        for ((member, mut batch), out) in self.members.iter_mut().zip(batches).zip(outs.iter_mut()) {
            if announced {
                batch = member.window.pop().unwrap_or_else(|| unreachable!("checked above"));
            } else {
                batch.start = member.next_start;
                member.next_start += batch.ids.len() as u64;
            }
            member.table.lookup(&batch, out).map_err(|e| member.fail(e))?;
            member.current = for_training.then_some(batch);
        }
        self.step_bags.clear();
        self.step_bags.extend(features.iter().map(|f| f.offsets.len() - 1));
        Ok(())
    }

    /// Applies the gradients of the last lookup's pooled outputs (`grads`, one per
    /// feature in the order of the tables' features, each read in place) to exactly that
    /// step's rows, in whichever tier holds each, with the collection's optimizer.
    pub fn apply_gradients(&mut self, grads: &[FeatureGrads]) -> Result<(), CollectionError> {
        if self.members.iter().any(|m| m.current.is_none()) {
            return Err(CollectionError::Step("apply_gradients without a lookup before it".into()));
        }
        if grads.len() != self.step_bags.len() {
            return Err(CollectionError::Step(format!(
                "{} gradients given, the tables have {} features",
                grads.len(),
                self.step_bags.len()
            )));
        }
        // Every feature's buffer is checked before any group moves.
        for (t, table) in self.config.tables.iter().enumerate() {
            for (k, name) in table.features.iter().enumerate() {
                let f = self.first_features[t] + k;
                let (grad, bags) = (grads[f], self.step_bags[f]);
                let needs = if bags == 0 { 0 } else { (bags - 1) * grad.stride + table.dim };
                if grad.values.len() < needs || (bags > 1 && grad.stride < table.dim) {
                    let what = format!(
                        "the gradient holds {} values at a stride of {}; its {bags} bags of dim {} need {needs} at a stride of at least {}",
                        grad.values.len(),
                        grad.stride,
                        table.dim,
                        table.dim
                    );
                    return Err(CollectionError::Feature { feature: name.clone(), what });
                }
            }
        }
        for member in &mut self.members {
            let dim = member.group.dim;
            let mut refs = super::pool::reuse_refs(std::mem::take(&mut self.bag_refs));
            for &t in &member.group.tables {
                let features = self.first_features[t]..self.first_features[t] + self.config.tables[t].features.len();
                for (grad, &bags) in grads[features.clone()].iter().zip(&self.step_bags[features]) {
                    refs.extend((0..bags).map(|b| &grad.values[b * grad.stride..][..dim]));
                }
            }
            let batch = member.current.take().unwrap_or_else(|| unreachable!("checked above"));
            let applied = member.table.apply_bag_gradients(&batch, &refs);
            self.bag_refs = super::pool::reuse_refs(refs);
            applied.map_err(|e| member.fail(e))?;
        }
        Ok(())
    }

    /// Writes every dirty row down to the tables' stores and makes it durable.
    pub fn flush(&mut self) -> Result<(), CollectionError> {
        for member in &mut self.members {
            member.table.flush().map_err(|e| member.fail(e))?;
        }
        Ok(())
    }

    /// Every row of table `t` (values and optimizer state), as training has left it.
    pub fn rows_of(&mut self, t: usize) -> Result<FlatTable, CollectionError> {
        const CHUNK: u64 = 1 << 16;
        let spec = self.config.tables.get(t).ok_or_else(|| CollectionError::Step(format!("no table {t}")))?;
        let rows = spec.rows;
        let (member, first) = self
            .members
            .iter_mut()
            .find_map(|m| {
                let first = m.group.tables.iter().zip(&m.group.first_rows).find(|&(&k, _)| k == t).map(|(_, &first)| first);
                first.map(|first| (m, first))
            })
            .unwrap_or_else(|| unreachable!("every table is in a group"));
        let layout = member.table.layout();
        let mut flat = FlatTable::new(rows, layout, RowInit::Zeros);
        for start in (0..rows).step_by(CHUNK as usize) {
            let staged =
                member.table.read_rows((first + start..first + (start + CHUNK).min(rows)).collect()).map_err(|e| member.fail(e))?;
            for (&row, values) in staged.rows.iter().zip(staged.data.chunks_exact(layout.words())) {
                flat.row_mut(row - first).copy_from_slice(values);
            }
        }
        Ok(flat)
    }

    /// Each group's statistics, by group.
    pub fn stats(&self) -> Vec<(&TableGroup, EngineStats)> {
        self.members.iter().map(|m| (&m.group, m.table.stats())).collect()
    }

    /// Checks, before any group moves, that each group's output buffer (`lengths`, one
    /// per group) holds `bags * dim` values for its batch, as its own lookup would.
    fn check_output_lengths(&self, batches: &[Batch], lengths: impl Iterator<Item = usize>) -> Result<(), CollectionError> {
        for ((member, batch), got) in self.members.iter().zip(batches).zip(lengths) {
            let needs = batch.bags() * member.group.dim;
            if got != needs {
                return Err(member.fail(EngineError::Length { what: Buffer::LookupOutput, got, needs }));
            }
        }
        Ok(())
    }

    /// One batch per group from the step's features, every value checked against its
    /// table's rows, every offset and weight count checked.
    fn batches(&self, features: &[FeatureBags]) -> Result<Vec<Batch>, CollectionError> {
        let names: usize = self.config.tables.iter().map(|t| t.features.len()).sum();
        if features.len() != names {
            return Err(CollectionError::Step(format!("{} features given, the tables have {names}", features.len())));
        }
        let mut batches = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let mut batch = Batch::new(Vec::new(), vec![0], 0);
            let table_features = |t: usize| &features[self.first_features[t]..][..self.config.tables[t].features.len()];
            let weighted = member.group.tables.iter().any(|&t| table_features(t).iter().any(|f| !f.weights.is_empty()));
            for (&t, &first_row) in member.group.tables.iter().zip(&member.group.first_rows) {
                let table = &self.config.tables[t];
                for (name, bags) in table.features.iter().zip(table_features(t)) {
                    add_feature(&mut batch, bags, name, table.rows, first_row, weighted)?;
                }
            }
            batch.next_access = vec![strata_policies::NEVER; batch.ids.len()];
            batches.push(batch);
        }
        Ok(batches)
    }
}

/// Appends one feature's bags to its group's batch, checking them against its table's
/// `rows`, which start at `first_row` in the group (`weighted`: the group is weighted
/// this step, so a feature without weights weighs 1 per value).
fn add_feature(
    batch: &mut Batch,
    bags: &FeatureBags,
    name: &str,
    rows: u64,
    first_row: u64,
    weighted: bool,
) -> Result<(), CollectionError> {
    let fail = |what: String| CollectionError::Feature { feature: name.to_string(), what };
    let offsets = bags.offsets;
    if offsets.first() != Some(&0) {
        return Err(fail("offsets must start at 0".into()));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(fail(format!("offsets must not decrease (offset {} is {}, after {})", i + 1, offsets[i + 1], offsets[i])));
    }
    let last = offsets[offsets.len() - 1];
    if last != bags.values.len() as i64 {
        return Err(fail(format!("the last offset is {last}, but there are {} values", bags.values.len())));
    }
    if !bags.weights.is_empty() && bags.weights.len() != bags.values.len() {
        return Err(fail(format!("{} weights for {} values", bags.weights.len(), bags.values.len())));
    }
    if let Some((i, &v)) = bags.values.iter().enumerate().find(|&(_, &v)| v < 0 || v as u64 >= rows) {
        return Err(fail(format!("value {i} is {v}, out of range for a table of {rows} rows")));
    }
    let base = batch.ids.len();
    batch.ids.extend(bags.values.iter().map(|&v| first_row + v as u64));
    batch.bag_offsets.extend(offsets[1..].iter().map(|&o| base + o as usize));
    if weighted {
        match bags.weights.is_empty() {
            true => batch.weights.resize(batch.ids.len(), 1.0),
            false => batch.weights.extend_from_slice(bags.weights),
        }
    }
    Ok(())
}

/// The file of table group `name` in `dir`.
pub fn table_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.strata"))
}

mod config;
mod group;
#[cfg(test)]
mod tests;
