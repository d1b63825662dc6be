//! What the training and serving loops look up and update ([`Embeddings`]): one tiered
//! table holding every table's rows, or a [`GroupedTable`], tables of several widths
//! grouped by dim as the collection groups them, each group one [`TieredTable`] (its
//! tables' rows one after another). A grouped table splits each batch of every table's
//! bags (sample after sample, a sample's bags table after table, rows numbered across
//! all tables) into its groups' batches, and lays their pooled outputs side by side
//! again: each sample's values table after table, each table at its own width. With
//! one group, the batch goes to its table as it is.

use super::batch::Batch;
use super::collection::TableGroup;
use super::stats::EngineStats;
use super::table::TieredTable;
use super::{Buffer, EngineError};

/// The tables a model looks up, as the training and serving loops use them.
pub trait Embeddings {
    /// Values of `batch`'s pooled output (and of its gradient).
    fn output_len(&self, batch: &Batch) -> Result<usize, EngineError>;
    /// Pools the bags of `batch` into `out` (`output_len` values), placing its rows first.
    fn lookup(&mut self, batch: &Batch, out: &mut [f32]) -> Result<(), EngineError>;
    /// Applies the gradients of the last lookup's pooled outputs (laid out as `out` was)
    /// to exactly its rows, in whichever tier holds each.
    fn apply_gradients(&mut self, batch: &Batch, grads: &[f32]) -> Result<(), EngineError>;
    /// Starts reading the rows of a future batch that no memory tier holds.
    fn prefetch(&mut self, batch: &Batch) -> Result<(), EngineError>;
    /// The tiered tables, one per group.
    fn parts(&self) -> Vec<&TieredTable>;
    fn parts_mut(&mut self) -> Vec<&mut TieredTable>;

    /// Writes every dirty row down to the stores and makes it durable.
    fn flush(&mut self) -> Result<(), EngineError> {
        self.parts_mut().into_iter().try_for_each(TieredTable::flush)
    }

    /// Every group's counters, added.
    fn stats(&self) -> EngineStats {
        let parts = self.parts();
        let first = parts[0].stats();
        parts[1..].iter().fold(first, |sum, part| sum.plus(&part.stats()))
    }

    /// Seconds waited for rows from the stores.
    fn stall_seconds(&self) -> f64 {
        self.parts().iter().map(|part| part.stall_seconds()).sum()
    }

    /// Rows read from the stores so far.
    fn store_rows_read(&self) -> u64 {
        self.parts().iter().map(|part| part.store_bytes_read() / (part.layout().words() as u64 * 4)).sum()
    }

    /// The one tiered table (publishing versions and following them need one).
    fn only(&mut self) -> Result<&mut TieredTable, EngineError> {
        let mut parts = self.parts_mut();
        match parts.len() {
            1 => Ok(parts.remove(0)),
            n => Err(EngineError::Groups(format!("{n} of them (tables of several dims): publishing versions needs one"))),
        }
    }
}

impl Embeddings for TieredTable {
    fn output_len(&self, batch: &Batch) -> Result<usize, EngineError> {
        Ok(batch.bags() * self.layout().dim)
    }

    fn lookup(&mut self, batch: &Batch, out: &mut [f32]) -> Result<(), EngineError> {
        TieredTable::lookup(self, batch, out)
    }

    fn apply_gradients(&mut self, batch: &Batch, grads: &[f32]) -> Result<(), EngineError> {
        TieredTable::apply_gradients(self, batch, grads)
    }

    fn prefetch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        TieredTable::prefetch(self, batch)
    }

    fn parts(&self) -> Vec<&TieredTable> {
        vec![self]
    }

    fn parts_mut(&mut self) -> Vec<&mut TieredTable> {
        vec![self]
    }
}

/// One group and its tiered table.
struct Member {
    group: TableGroup,
    table: TieredTable,
}

/// Where one table's bags go: its group and its place among the group's tables, its
/// rows in the batch's numbering and in its group's, and where its values start in a
/// sample's pooled output.
#[derive(Clone, Copy, Debug)]
struct Place {
    group: usize,
    /// The table's bag among a sample's bags in its group.
    slot: usize,
    first_row: u64,
    rows: u64,
    group_first_row: u64,
    offset: usize,
    dim: usize,
}

/// Tables of several widths, grouped by dim, used as one table by the training and
/// serving loops (see the module's documentation).
pub struct GroupedTable {
    members: Vec<Member>,
    /// One per table, in a sample's order.
    places: Vec<Place>,
    /// Pooled values per sample.
    width: usize,
    /// The groups' batches of the last lookup, for its gradients.
    current: Vec<Batch>,
    /// Each group's pooled output of a lookup, kept for the next.
    pooled: Vec<Vec<f32>>,
}

impl GroupedTable {
    /// The tables of `groups` (as [`TableGroup::of`] forms them, each with its tiered
    /// table holding the group's rows), their rows numbered in the tables' order.
    pub fn new(groups: Vec<(TableGroup, TieredTable)>) -> Result<GroupedTable, EngineError> {
        let tables: usize = groups.iter().map(|(group, _)| group.tables.len()).sum();
        if tables == 0 {
            return Err(EngineError::Groups("no tables".into()));
        }
        let mut places: Vec<Option<Place>> = vec![None; tables];
        for (g, (group, table)) in groups.iter().enumerate() {
            if table.rows() != group.rows || table.layout().dim != group.dim {
                let what = format!(
                    "table group `{}` of {} rows of dim {} has a tiered table of {} rows of {}",
                    group.name,
                    group.rows,
                    group.dim,
                    table.rows(),
                    table.layout()
                );
                return Err(EngineError::Groups(what));
            }
            for (k, (&t, &first)) in group.tables.iter().zip(&group.first_rows).enumerate() {
                let next = group.first_rows.get(k + 1).copied().unwrap_or(group.rows);
                let place =
                    Place { group: g, slot: k, first_row: 0, rows: next - first, group_first_row: first, offset: 0, dim: group.dim };
                match places.get_mut(t) {
                    Some(slot @ None) => *slot = Some(place),
                    _ => return Err(EngineError::Groups(format!("table {t} is not in exactly one of the {tables} tables' groups"))),
                }
            }
        }
        let mut places: Vec<Place> = places.into_iter().map(|p| p.unwrap_or_else(|| unreachable!("every slot filled"))).collect();
        let (mut first_row, mut offset) = (0, 0);
        for place in &mut places {
            (place.first_row, place.offset) = (first_row, offset);
            first_row += place.rows;
            offset += place.dim;
        }
        let members = groups.into_iter().map(|(group, table)| Member { group, table }).collect();
        Ok(GroupedTable { members, places, width: offset, current: Vec::new(), pooled: Vec::new() })
    }

    /// The groups, in the order of [`Embeddings::parts`].
    pub fn groups(&self) -> impl Iterator<Item = &TableGroup> {
        self.members.iter().map(|m| &m.group)
    }

    /// The samples of `batch`, whose bags must be a whole number of samples.
    fn samples(&self, batch: &Batch) -> Result<usize, EngineError> {
        let tables = self.places.len();
        if !batch.bags().is_multiple_of(tables) {
            let what = format!("{} bags are not a whole number of samples of {tables} tables", batch.bags());
            return Err(EngineError::Samples { start: batch.start, what });
        }
        Ok(batch.bags() / tables)
    }

    /// Each group's batch of `batch`: its tables' bags in order, rows numbered in the
    /// group, with the batch's start, next accesses and weights. A row outside its
    /// bag's table is refused.
    fn split(&self, batch: &Batch) -> Result<Vec<Batch>, EngineError> {
        batch.validate()?;
        let samples = self.samples(batch)?;
        let mut split: Vec<Batch> =
            self.members.iter().map(|_| Batch { start: batch.start, bag_offsets: vec![0], ..Batch::default() }).collect();
        let weighted = !batch.weights.is_empty();
        for s in 0..samples {
            for (t, place) in self.places.iter().enumerate() {
                let bag = s * self.places.len() + t;
                let lookups = batch.bag_offsets[bag]..batch.bag_offsets[bag + 1];
                let part = &mut split[place.group];
                for i in lookups.clone() {
                    let local = batch.ids[i].wrapping_sub(place.first_row);
                    if local >= place.rows {
                        let (row, first, end) = (batch.ids[i], place.first_row, place.first_row + place.rows);
                        let what = format!("row {row} in a bag of table {t}, whose rows are {first}..{end}");
                        return Err(EngineError::Samples { start: batch.start, what });
                    }
                    part.ids.push(place.group_first_row + local);
                }
                part.next_access.extend_from_slice(&batch.next_access[lookups.clone()]);
                if weighted {
                    part.weights.extend_from_slice(&batch.weights[lookups]);
                }
                part.bag_offsets.push(part.ids.len());
            }
        }
        Ok(split)
    }
}

impl Embeddings for GroupedTable {
    fn output_len(&self, batch: &Batch) -> Result<usize, EngineError> {
        Ok(self.samples(batch)? * self.width)
    }

    fn lookup(&mut self, batch: &Batch, out: &mut [f32]) -> Result<(), EngineError> {
        if let [only] = &mut self.members[..] {
            return only.table.lookup(batch, out);
        }
        let needs = self.output_len(batch)?;
        if out.len() != needs {
            return Err(EngineError::Length { what: Buffer::LookupOutput, got: out.len(), needs });
        }
        let split = self.split(batch)?;
        self.pooled.resize_with(split.len(), Vec::new);
        for ((member, part), pooled) in self.members.iter_mut().zip(&split).zip(&mut self.pooled) {
            pooled.resize(part.bags() * member.group.dim, 0.0);
            member.table.lookup(part, pooled)?;
        }
        for (s, sample) in out.chunks_exact_mut(self.width).enumerate() {
            for place in &self.places {
                let bag = s * self.members[place.group].group.tables.len() + place.slot;
                sample[place.offset..][..place.dim].copy_from_slice(&self.pooled[place.group][bag * place.dim..][..place.dim]);
            }
        }
        self.current = split;
        Ok(())
    }

    fn apply_gradients(&mut self, batch: &Batch, grads: &[f32]) -> Result<(), EngineError> {
        if let [only] = &mut self.members[..] {
            return only.table.apply_gradients(batch, grads);
        }
        let needs = self.output_len(batch)?;
        if grads.len() != needs {
            return Err(EngineError::Length { what: Buffer::Gradients, got: grads.len(), needs });
        }
        let current = std::mem::take(&mut self.current);
        if current.first().map(|part| part.start) != Some(batch.start) {
            return Err(EngineError::Samples { start: batch.start, what: "gradients of a batch that was not the last looked up".into() });
        }
        for (g, (member, part)) in self.members.iter_mut().zip(&current).enumerate() {
            // The group's tables in order: their slots rise with the table index.
            let mut refs: Vec<&[f32]> = Vec::with_capacity(part.bags());
            for sample in grads.chunks_exact(self.width) {
                let of_group = self.places.iter().filter(|place| place.group == g);
                refs.extend(of_group.map(|place| &sample[place.offset..][..place.dim]));
            }
            member.table.apply_bag_gradients(part, &refs)?;
        }
        Ok(())
    }

    fn prefetch(&mut self, batch: &Batch) -> Result<(), EngineError> {
        if let [only] = &mut self.members[..] {
            return only.table.prefetch(batch);
        }
        let split = self.split(batch)?;
        self.members.iter_mut().zip(&split).try_for_each(|(member, part)| member.table.prefetch(part))
    }

    fn parts(&self) -> Vec<&TieredTable> {
        self.members.iter().map(|m| &m.table).collect()
    }

    fn parts_mut(&mut self) -> Vec<&mut TieredTable> {
        self.members.iter_mut().map(|m| &mut m.table).collect()
    }
}
