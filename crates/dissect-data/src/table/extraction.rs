//! `extraction`: attribute extraction (the paper's §5), one row per (record, sublayer,
//! positions, layer).

use super::table_row;

table_row! {
    /// Whether a sublayer's output at the last position, projected to the vocabulary, has the
    /// target as its top token.
    pub struct ExtractionRow in "extraction" {
        /// The fact's `known_id`.
        pub id: i64,
        /// 0-based block whose sublayer output is projected.
        pub layer: i32,
        /// `attn` (MHSA) or `mlp`.
        pub sublayer: String,
        /// `none` for the clean run; else the positions whose edges to the last position were
        /// blocked in this block.
        pub positions: String,
        /// 0-based rank of the target in the projection.
        pub target_rank: i32,
        /// The projection's top token.
        pub top1_id: i32,
        /// `target_rank == 0`: the sublayer extracts the attribute.
        pub extracted: bool,
    }
}
