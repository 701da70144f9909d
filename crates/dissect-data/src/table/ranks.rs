//! `ranks`: the target's rank in the subject's representation and in the MHSA output at the
//! last position, per block (the paper's link between enrichment and extraction).

use super::table_row;

table_row! {
    /// The target's 0-based ranks after block `layer`.
    pub struct RanksRow in "ranks" {
        /// The fact's `known_id`.
        pub id: i64,
        /// Block ℓ (0-based).
        pub layer: i32,
        /// Rank in the projection of `hidden_states[ℓ + 1]` at the last subject token.
        pub subject_last_rank: i32,
        /// Rank in the projection of block ℓ's MHSA output at the last position.
        pub attn_last_rank: i32,
    }
}
