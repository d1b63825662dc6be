//! Table groups: the tables of one dim, pooling and dtype that a collection stores and
//! tiers as one table, and the initial rows of such a group.

use super::EmbeddingTableConfig;
use crate::engine::pool::Pooling;
use crate::engine::{Dtype, InitRows, RowInit, RowLayout};

/// Tables of one dim, pooling and dtype, stored and tiered as one table: table `tables[k]` of
/// the config holds the group's rows `first_rows[k]..first_rows[k] + its rows`. A step's
/// pooled output (and its gradient) for the group is every bag of its tables' features,
/// table after table in the config's order and each table's features in its order,
/// `dim` values a bag.
#[derive(Clone, Debug, PartialEq)]
pub struct TableGroup {
    /// `dim<dim>-<pooling>` (then `-<dtype>` unless f32), also the name of its table
    /// file.
    pub name: String,
    pub dim: usize,
    pub pooling: Pooling,
    pub dtype: Dtype,
    pub tables: Vec<usize>,
    pub first_rows: Vec<u64>,
    pub rows: u64,
}

impl TableGroup {
    /// The groups of `tables`, in the order of their first tables.
    pub fn of(tables: &[EmbeddingTableConfig]) -> Vec<TableGroup> {
        let mut groups: Vec<TableGroup> = Vec::new();
        for (t, table) in tables.iter().enumerate() {
            let group = match groups.iter_mut().position(|g| (g.dim, g.pooling, g.dtype) == (table.dim, table.pooling, table.dtype)) {
                Some(g) => &mut groups[g],
                None => {
                    let mut name = format!("dim{}-{}", table.dim, table.pooling.name());
                    if table.dtype != Dtype::F32 {
                        name = format!("{name}-{}", table.dtype);
                    }
                    groups.push(TableGroup {
                        name,
                        dim: table.dim,
                        pooling: table.pooling,
                        dtype: table.dtype,
                        tables: Vec::new(),
                        first_rows: Vec::new(),
                        rows: 0,
                    });
                    groups.last_mut().unwrap_or_else(|| unreachable!("pushed"))
                }
            };
            group.tables.push(t);
            group.first_rows.push(group.rows);
            group.rows += table.rows;
        }
        groups
    }
}

/// The initial rows of a group: each table's own rows, as if it were stored alone
/// (uniform from a seed of its own, at its own scale).
pub(super) struct GroupInit {
    /// Each table's first row in the group and its rows' initialisation.
    pub(super) tables: Vec<(u64, RowInit)>,
}

impl InitRows for GroupInit {
    fn fill(&self, index: u64, layout: RowLayout, row: &mut [f32]) {
        let k = self.tables.partition_point(|&(first, _)| first <= index) - 1;
        let (first, init) = self.tables[k];
        init.fill(index - first, layout, row);
    }
}
