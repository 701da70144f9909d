//! `patching`: extraction when early representations are patched in (the paper's §5.2), one
//! row per (record, source, positions, layer).

use super::table_row;

table_row! {
    /// Whether MHSA in block `layer` still extracts the target when the input of that block at
    /// `positions` is replaced by the same prompt's `hidden_states[source_hidden_state]`.
    pub struct PatchingRow in "patching" {
        /// The fact's `known_id`.
        pub id: i64,
        /// 0-based block whose input is patched and whose MHSA output is projected.
        pub layer: i32,
        /// Index into Hugging Face's `hidden_states` patched in (0 = the embeddings).
        pub source_hidden_state: i32,
        /// The positions patched.
        pub positions: String,
        /// 0-based rank of the target in the projection of the MHSA output.
        pub target_rank: i32,
        /// `target_rank == 0`.
        pub extracted: bool,
    }
}
