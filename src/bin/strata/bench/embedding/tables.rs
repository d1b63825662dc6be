//! The tables and batches of `strata bench embedding`: the MLPerf layout or a `--tables`
//! file of tables of their own shapes, and each step's bags split by table, as
//! FBGEMM's TBE and Strata's collection take them (and as the Python driver reads them).

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use strata::data::TableLayout;
use strata::engine::batch::Batch;
use strata::engine::collection::FeatureBags;
use strata::engine::pool::Pooling;
use strata::hash::mix64;

/// One table of the benchmark (after `count` is expanded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchTable {
    pub name: String,
    pub rows: u64,
    pub dim: usize,
    #[serde(default)]
    pub pooling: Pooling,
    /// Lookups per bag (every sample has one bag in every table).
    pub bag: usize,
    /// Whether its bags carry per-lookup weights (TorchRec's weighted EBC, FBGEMM's
    /// `per_sample_weights`).
    #[serde(default)]
    pub weighted: bool,
    /// This many tables of this shape, named `<name>0`, `<name>1`, ... (in the file).
    #[serde(default = "one", skip_serializing)]
    pub count: usize,
}

fn one() -> usize {
    1
}

/// A `--tables` file: `[[table]]` entries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    table: Vec<BenchTable>,
}

/// The tables of a `--tables` file, `count`s expanded, checked.
pub fn read_tables(path: &Path) -> Result<Vec<BenchTable>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let file: TablesFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut tables = Vec::new();
    for (i, t) in file.table.into_iter().enumerate() {
        if t.rows == 0 || t.dim == 0 || t.bag == 0 || t.count == 0 {
            bail!("{}: table {} (`{}`): rows, dim, bag and count must be at least 1", path.display(), i + 1, t.name);
        }
        for k in 0..t.count {
            let name = if t.count == 1 { t.name.clone() } else { format!("{}{k}", t.name) };
            tables.push(BenchTable { name, count: 1, ..t.clone() });
        }
    }
    if tables.is_empty() {
        bail!("{}: no [[table]]", path.display());
    }
    Ok(tables)
}

/// The MLPerf layout's tables, all of `dim` and summed.
pub fn layout_tables(layout: &TableLayout, dim: usize) -> Vec<BenchTable> {
    let shape = layout.rows().iter().zip(layout.multi_hot());
    let table = |(t, (&rows, &bag)): (usize, (&u64, &usize))| BenchTable {
        name: format!("t{t}"),
        rows,
        dim,
        pooling: Pooling::Sum,
        bag,
        weighted: false,
        count: 1,
    };
    shape.enumerate().map(table).collect()
}

/// The tables' rows and lookups per sample, for the generator.
pub fn layout_of(tables: &[BenchTable]) -> TableLayout {
    TableLayout::new(tables.iter().map(|t| t.rows).collect(), tables.iter().map(|t| t.bag).collect())
}

/// One table's bags in a step: `values` (rows within the table), `offsets` (one per bag
/// and one more, from 0) and `weights` (one per value, or none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableBags {
    pub values: Vec<i64>,
    pub offsets: Vec<i64>,
    pub weights: Vec<f32>,
}

impl TableBags {
    pub fn features(&self) -> FeatureBags<'_> {
        FeatureBags { values: &self.values, offsets: &self.offsets, weights: &self.weights }
    }
}

/// A generated batch (sample-major bags `s * tables + t` of global rows) split by table,
/// with weights in [0.5, 1.5) drawn from `seed` and the batch's number `k` for the
/// weighted tables.
pub fn split_by_table(
    batch: &Batch,
    tables: &[BenchTable],
    layout: &TableLayout,
    samples: usize,
    seed: u64,
    k: u64,
) -> Result<Vec<TableBags>> {
    if batch.bags() != samples * tables.len() {
        bail!("batch has {} bags, expected {samples} samples x {} tables", batch.bags(), tables.len());
    }
    let mut split = Vec::with_capacity(tables.len());
    for (t, table) in tables.iter().enumerate() {
        let base = layout.global_row(t, 0);
        let mut bags = TableBags { offsets: vec![0], ..TableBags::default() };
        for s in 0..samples {
            let bag = s * tables.len() + t;
            for &id in &batch.ids[batch.bag_offsets[bag]..batch.bag_offsets[bag + 1]] {
                let local = id.checked_sub(base).filter(|&r| r < table.rows);
                let Some(local) = local else { bail!("row {id} of bag {bag} is outside table {t}") };
                bags.values.push(local as i64);
            }
            bags.offsets.push(bags.values.len() as i64);
        }
        if table.weighted {
            let stream = mix64(seed ^ mix64(k) ^ mix64(t as u64 + 1));
            let weight = |i: usize| 0.5 + (mix64(stream ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32;
            bags.weights = (0..bags.values.len()).map(weight).collect();
        }
        split.push(bags);
    }
    Ok(split)
}

/// Writes the batches for `benches/embedding_step.py --indices`: per batch, its
/// table-major offsets (`tables * samples + 1`, from 0) then its indices, little-endian
/// int64; and, when any table is weighted, `--weights`: one little-endian f32 per index
/// (1.0 in the unweighted tables).
pub fn write_batches(indices: &Path, weights: Option<&Path>, batches: &[Vec<TableBags>]) -> Result<()> {
    let create = |path: &Path| -> Result<std::io::BufWriter<std::fs::File>> {
        let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
        Ok(std::io::BufWriter::new(file))
    };
    let mut out = create(indices)?;
    let mut weights_out = weights.map(create).transpose()?;
    for batch in batches {
        let mut base = 0i64;
        out.write_all(&0i64.to_le_bytes())?;
        for bags in batch {
            for &o in &bags.offsets[1..] {
                out.write_all(&(base + o).to_le_bytes())?;
            }
            base += bags.values.len() as i64;
        }
        for bags in batch {
            for v in &bags.values {
                out.write_all(&v.to_le_bytes())?;
            }
            if let Some(w) = weights_out.as_mut() {
                if bags.weights.is_empty() {
                    for _ in &bags.values {
                        w.write_all(&1f32.to_le_bytes())?;
                    }
                } else {
                    for x in &bags.weights {
                        w.write_all(&x.to_le_bytes())?;
                    }
                }
            }
        }
    }
    out.flush().with_context(|| format!("{}", indices.display()))?;
    if let (Some(w), Some(path)) = (weights_out.as_mut(), weights) {
        w.flush().with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: u64, bag: usize, weighted: bool) -> BenchTable {
        BenchTable { name: "t".into(), rows, dim: 4, pooling: Pooling::Sum, bag, weighted, count: 1 }
    }

    #[test]
    fn split_keeps_every_lookup_in_its_table() {
        // Two tables of 3 and 5 rows, bags of 2 and 1, two samples (sample-major).
        let tables = [table(3, 2, false), table(5, 1, true)];
        let batch = Batch::new(vec![0, 2, 3 + 4, 1, 1, 3], vec![0, 2, 3, 5, 6], 0);
        let split = split_by_table(&batch, &tables, &layout_of(&tables), 2, 7, 0).unwrap();
        assert_eq!(split[0].values, vec![0, 2, 1, 1]);
        assert_eq!(split[0].offsets, vec![0, 2, 4]);
        assert!(split[0].weights.is_empty());
        assert_eq!(split[1].values, vec![4, 0]);
        assert_eq!(split[1].offsets, vec![0, 1, 2]);
        assert_eq!(split[1].weights.len(), 2);
        assert!(split[1].weights.iter().all(|w| (0.5..1.5).contains(w)));
        // The same seed and batch give the same weights; another batch others.
        assert_eq!(split_by_table(&batch, &tables, &layout_of(&tables), 2, 7, 0).unwrap()[1].weights, split[1].weights);
        assert_ne!(split_by_table(&batch, &tables, &layout_of(&tables), 2, 7, 1).unwrap()[1].weights, split[1].weights);
    }

    #[test]
    fn split_rejects_rows_of_another_table() {
        let tables = [table(3, 1, false), table(5, 1, false)];
        // Bag 0 (table 0) holds global row 4, which is table 1's.
        let batch = Batch::new(vec![4, 3], vec![0, 1, 2], 0);
        assert!(split_by_table(&batch, &tables, &layout_of(&tables), 1, 0, 0).is_err());
        assert!(split_by_table(&batch, &tables, &layout_of(&tables), 2, 0, 0).is_err());
    }

    #[test]
    fn batches_file_is_table_major_with_global_offsets() {
        let tables = [table(3, 2, false), table(5, 1, true)];
        let batch = Batch::new(vec![0, 2, 3 + 4, 1, 1, 3], vec![0, 2, 3, 5, 6], 0);
        let split = split_by_table(&batch, &tables, &layout_of(&tables), 2, 7, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (indices, weights) = (dir.path().join("i.bin"), dir.path().join("w.bin"));
        write_batches(&indices, Some(&weights), std::slice::from_ref(&split)).unwrap();
        let ints: Vec<i64> = std::fs::read(&indices).unwrap().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(ints, vec![0, 2, 4, 5, 6, 0, 2, 1, 1, 4, 0]);
        let floats: Vec<f32> = std::fs::read(&weights).unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(floats[..4], [1.0; 4]);
        assert_eq!(floats[4..], split[1].weights[..]);
    }

    #[test]
    fn tables_file_expands_counts_and_refuses_empty_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[[table]]\nname = \"a\"\nrows = 10\ndim = 8\nbag = 2\ncount = 3\n[[table]]\nname = \"w\"\nrows = 5\ndim = 4\nbag = 1\npooling = \"mean\"\nweighted = true\n").unwrap();
        let tables = read_tables(&path).unwrap();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a0", "a1", "a2", "w"]);
        assert_eq!((tables[3].pooling, tables[3].weighted, tables[3].dim), (Pooling::Mean, true, 4));
        std::fs::write(&path, "[[table]]\nname = \"a\"\nrows = 0\ndim = 8\nbag = 2\n").unwrap();
        let err = read_tables(&path).unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("table 1 (`a`)"), "{err}");
        std::fs::write(&path, "[[table]]\nname = \"a\"\nrows = 3\ndim = 8\nbag = 2\nspeed = 1\n").unwrap();
        assert!(read_tables(&path).unwrap_err().to_string().contains("speed"));
    }
}
