//! `sublayer_knockout`: the attributes rate at the last subject position when MHSA or MLP
//! sublayers of early blocks are knocked out (the paper's §4.2).

use super::table_row;

table_row! {
    /// One knocked-out range of blocks `start_layer..end_layer`, or the no-intervention row
    /// (`sublayer` and `mode` `none`, both layers null).
    pub struct SublayerKnockoutRow in "sublayer_knockout" {
        /// The fact's `known_id`.
        pub id: i64,
        /// First knocked-out block (0-based); null for the no-intervention row.
        pub start_layer: Option<i32>,
        /// One past the last knocked-out block; null for the no-intervention row.
        pub end_layer: Option<i32>,
        /// `attn`, `mlp` or `none`.
        pub sublayer: String,
        /// How the sublayer is knocked out (`notebook` or `zero`) or `none`.
        pub mode: String,
        /// Index into Hugging Face's `hidden_states` that is read (R + 1).
        pub read_hidden_state: i32,
        /// Attributes rate at the last subject position, in percent.
        pub rate_pct: f32,
    }
}
