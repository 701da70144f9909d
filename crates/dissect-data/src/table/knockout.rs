//! `knockout`: attention knockout (the paper's §3), one row per (record, positions, layer).

use super::table_row;

table_row! {
    /// The target's probability at the last position when the attention edges from `positions`
    /// to the last position are blocked in a window of blocks centred on `layer`.
    pub struct KnockoutRow in "knockout" {
        /// The fact's `known_id`.
        pub id: i64,
        /// Centre of the knocked-out window (0-based block).
        pub layer: i32,
        /// The positions whose edges to the last position are blocked.
        pub positions: String,
        /// Blocks in the window (the paper's k).
        pub window: i32,
        /// The model's own top-1 token on the clean run.
        pub target_id: i32,
        /// p(target) on the clean run.
        pub p_base: f32,
        /// p(target) with the edges blocked.
        pub p_new: f32,
        /// `100 · (p_new − p_base) / p_base`.
        pub pct_change: f32,
    }
}
